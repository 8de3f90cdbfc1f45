"""`metajudge run CONFIG --dry-run`: projected requests, calls and tokens at the paper's scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from metajudge.cli import main
from metajudge.config import load_config
from metajudge.costs import project_costs

ROOT = Path(__file__).resolve().parents[2]


def test_paper_scale_projection() -> None:
    table = project_costs(load_config(ROOT / "configs" / "paper.yaml"))
    rows = table.set_index(["iteration", "stage"])
    # P = 5,000 prompts, K = 7, N = 11 (SPEC §1-§5)
    assert rows.loc[(1, "generate"), "requests"] == 35_000
    assert rows.loc[(1, "judge"), "requests"] == 385_000
    assert rows.loc[(1, "meta-judge"), "requests"] == 5_000 * 11 * 10
    assert (3, "meta-judge") not in rows.index  # iterations 3-4 train on actor pairs only
    assert rows.loc[(1, "generate"), "generated_tokens_max"] == 35_000 * 2048
    assert rows.loc[(1, "train"), "optimizer_steps_max"] == 313  # 10,000 pairs / 32
    assert rows.loc[(4, "train"), "dpo_pairs_max"] == 5_000


def test_dry_run_prints_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(ROOT / "configs" / "paper.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "meta-judge" in out and "total over all iterations" in out
    assert list(tmp_path.iterdir()) == []
