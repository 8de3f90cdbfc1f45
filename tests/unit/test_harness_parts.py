"""The harnesses' pure parts: positions, verdict mapping, leaderboards, configs, bundled data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from metajudge.cli import main
from metajudge.config import BackendConfig
from metajudge.evaluation import alpaca_eval, arena_hard
from metajudge.evaluation.benchmarks import (
    alpaca_eval_items,
    arena_hard_questions,
    oasst_ranked_prompts,
)
from metajudge.evaluation.config import EvalConfig, default_name
from metajudge.evaluation.pairwise import hashed_position
from metajudge.evaluation.records import PairwiseGame
from metajudge.records import BackendFingerprint, Provenance, SamplingParams
from metajudge.store import ConfigMismatchError, Store

DATA = Path(__file__).parents[1] / "data"


def test_bundled_benchmarks_are_complete() -> None:
    items = alpaca_eval_items()
    assert len(items) == 805 and [i.index for i in items] == list(range(805))
    assert all(i.reference for i in items)
    questions = arena_hard_questions()
    assert len(questions) == 500 and len({q.uid for q in questions}) == 500
    assert all(q.baseline_answer for q in questions)
    prompts = oasst_ranked_prompts()
    assert (len(prompts), sum(len(p.replies) for p in prompts)) == (186, 541)


def test_hashed_positions_are_balanced_and_stable() -> None:
    positions = [hashed_position(i.instruction, i.instruction[::-1], i.reference)
                 for i in alpaca_eval_items()]
    share = positions.count("A") / len(positions)
    assert 0.45 < share < 0.55
    again = [hashed_position(i.instruction, i.instruction[::-1], i.reference)
             for i in alpaca_eval_items()]
    assert positions == again


def game(verdict: str | None, position: str, item: str = "q1", number: int = 1) -> PairwiseGame:
    provenance = Provenance(backend=BackendFingerprint(kind="test", model="judge"),
                            params=SamplingParams(), seed=0, sample_index=0)
    return PairwiseGame(id=f"{item}@{number}", item_id=item, model="mine", baseline="gpt-4-0314",
                        model_position=position, verdict=verdict,  # type: ignore[arg-type]
                        verdict_source="parsed" if verdict else "failed", judgment="",
                        prompt_tokens=1, completion_tokens=1, provenance=provenance)


@pytest.mark.parametrize("verdict, position, outcome", [
    ("A>>B", "A", 1.0), ("A>B", "B", 0.0), ("A=B", "A", 0.5), ("B>A", "B", 1.0),
    ("B>>A", "A", 0.0), (None, "A", None)])
def test_model_outcome(verdict: str | None, position: str, outcome: float | None) -> None:
    assert game(verdict, position).model_outcome() == outcome


def test_arena_hard_games_become_weighted_battles() -> None:
    from metajudge.evaluation.benchmarks import arena_hard_questions

    q1, q2 = (q.uid for q in arena_hard_questions()[:2])
    games = [game("A>>B", "B", q1, number=1), game("B>A", "A", q1, number=2),
             game(None, "B", q2, 1), game("A=B", "A", q2, 2)]
    mine = {q1: arena_hard.conv_metadata("mine **bold**"), q2: arena_hard.conv_metadata("mine")}
    battles = arena_hard.games_to_battles(games, mine)
    # the tool's battles: the baseline is model_a; game 1 (baseline shown first) A>>B is three
    # baseline wins; game 2 (the model shown first) B>A is a baseline win; a tie; no verdict: none
    assert battles[["question_id", "model_a", "model_b", "winner"]].values.tolist() == [
        [q1, "gpt-4-0314", "mine", "model_a"]] * 4 + [[q2, "gpt-4-0314", "mine", "tie"]]
    assert battles.iloc[0]["conv_metadata"]["bold_count_b"] == {"**": 1, "__": 0}
    metrics = arena_hard.battle_metrics(battles, "mine", bootstrap_rounds=0)
    # win rate against the baseline: 0.5 of 5 rows
    assert metrics["score"] == pytest.approx(100 * 0.5 / 5)


def test_leaderboards_add_and_replace_rows(tmp_path: Path) -> None:
    path = tmp_path / "leaderboard.csv"
    row = {"length_controlled_winrate": 10.0, "win_rate": 8.0, "n_total": 40}
    alpaca_eval.append_leaderboard_row(path, "a", row)
    alpaca_eval.append_leaderboard_row(path, "b", {**row, "length_controlled_winrate": 20.0})
    board = alpaca_eval.append_leaderboard_row(path, "a", {**row, "win_rate": 9.0})
    assert list(board.index) == ["b", "a"] and board.loc["a", "win_rate"] == 9.0
    assert list(pd.read_csv(path, index_col=0).columns[:3]) == [
        "length_controlled_winrate", "win_rate", "n_total"]
    arena = tmp_path / "arena.csv"
    arena_hard.append_leaderboard_row(arena, "m", {"score": 30.0, "lower": 25.0, "upper": 36.0})
    table = arena_hard.append_leaderboard_row(arena, "m", {"score": 31.0, "lower": 26.0,
                                                           "upper": 35.0})
    assert table.to_dict("records")[0]["CI"] == "(-5.0, +4.0)" and len(table) == 1


def test_an_eval_directory_refuses_other_settings(tmp_path: Path) -> None:
    config = EvalConfig(harness="alpaca-eval", name="m", model=BackendConfig())
    Store.open(tmp_path / "e", config).close()
    Store.open(tmp_path / "e", config).close()  # same settings: reopened
    other = config.model_copy(update={"seed": 1})
    with pytest.raises(ConfigMismatchError, match="seed"):
        Store.open(tmp_path / "e", other)


def test_default_names(tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny" / "iter_02" / "checkpoint"
    checkpoint.mkdir(parents=True)
    assert default_name(str(checkpoint)) == "tiny-iter_02"
    assert default_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"


def test_annotations_made_elsewhere(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    annotations = pd.read_csv(DATA / "alpaca_eval_annotations.csv.gz")
    expected = pd.read_csv(DATA / "alpaca_eval_expected.csv").set_index("model")
    phi = annotations[annotations["model"] == "phi-2"].drop(columns="model")
    path = tmp_path / "annotations.json"
    phi.to_json(path, orient="records")
    board = tmp_path / "board.csv"
    assert main(["eval", "alpaca-eval", "--annotations", str(path), "--bootstrap", "0",
                 "--leaderboard", str(board)]) == 0
    row = pd.read_csv(board, index_col=0).loc["phi-2"]
    assert row["length_controlled_winrate"] == pytest.approx(
        expected.loc["phi-2", "recomputed_lc_ae066_sklearn191"], abs=1e-6)


def test_eval_set_overrides_are_checked() -> None:
    from metajudge.cli.evaluate import build_config

    class Args:
        harness, model, model_backend, model_url = "judge", "smollm2-135m-instruct", \
            "transformers", None
        name, seed = None, 3
        overrides = ["judging.max_tokens=64", "model.transformers.batch_size=4"]

    config = build_config(Args())  # type: ignore[arg-type]
    assert config.judging.max_tokens == 64 and config.model.transformers.batch_size == 4
    Args.overrides = ["judging.max_token=64"]
    with pytest.raises(ValueError, match="Did you mean 'judging.max_tokens'"):
        build_config(Args())  # type: ignore[arg-type]
