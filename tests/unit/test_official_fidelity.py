"""Numbers and files against the official tools (issue 17): arena-hard-auto v0.1's show_result.py
and alpaca-eval's LC under both scikit-learn fold schemes, on committed fixtures."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from metajudge.analysis.bradley_terry import bradley_terry_scores, expand_weights
from metajudge.analysis.length_controlled import folds, length_controlled_winrate
from metajudge.evaluation.benchmarks import arena_hard_baseline
from metajudge.evaluation.records import PairwiseGame
from metajudge.records import BackendFingerprint, Provenance, SamplingParams

DATA = Path(__file__).parents[1] / "data"


@pytest.mark.parametrize("row", pd.read_csv(DATA / "arena_hard_official_v0.1.csv")
                         .to_dict("records"), ids=lambda r: f"{r['model']}-{r['run']}")
def test_scores_and_intervals_are_the_official_tools(row: dict) -> None:
    battles = pd.read_json(DATA / row["battles"], lines=True)
    table = bradley_terry_scores(battles, "gpt-4-0314", bootstrap_rounds=100, seed=42)
    prefix = "style_" if row["run"] == "style_control" else ""
    ours = table.loc[row["model"]]
    assert round(ours[f"{prefix}score"], 2) == pytest.approx(row["score"], abs=1e-9)
    assert round(ours[f"{prefix}lower"], 2) == pytest.approx(row["rating_q025"], abs=1e-9)
    assert round(ours[f"{prefix}upper"], 2) == pytest.approx(row["rating_q975"], abs=1e-9)


def test_a_constant_style_feature_is_dropped_and_named(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    battles = pd.read_json(DATA / "arena_hard_battles_seed.jsonl", lines=True)
    with caplog.at_level(logging.WARNING):
        table = bradley_terry_scores(battles, "gpt-4-0314", bootstrap_rounds=0)
    assert "bold_count (always 0) constant in every battle" in caplog.text
    assert pd.notna(table.loc["smollm2-135m-instruct", "style_score"])


def test_every_style_feature_constant_leaves_the_style_score_out_unless_asked_for(
        caplog: pytest.LogCaptureFixture) -> None:
    # the two games of one question: every feature (lengths, counts) is the same in both
    battles = pd.read_json(DATA / "arena_hard_battles_seed.jsonl", lines=True).head(2)
    with caplog.at_level(logging.WARNING):
        table = bradley_terry_scores(battles, "gpt-4-0314", bootstrap_rounds=0)
    assert "no style-controlled score" in caplog.text
    assert pd.notna(table.loc["smollm2-135m-instruct", "score"])
    assert pd.isna(table.loc["smollm2-135m-instruct", "style_score"])
    with pytest.raises(ValueError, match="every style feature is constant"):
        bradley_terry_scores(battles, "gpt-4-0314", bootstrap_rounds=0, style_control=True)


def test_weighted_rows_resample_like_the_tools_expanded_rows() -> None:
    rows = pd.read_json(DATA / "arena_hard_battles_tiny_iter_02.jsonl", lines=True)
    # fold runs of identical consecutive rows back into weighted rows
    key = rows[["question_id", "winner"]].astype(str).agg("|".join, axis=1)
    runs = (key != key.shift()).cumsum()
    weighted = rows.groupby(runs, sort=False).first().assign(
        weight=rows.groupby(runs, sort=False).size().to_numpy())
    assert len(weighted) < len(rows) and (weighted["weight"] == 3).any()
    assert expand_weights(weighted)[["question_id", "winner"]].equals(
        rows[["question_id", "winner"]])
    a = bradley_terry_scores(rows, "gpt-4-0314", bootstrap_rounds=20, seed=42)
    b = bradley_terry_scores(weighted, "gpt-4-0314", bootstrap_rounds=20, seed=42)
    pd.testing.assert_frame_equal(a, b)


def test_games_become_the_tools_battles() -> None:
    from metajudge.evaluation.arena_hard import games_to_battles

    provenance = Provenance(backend=BackendFingerprint(kind="test", model="j"),
                            params=SamplingParams(), seed=0, sample_index=0)
    uid = arena_hard_baseline()[0]["question_id"]

    def game(number: int, verdict: str) -> PairwiseGame:
        return PairwiseGame(id=f"{uid}@{number}", item_id=uid, model="mine",
                            baseline="gpt-4-0314", model_position="B" if number == 1 else "A",
                            verdict=verdict, verdict_source="parsed", judgment="",
                            prompt_tokens=1, completion_tokens=1, provenance=provenance)

    metadata = {uid: {"token_len": 5, "header_count": {"h1": 1}, "list_count": {"ordered": 0},
                      "bold_count": {"**": 2}}}
    battles = games_to_battles([game(2, "A>B"), game(1, "A>>B")], metadata)
    # game 1 (baseline shown A): A>>B, the baseline wins, three rows; game 2 (model shown A):
    # A>B, the model wins; the baseline is always model_a, game 1 first
    assert battles[["model_a", "model_b", "winner"]].values.tolist() == [
        ["gpt-4-0314", "mine", "model_a"]] * 3 + [["gpt-4-0314", "mine", "model_b"]]
    meta = battles.iloc[0]["conv_metadata"]
    assert meta["sum_assistant_a_tokens"] == arena_hard_baseline()[0]["conv_metadata"][
        "token_len"] and meta["sum_assistant_b_tokens"] == 5 and meta["bold_count_b"] == {"**": 2}


def test_token_counts_are_cl100k_as_the_tool_counts_them() -> None:
    from metajudge.evaluation.arena_hard import count_tokens

    counted = [(count_tokens(r["choices"][0]["turns"][0]["content"]),
                r["choices"][0]["turns"][0]["token_len"]) for r in arena_hard_baseline()]
    assert len(counted) == 500 and all(ours == theirs for ours, theirs in counted)
    reference = Path(__file__).parents[3] / "shared" / "reference" / "arena_hard_auto_v0.1"
    if (reference / "gpt-4-0314.jsonl.gz").is_file():  # the bundled copy is the tool's
        with gzip.open(reference / "gpt-4-0314.jsonl.gz", "rt") as fh:
            theirs = [json.loads(line) for line in fh]
        assert [r["choices"] for r in theirs] == [r["choices"] for r in arena_hard_baseline()]


def test_lc_under_both_fold_schemes() -> None:
    annotations = pd.read_csv(DATA / "alpaca_eval_smollm2_seed_annotations.csv")
    new = length_controlled_winrate(annotations)
    old = length_controlled_winrate(annotations, fold_scheme="sklearn<1.6")
    assert new.fold_scheme == "sklearn>=1.6" and old.fold_scheme == "sklearn<1.6"
    assert new.length_controlled_winrate == pytest.approx(77.62921324669799, abs=1e-9)
    assert old.length_controlled_winrate == pytest.approx(76.30772161841385, abs=1e-9)
    assert round(old.cv_C, 2) == 2.78 and round(new.cv_C, 2) == 21.54
    assert folds(5).tolist() == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="recorded for 1611..2415"):
        folds(20, "sklearn<1.6")
    with pytest.raises(ValueError, match="fold_scheme"):
        length_controlled_winrate(annotations, fold_scheme="sklearn 1.4")


def test_alpaca_eval_annotator_configs_resolve() -> None:
    pytest.importorskip("alpaca_eval", reason="needs metajudge[alpaca-eval]")
    from metajudge.evaluation.alpaca_eval_official import annotator_config

    path, name, settings = annotator_config("weighted_alpaca_eval_gpt4_turbo")
    assert name == "weighted_alpaca_eval_gpt4_turbo" and path.name == "configs.yaml"
    assert settings["fn_completion_parser"] == "logprob_parser"
    assert (path.parent.parent / settings["prompt_template"]).is_file()
    with pytest.raises(FileNotFoundError, match="evaluators_configs"):
        annotator_config("no_such_annotator")
