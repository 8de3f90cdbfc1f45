"""A summary row of an iteration whose records are stale says so, and reaches no tracker (found
by the run-invariants property test, tests/property: after ``train --iteration 1 --redo`` gave
another M_2, ``run --iterations 1`` rewrote summary.csv with iteration 2's row counted from the
old M_2's records, as current as iteration 1's)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from metajudge.cli import main
from metajudge.stages.summary import run_table
from metajudge.tracking import numeric_rows

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
SETS = ["--set", "backend.kind=instant_backend:InstantWeightsBackend",
        "--set", "backend.model=llama3-mini", "--set", "runner.retry_delay_s=0"]


def _checkpoint(folder: Path, weights: bytes) -> None:
    from metajudge.training.checkpoint import weights_digest

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "metajudge.json").write_text(json.dumps({"weights_sha256":
                                                       weights_digest(folder)}))


def test_a_row_of_stale_records_is_marked_and_left_out_of_the_trackers(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["generate", "--config", str(ROOT / "configs" / "tiny.yaml"), "--out", str(run),
                 "--limit", "2", "-k", "2", "--no-progress", *SETS]) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 0
    _checkpoint(run / "iter_01" / "checkpoint", b"weights of M_2")
    for stage in ("generate", "judge"):
        args = ["--out", str(run)] if stage == "generate" else [str(run)]
        assert main([stage, *args, "--iteration", "2", "--no-progress"]) == 0
    table = run_table(run)
    assert list(table["stale"]) == ["", ""]  # every row current

    _checkpoint(run / "iter_01" / "checkpoint", b"weights of another M_2")  # retrained
    table = run_table(run)
    assert table.loc[1, "stale"] == ""
    assert "responses.jsonl" in table.loc[2, "stale"]  # made by the old M_2
    assert table.loc[2, "responses"] == 4  # the row still shows what the files hold
    assert set(numeric_rows(table)) == {1}  # and no tracker gets it as a current iteration
