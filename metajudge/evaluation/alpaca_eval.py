"""AlpacaEval 2: answers to the 805 instructions, pairwise annotation against gpt4_1106_preview,
win rate and length-controlled win rate (SPEC §7, §8).

Files in the output directory, in AlpacaEval's own layouts:

* ``model_outputs.json`` — ``[{instruction, output, generator, dataset}]``
* ``annotations.json`` — ``[{instruction, output_1 (reference), generator_1, dataset,
  output_2 (model), generator_2, annotator, preference, raw_completion, …}]``; ``preference`` is
  2 when the model wins, 1 when the reference wins, 1.5 for a tie, null without a verdict. The
  extra fields say where the model's answer was shown (``model_position``, from a content hash),
  the verdict and where it came from.
* ``metrics.json`` and one row in the leaderboard CSV, with AlpacaEval's column names.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from metajudge.analysis.length_controlled import FOLD_SCHEMES, length_controlled_winrate
from metajudge.backends.base import Backend
from metajudge.evaluation.benchmarks import ALPACA_EVAL_BASELINE, alpaca_eval_items
from metajudge.evaluation.generation import generate_outputs
from metajudge.evaluation.pairwise import Game, hashed_position, judge_games
from metajudge.jsonl import write_atomic
from metajudge.store import Store

#: AlpacaEval's leaderboard columns, in its order
LEADERBOARD_COLUMNS = ["length_controlled_winrate", "win_rate", "standard_error", "n_wins",
                       "n_wins_base", "n_draws", "n_total", "discrete_win_rate", "mode",
                       "avg_length", "lc_standard_error"]


def item_id(index: int) -> str:
    return f"alpaca_eval/{index}"


def run_alpaca_eval(
    store: Store, model: Backend, judge: Backend, *, limit: int | None = None,
    bootstrap_rounds: int = 1000, progress: bool = True, fold_scheme: str = "sklearn>=1.6",
) -> dict[str, object]:
    """Answer, annotate and score; returns the metrics (also in ``metrics.json``)."""
    config = store.config
    items = alpaca_eval_items()[:limit]
    outputs = generate_outputs(store, model, [(item_id(i.index), i.instruction)
                                                for i in items], progress=progress)
    answered = [i for i in items if item_id(i.index) in outputs]
    store.write_json("model_outputs.json", [
        {"instruction": i.instruction, "output": outputs[item_id(i.index)].output,
         "generator": config.name, "dataset": i.dataset} for i in answered])
    games = [Game(id=item_id(i.index), item_id=item_id(i.index), instruction=i.instruction,
                  model_answer=outputs[item_id(i.index)].output, baseline_answer=i.reference,
                  model_position=hashed_position(i.instruction, outputs[item_id(i.index)].output,
                                                 i.reference),
                  model=config.name, baseline=ALPACA_EVAL_BASELINE) for i in answered]
    judged = judge_games(store, judge, games, name="annotations", progress=progress)
    annotator = f"{judge.fingerprint.model}/{_template_ref(judged)}"
    rows = []
    for i in answered:
        game = judged.get(item_id(i.index))
        outcome = game.model_outcome() if game else None
        rows.append({
            "instruction": i.instruction, "output_1": i.reference,
            "generator_1": ALPACA_EVAL_BASELINE, "dataset": i.dataset,
            "output_2": outputs[item_id(i.index)].output, "generator_2": config.name,
            "annotator": annotator,
            "preference": None if outcome is None else 1.0 + outcome,
            "raw_completion": game.judgment if game else None,
            "index": i.index,
            "model_position": game.model_position if game else None,
            "verdict": game.verdict if game else None,
            "verdict_source": game.verdict_source if game else "missing",
        })
    store.write_json("annotations.json", rows)
    metrics = annotation_metrics(pd.DataFrame(rows), bootstrap_rounds=bootstrap_rounds,
                                 seed=config.seed, fold_scheme=fold_scheme)
    metrics.update(annotator=annotator, items=len(items), answered=len(answered),
                   judged=len(judged))
    store.write_json("metrics.json", metrics)
    return metrics


def score_alpaca_eval(store: Store, *, limit: int | None = None, bootstrap_rounds: int = 1000,
                      fold_scheme: str = FOLD_SCHEMES[0]) -> dict[str, object]:
    """The metrics again from the annotations already in ``store`` (no model call):
    ``metajudge eval alpaca-eval --rescore``."""
    path = store.root / "annotations.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no annotations to score")
    frame = pd.read_json(path)
    if limit:
        frame = frame.iloc[:limit]
    previous = json.loads((store.root / "metrics.json").read_text()) if (
        store.root / "metrics.json").is_file() else {}
    metrics = annotation_metrics(frame, bootstrap_rounds=bootstrap_rounds,
                                 seed=store.config.seed, fold_scheme=fold_scheme)
    metrics.update({k: previous[k] for k in ("annotator", "items", "answered", "judged")
                    if k in previous})
    store.write_json("metrics.json", metrics)
    return metrics


def annotation_metrics(
    annotations: pd.DataFrame, *, bootstrap_rounds: int = 1000, seed: int = 0,
    fold_scheme: str = FOLD_SCHEMES[0],
) -> dict[str, object]:
    """AlpacaEval's leaderboard fields for one model's annotations, plus the LC interval, the
    fold scheme of the cross-validation, and the count of annotations without a verdict."""
    if annotations["preference"].notna().any():
        result = length_controlled_winrate(annotations.reset_index(drop=True),
                                           bootstrap_rounds=bootstrap_rounds, seed=seed,
                                           fold_scheme=fold_scheme)
        metrics: dict[str, object] = {
            key: value for key, value in result.as_dict().items()
            if key in LEADERBOARD_COLUMNS
            or key in ("lc_lower", "lc_upper", "cv_C", "fold_scheme")}
    else:  # no verdict at all: nothing to estimate, said so rather than a made-up number
        metrics = dict.fromkeys(LEADERBOARD_COLUMNS)
        metrics["n_total"] = 0
    metrics["mode"] = "metajudge"
    metrics["no_verdict"] = int(annotations["preference"].isna().sum())
    metrics["evaluated_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return metrics


def append_leaderboard_row(path: Path, name: str, metrics: dict[str, object]) -> pd.DataFrame:
    """Add (or replace) ``name``'s row in a leaderboard CSV with AlpacaEval's columns first."""
    board = pd.read_csv(path, index_col=0) if path.is_file() else pd.DataFrame()
    row = pd.DataFrame([metrics], index=[name])
    board = pd.concat([board.drop(index=name, errors="ignore"), row])
    extra = [c for c in board.columns if c not in LEADERBOARD_COLUMNS]
    board = board[[c for c in LEADERBOARD_COLUMNS if c in board.columns] + extra]
    board = board.sort_values("length_controlled_winrate", ascending=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, board.to_csv())
    return board


def metrics_from_file(frame: pd.DataFrame, *, bootstrap_rounds: int = 1000, seed: int = 0,
                      fold_scheme: str = FOLD_SCHEMES[0]) -> dict[str, dict[str, object]]:
    """Metrics per model (``generator_2``) of annotations made elsewhere, e.g. by the official
    ``alpaca_eval`` tool with a GPT-4 judge."""
    if "generator_2" not in frame.columns:
        frame = frame.assign(generator_2="model")
    return {str(model): annotation_metrics(part, bootstrap_rounds=bootstrap_rounds, seed=seed,
                                           fold_scheme=fold_scheme)
            for model, part in frame.groupby("generator_2", sort=False)}


def _template_ref(judged: dict) -> str:
    for game in judged.values():
        return str(game.provenance.template)
    return "pairwise"


__all__ = ["annotation_metrics", "append_leaderboard_row", "metrics_from_file",
           "run_alpaca_eval", "score_alpaca_eval"]
