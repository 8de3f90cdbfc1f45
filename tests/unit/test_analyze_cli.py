"""`metajudge analyze …` on files: the tables it prints and writes, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from metajudge.cli import main

DATA = Path(__file__).parents[1] / "data"


def test_lc_on_an_alpaca_eval_json_file(tmp_path: Path) -> None:
    annotations = pd.read_csv(DATA / "alpaca_eval_annotations.csv.gz")
    expected = pd.read_csv(DATA / "alpaca_eval_expected.csv").set_index("model")
    phi = annotations[annotations["model"] == "phi-2"].drop(columns="model")
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(phi.to_dict(orient="records")))  # alpaca_eval writes an array
    out = tmp_path / "leaderboard.csv"
    assert main(["analyze", "lc", str(path), "--out", str(out)]) == 0
    row = pd.read_csv(out).set_index("model").loc["phi-2"]
    assert row["length_controlled_winrate"] == pytest.approx(
        expected.loc["phi-2", "recomputed_lc_ae066_sklearn191"], abs=1e-6)
    assert row["win_rate"] == pytest.approx(expected.loc["phi-2", "win_rate"])


def test_bt_on_a_battles_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = ([{"model_a": "gpt-4-0314", "model_b": "mine", "winner": "model_b"}] * 3
            + [{"model_a": "mine", "model_b": "gpt-4-0314", "winner": "model_b", "weight": 3}]
            + [{"model_a": "gpt-4-0314", "model_b": "mine", "winner": "tie"}])
    path = tmp_path / "battles.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scores.csv"
    assert main(["analyze", "bt", str(path), "--baseline", "gpt-4-0314", "--bootstrap", "20",
                 "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index("model")
    assert table.loc["mine", "score"] == pytest.approx(100 * 3.5 / 7)


def test_style_and_pairwise_agreement(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "style.csv"
    assert main(["analyze", "style", str(DATA / "arena_hard_gpt-4-0314_answers.jsonl"),
                 "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 40
    assert main(["analyze", "agreement-pairwise", str(DATA / "pandalm_human_pairwise.jsonl"),
                 "--verdict", "gpt35_turbo", "--bootstrap", "50"]) == 0
    assert "0.6977" in capsys.readouterr().out


def test_a_bad_line_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "battles.jsonl"
    path.write_text('{"model_a": "x", "model_b": "y", "winner": "tie"}\n\n{"model_a": \n')
    assert main(["analyze", "bt", str(path), "--baseline", "x"]) == 2
    assert f"{path}, line 3: not valid JSON" in capsys.readouterr().err
    path.write_text('{"model_a": "x", "winner": "tie"}\n')
    assert main(["analyze", "bt", str(path), "--baseline", "x"]) == 2
    assert "field 'model_b': missing column" in capsys.readouterr().err


def test_bias_needs_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["analyze", "bias", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
