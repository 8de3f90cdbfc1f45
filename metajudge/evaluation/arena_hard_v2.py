"""Arena-Hard v2.0 (2025): answers to the 750 questions, two judged games per question against
the category's baseline, scores per category with style control, in the files arena-hard-auto's
own v2.0 ``show_result.py`` reads unchanged (SPEC §7, §9).

**Baselines** (the tool's ``JUDGE_SETTINGS``): o3-mini-2025-01-31 for the hard prompts (its
answers are carried, ``metajudge/data/PROVENANCE.md``); gemini-2.0-flash-001 for creative writing,
whose answers the user passes (``arena_hard_v2.baseline_answers``). Without them creative writing
is refused by name, unless ``arena_hard_v2.creative_writing_baseline`` names another baseline:
then every output names it, the judgment rows' category becomes
``creative_writing@<baseline>`` (so the official tool, which assumes gemini, refuses them instead
of printing them under gemini's name) and ``official_baseline`` is false.

**Judging** (``gen_judgment.py``): a system prompt per category (the hard prompts' asks the
judge to answer the question first, creative writing's does not) and the tool's user prompt;
game 1 shows the baseline as A, game 2 the model. The verdict is what the tool's patterns read
(the last ``[[…]]``, else the last ``[…]``, upper-cased), kept only if ``show_result.py`` scores
that label; no follow-up turn (v2.0 asks none). Where the backend scores labels, a game without
a verdict gets a forced read-out beside it (:class:`~metajudge.evaluation.records.ArenaHardV2Game`).

**Files** (under the output folder, as the tool lays them out; ``cd OUT && python
show_result.py -j JUDGE -c hard_prompt [-f length markdown]`` runs there):

* ``data/arena-hard-v2.0/question.jsonl``: the questions asked;
* ``data/arena-hard-v2.0/model_answer/<model>.jsonl``: ``uid, ans_id, model, messages``
  (the answer at ``messages[-1].content.answer``), ``tstamp``, ``metadata`` (``token_len`` in
  tiktoken's o200k_base through ``bpe-openai``, and the markdown counts, as
  ``add_markdown_info.py`` writes them), and the baselines' rows for those questions;
* ``data/arena-hard-v2.0/model_judgment/<judge>/<model>.jsonl``: ``uid, category, judge, model,
  baseline, games[{score, judgment{answer}, prompt}]`` per question; a game never judged is
  ``null`` and an unanswered question has two (the tool drops such rows and counts them);
* ``metrics.json``: per category (``coding``, ``math``, ``hard_prompt`` = both,
  ``creative_writing``) ``score``, ``lower``, ``upper`` (the tool's default, in percent, 90%
  interval) and ``style_score``, ``style_lower``, ``style_upper`` (``-f length markdown``),
  with the baseline, the counts and the bootstrap seed (:mod:`metajudge.analysis.arena_hard_v2`)
  and ``style_left_out`` (features constant over the battles, left out of the fit; the tool stops);
  beside them, never in them, ``score_with_readouts`` (and its interval): the plain score with
  the forced read-outs standing in for the games without a verdict.

``--limit N`` asks the first N questions of each subcategory (coding, math, creative writing).

**Per-category provenance**: ``v2_games``' settings record each category's baseline (model and
answers digest, :func:`baseline_settings`), so a category is added later with its baseline file
(the saved config's section is merged, :func:`merged_settings`) while a category with games
whose baseline changed is refused by name, when judging and when scoring.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import re
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from metajudge.analysis.arena_hard_v2 import (
    STYLE_FEATURES,
    battles_from_judgments,
    null_judgment,
    plain_scores,
    style_scores,
)
from metajudge.backends.base import Backend
from metajudge.evaluation.arena_hard import conv_metadata
from metajudge.evaluation.arena_hard_v2_prompts import (
    ANSWERS_FIRST,
    PROMPT_TEMPLATE,
    REGEX_PATTERNS,
    SCORED_LABELS,
    SYSTEM_PROMPTS,
    user_prompt,
)
from metajudge.evaluation.benchmarks import (
    ARENA_HARD_V2_BASELINES,
    ArenaHardV2Question,
    arena_hard_v2_o3_mini,
    arena_hard_v2_questions,
)
from metajudge.evaluation.config import ArenaHardV2Settings, default_name
from metajudge.evaluation.generation import generate_outputs
from metajudge.evaluation.records import ArenaHardV2Game
from metajudge.jsonl import write_atomic
from metajudge.judging.readout import CHOICE_LABELS
from metajudge.judging.scorers import FORCED_PREFILL
from metajudge.records import (
    Completion,
    GenerationRequest,
    LabelScores,
    Message,
    Provenance,
    SamplingParams,
    ScoreRequest,
)
from metajudge.seeds import derive_seed
from metajudge.stages.runner import Item, Result, StageRun, Step
from metajudge.store import Store, evaluation_file

BENCH = "arena-hard-v2.0"
ENCODING = "o200k_base"
GAMES = evaluation_file("v2_games")
#: score groups: the tool's categories, and the hard prompts' subcategories
GROUPS = ("coding", "math", "hard_prompt", "creative_writing")
CATEGORIES = ("hard_prompt", "creative_writing")


class BaselineMissing(ValueError):
    """A category's baseline answers are not available."""


def select_questions(categories: tuple[str, ...] = CATEGORIES, limit: int | None = None
                     ) -> list[ArenaHardV2Question]:
    """The questions of ``categories`` in the tool's order; with ``limit``, the first N of
    each subcategory."""
    taken: dict[str, int] = {}
    out = []
    for q in arena_hard_v2_questions():
        if q.category in categories and (limit is None or taken.get(q.subcategory, 0) < limit):
            taken[q.subcategory] = taken.get(q.subcategory, 0) + 1
            out.append(q)
    return out


def read_answer_file(path: str | Path) -> dict[str, dict]:
    """A v2.0 answer file (``.jsonl`` or ``.jsonl.gz``) by uid, checked; rows without
    ``metadata`` get it counted as ``add_markdown_info.py`` would."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"baseline answer file {path} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    rows: dict[str, dict] = {}
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answer = row["messages"][-1]["content"]["answer"]
                _ = row["uid"], row["model"]  # required fields
            except (json.JSONDecodeError, KeyError, IndexError, TypeError) as error:
                raise ValueError(f"{path}, line {number}: not a v2.0 answer row (uid, model, "
                                 f"messages[-1].content.answer): {error!r}") from error
            if not isinstance(answer, str):
                raise ValueError(f"{path}, line {number}: messages[-1].content.answer is "
                                 f"{type(answer).__name__}, not text")
            row.setdefault("metadata", conv_metadata(answer, ENCODING))
            rows[row["uid"]] = row
    models = {r["model"] for r in rows.values()}
    if len(models) != 1:
        raise ValueError(f"{path}: one model per answer file, found {sorted(models)}")
    return rows


def available_baselines(settings: ArenaHardV2Settings) -> dict[str, dict[str, dict]]:
    """Baseline model -> uid -> answer row: the carried o3-mini answers and the given files."""
    out = {ARENA_HARD_V2_BASELINES["hard_prompt"]: {r["uid"]: r for r in arena_hard_v2_o3_mini()}}
    for path in settings.baseline_answers:
        rows = read_answer_file(path)
        out[next(iter(rows.values()))["model"]] = rows
    return out


def resolve_baselines(settings: ArenaHardV2Settings, questions: list[ArenaHardV2Question]
                      ) -> dict[str, tuple[str, dict[str, dict]]]:
    """Category -> (baseline model, its answers) for the categories of ``questions``; refuses
    one whose baseline's answers are not given, naming the file to supply."""
    available = available_baselines(settings)
    wanted = {"hard_prompt": ARENA_HARD_V2_BASELINES["hard_prompt"],
              "creative_writing": settings.creative_writing_baseline}
    out = {}
    for category in dict.fromkeys(q.category for q in questions):
        name = wanted[category]
        if name not in available:
            official = ARENA_HARD_V2_BASELINES[category]
            raise BaselineMissing(
                f"Arena-Hard v2.0 {category} is judged against {name}, whose answers are not "
                f"here: supply its answer file (for the official baseline, arena-hard-auto's "
                f"data/{BENCH}/model_answer/{official}.jsonl) with --baseline-answers FILE, "
                f"or score it against another baseline, named in every output, with "
                f"--creative-writing-baseline {ARENA_HARD_V2_BASELINES['hard_prompt']}, or "
                f"leave it out with --categories hard_prompt")
        missing = [q.uid for q in questions if q.category == category
                   and q.uid not in available[name]]
        if missing:
            raise BaselineMissing(f"{name}'s answers lack {len(missing)} {category} "
                                  f"question(s), e.g. {missing[:3]}")
        out[category] = (name, available[name])
    return out


def baseline_settings(baselines: dict[str, tuple[str, dict[str, dict]]]
                      ) -> dict[str, dict[str, str]]:
    """Category -> what shapes its games: its baseline model and a digest of that model's
    answers to the category's questions."""
    out = {}
    for category, (name, rows) in sorted(baselines.items()):
        uids = {q.uid for q in select_questions((category,))}
        out[category] = {"model": name, "answers": _digest(*(
            f"{u}\x1f{r['messages'][-1]['content']['answer']}"
            for u, r in sorted(rows.items()) if u in uids))}
    return out


def games_baselines(store: Store, baselines: dict[str, tuple[str, dict[str, dict]]]
                    ) -> dict[str, dict[str, str]]:
    """The ``baselines`` of ``v2_games``' settings: the judged categories' own, checked by the
    stage runner against those their games were made with (a category's changed baseline is
    refused by name), and those recorded for the other categories that have games (kept as
    they were). A category without games has nothing its baseline shaped: its recorded entry
    first follows this run (added, replaced or dropped), so a category is added with its
    baseline file. (A file of the older layout, baselines by model, is compared as it is.)"""
    now = baseline_settings(baselines)
    saved = store.settings(GAMES)
    recorded = (saved or {}).get("baselines")
    if saved is None or not isinstance(recorded, dict) or not all(
            isinstance(v, dict) for v in recorded.values()):
        return now
    judged = {g.category for g in store.iter_records(GAMES)}
    kept = {c: v for c, v in recorded.items() if c in judged}
    rebased = {**kept, **{c: v for c, v in now.items() if c not in judged}}
    if rebased != recorded:
        write_atomic(store.settings_path(GAMES),
                     json.dumps({**saved, "baselines": rebased}, indent=2, sort_keys=True) + "\n")
    return {**kept, **now}


def check_games_baselines(store: Store, baselines: dict[str, tuple[str, dict[str, dict]]]
                          ) -> None:
    """Refuse to score a category whose games were judged against other baseline answers than
    those resolved now (another model, or an edited answer file)."""
    saved = (store.settings(GAMES) or {}).get("baselines") or {}
    judged = {g.category for g in store.iter_records(GAMES)}
    for category, now in baseline_settings(baselines).items():
        was = saved.get(category)
        if category in judged and isinstance(was, dict) and was != now:
            raise store.refuse(
                f"{store.path(GAMES)}: the {category} games were judged against {was['model']} "
                f"(answers {was['answers']}), not {now['model']} (answers {now['answers']}): "
                f"score with the baseline they were judged against, or judge them again "
                f"(--redo, or a new --out)")


def merged_settings(saved: ArenaHardV2Settings, given: ArenaHardV2Settings,
                    categories: tuple[str, ...]) -> ArenaHardV2Settings:
    """The section a rerun in the same folder saves: every baseline file given so far (the
    new ones last, so they win for their model), and creative writing's baseline from this
    run when it judges creative writing, else the saved one. The games' settings
    (:func:`games_baselines`) refuse a category whose baseline changed."""
    files = tuple(f for f in saved.baseline_answers if f not in given.baseline_answers)
    cw = (given if "creative_writing" in categories else saved).creative_writing_baseline
    return ArenaHardV2Settings(baseline_answers=files + given.baseline_answers,
                               creative_writing_baseline=cw)


def official_score(text: str) -> tuple[str | None, str | None]:
    """The verdict as ``gen_judgment.get_score`` reads it, kept if ``show_result.py`` scores
    that label; else None and why.

    >>> official_score("My final verdict is [[b>a]]. Final: [[A>>B]]")
    ('A>>B', None)
    >>> official_score("between [A] and [B]")
    (None, "label 'B' is not one show_result.py scores")
    """
    for pattern in REGEX_PATTERNS:
        matches = [m for m in re.findall(pattern, text.upper()) if m != ""]
        if matches:
            label = matches[-1].strip("\n")
            if label in SCORED_LABELS:
                return label, None
            return None, f"label {label!r} is not one show_result.py scores"
    return None, "no [[verdict]] label"


def judge_messages(question: ArenaHardV2Question, answer_a: str, answer_b: str
                   ) -> tuple[Message, ...]:
    return (Message(role="system", content=SYSTEM_PROMPTS[question.category]),
            Message(role="user", content=user_prompt(question.prompt, answer_a, answer_b)))


def judge_games(store: Store, judge: Backend, questions: list[ArenaHardV2Question],
                answers: dict[str, str], baselines: dict[str, tuple[str, dict[str, dict]]], *,
                progress: bool = True) -> dict[str, ArenaHardV2Game]:
    """Both games of every answered question, resumable on the stage runner."""
    config = store.config
    sampling = config.judging
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_tokens)
    readouts = sampling.forced_readout and judge.capabilities.label_scores
    run = StageRun(store, GAMES, judge, stage="arena-hard-v2.0 judge", iteration=None,
                   settings={"prompts": _digest(json.dumps(SYSTEM_PROMPTS, sort_keys=True),
                                                PROMPT_TEMPLATE, *REGEX_PATTERNS),
                             "baselines": games_baselines(store, baselines),
                             "params": params.model_dump(), "forced_readout": readouts,
                             "seed": config.seed},
                   runner=config.runner, progress=progress, unit="game")

    def start(q: ArenaHardV2Question, number: int) -> Step:
        name, rows = baselines[q.category]
        base = rows[q.uid]["messages"][-1]["content"]["answer"]
        a, b = (base, answers[q.uid]) if number == 1 else (answers[q.uid], base)
        game_id = f"{q.uid}@{number}"
        request = GenerationRequest(id=game_id, messages=judge_messages(q, a, b), params=params,
                                    seed=derive_seed(config.seed, "arena-hard-v2", game_id))
        provenance = Provenance(backend=judge.fingerprint, params=params, seed=request.seed,
                                sample_index=0, template=f"arena-hard-v2.0:{q.category}",
                                swapped=number == 1)

        def record(result: Completion, verdict: str | None, error: str | None,
                   probs: tuple[float, ...] | None = None) -> ArenaHardV2Game:
            forced = (None if probs is None or probs[0] == probs[1]
                      else "A>B" if probs[0] > probs[1] else "B>A")
            run.count("parsed" if verdict else "forced" if forced else "failed")
            return ArenaHardV2Game(
                id=game_id, item_id=q.uid, model=config.name, baseline=name,
                model_position="B" if number == 1 else "A", verdict=verdict,
                verdict_source="parsed" if verdict else "failed", parse_error=error,
                judgment=result.text, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, provenance=provenance,
                category=q.category, subcategory=q.subcategory, forced_verdict=forced,
                forced_probs=probs)

        def judged(result: Result) -> Any:
            if not isinstance(result, Completion):
                return run.failed(game_id, step, result)  # type: ignore[arg-type]
            verdict, error = official_score(result.text)
            if verdict is not None or not readouts:
                return record(result, verdict, error)
            readout = ScoreRequest(id=game_id, messages=request.messages,
                                   prefill=result.text + "\n" + FORCED_PREFILL,
                                   labels=CHOICE_LABELS)
            return Step(readout, lambda r: record(
                result, None, error, r.probs if isinstance(r, LabelScores) else None))

        step = Step(request, judged)
        return step

    answered = [q for q in questions if q.uid in answers]

    def items() -> Iterator[Item]:
        for q in answered:
            for number in (1, 2):
                yield Item(f"{q.uid}@{number}", partial(start, q, number))

    run.run(items, total=2 * len(answered), prompts=len(answered))
    wanted = {f"{q.uid}@{n}" for q in answered for n in (1, 2)}
    return {g.id: g for g in store.iter_records(GAMES) if g.id in wanted}


def run_arena_hard_v2(store: Store, model: Backend, judge: Backend, *,
                      categories: tuple[str, ...] = CATEGORIES, limit: int | None = None,
                      bootstrap_rounds: int = 100, progress: bool = True) -> dict[str, object]:
    """Answer, judge and score the questions of ``categories`` (the first ``limit`` of each
    subcategory); records of other categories already in ``store`` are kept and scored too."""
    settings = store.config.arena_hard_v2
    questions = select_questions(categories, limit)
    baselines = resolve_baselines(settings, questions)  # refuses before any model work
    outputs = generate_outputs(store, model, [(q.uid, q.prompt) for q in questions],
                               progress=progress)
    judge_games(store, judge, questions, {u: o.output for u, o in outputs.items()}, baselines,
                progress=progress)
    return score_arena_hard_v2(store, limit=limit, bootstrap_rounds=bootstrap_rounds)


def score_arena_hard_v2(store: Store, *, categories: tuple[str, ...] | None = None,
                        limit: int | None = None, bootstrap_rounds: int = 100
                        ) -> dict[str, object]:
    """The files and metrics from the answers and games in ``store`` (no model call), for
    ``categories`` (default: those with answers in ``store``)."""
    config = store.config
    settings = config.arena_hard_v2
    outputs = {o.id: o.output for o in store.iter_records(evaluation_file("outputs"))}
    if categories is None:
        categories = tuple(c for c in CATEGORIES if any(
            q.uid in outputs for q in select_questions((c,))))
    questions = select_questions(categories, limit)
    baselines = resolve_baselines(settings, questions)
    check_games_baselines(store, baselines)
    if not any(q.uid in outputs for q in questions):
        raise FileNotFoundError(f"{store.root}: no Arena-Hard v2.0 answers to score")
    games = {g.id: g for g in store.iter_records(GAMES)}
    judge_name = next((default_name(g.provenance.backend.model) for g in games.values()),
                      default_name(config.judge_backend.model))
    root = store.root / "data" / BENCH
    metadata = {u: conv_metadata(text, ENCODING) for u, text in outputs.items()}
    rows = judgment_rows(config.name, judge_name, questions, outputs, games, baselines)
    write_files(root, config.name, judge_name, questions, outputs, metadata, rows, baselines)
    groups = {}
    for group in GROUPS:
        chosen = [q for q in questions if group in (q.category, q.subcategory)]
        if chosen:
            groups[group] = group_metrics(group, chosen, rows, metadata, baselines,
                                              games, rounds=bootstrap_rounds, seed=config.seed)
    metrics: dict[str, object] = {
        "version": "2.0", "model": config.name, "judge": judge_name,
        "questions": len(questions), "answered": sum(q.uid in outputs for q in questions),
        "bootstrap_rounds": bootstrap_rounds, "bootstrap_seed": config.seed,
        "interval": "5th-95th bootstrap percentiles (the tool's 90% interval)",
        "token_encoding": ENCODING, "categories": groups}
    store.write_json("metrics.json", metrics)
    return metrics


def judgment_rows(name: str, judge_name: str, questions: list[ArenaHardV2Question],
                  outputs: dict[str, str], games: dict[str, ArenaHardV2Game],
                  baselines: dict[str, tuple[str, dict[str, dict]]]) -> list[dict]:
    """The judgment file's rows, one per question asked, in the tool's schema."""
    rows = []
    for q in questions:
        baseline, answers = baselines[q.category]
        pair: list[dict[str, Any] | None] = []
        for number in (1, 2):
            game = games.get(f"{q.uid}@{number}")
            if game is None or q.uid not in outputs:
                pair.append(None)  # never judged: null, as gen_judgment writes a failed call
                continue
            base = answers[q.uid]["messages"][-1]["content"]["answer"]
            a, b = (base, outputs[q.uid]) if number == 1 else (outputs[q.uid], base)
            pair.append({"score": game.verdict, "judgment": {"answer": game.judgment},
                         "prompt": [m.model_dump() for m in judge_messages(q, a, b)],
                         "verdict_source": game.verdict_source, "parse_error": game.parse_error,
                         "forced_verdict": game.forced_verdict,
                         "forced_probs": game.forced_probs})
        official = baseline == ARENA_HARD_V2_BASELINES[q.category]
        rows.append({"uid": q.uid,
                     "category": q.category if official else f"{q.category}@{baseline}",
                     "subcategory": q.subcategory, "judge": judge_name, "model": name,
                     "baseline": baseline, "games": pair})
    return rows


def write_files(root: Path, name: str, judge_name: str, questions: list[ArenaHardV2Question],
                outputs: dict[str, str], metadata: dict[str, dict], rows: list[dict],
                baselines: dict[str, tuple[str, dict[str, dict]]]) -> None:
    stamp = dt.datetime.now(dt.timezone.utc).timestamp()
    _write_jsonl(root / "question.jsonl", [
        {"uid": q.uid, "category": q.category, "subcategory": q.subcategory,
         "prompt": q.prompt} for q in questions])
    _write_jsonl(root / "model_answer" / f"{name}.jsonl", [
        {"uid": q.uid, "ans_id": f"{name}:{q.uid}", "model": name,
         "messages": [{"role": "user", "content": q.prompt},
                      {"role": "assistant", "content": {"answer": outputs[q.uid]}}],
         "tstamp": stamp, "metadata": metadata[q.uid]} for q in questions if q.uid in outputs])
    by_model: dict[str, list[dict]] = {}
    for q in questions:
        baseline, answers = baselines[q.category]
        by_model.setdefault(baseline, []).append(answers[q.uid])
    for baseline, answer_rows in by_model.items():
        _write_jsonl(root / "model_answer" / f"{baseline}.jsonl", answer_rows)
    _write_jsonl(root / "model_judgment" / judge_name / f"{name}.jsonl", rows)


def group_metrics(group: str, questions: list[ArenaHardV2Question], rows: list[dict],
                  metadata: dict[str, dict], baselines: dict[str, tuple[str, dict[str, dict]]],
                  games: dict[str, ArenaHardV2Game], *, rounds: int, seed: int
                  ) -> dict[str, object]:
    """One category's (or subcategory's) scores in percent, with its counts."""
    uids = {q.uid for q in questions}
    category = questions[0].category
    baseline, answers = baselines[category]
    mine = [r for r in rows if r["uid"] in uids]
    own = [g for g in games.values() if g.item_id in uids]
    out: dict[str, object] = {
        "baseline": baseline,
        "official_baseline": baseline == ARENA_HARD_V2_BASELINES[category],
        "judge_answers_first": category in ANSWERS_FIRST,
        "questions": len(questions), "null_judgments": sum(map(null_judgment, mine)),
        "games": len(own), "no_verdict": sum(g.verdict is None for g in own),
        "missing_games": sum(g is None for r in mine for g in r["games"]),
        "forced_readouts": sum(g.forced_verdict is not None for g in own),
        "avg_tokens": _mean([metadata[u]["token_len"] for u in uids if u in metadata])}
    if not out["official_baseline"]:
        out["note"] = (f"against {baseline}, not the official {ARENA_HARD_V2_BASELINES[category]}:"
                       " not the official Arena-Hard v2.0 score")
    # beside the tool's numbers (never in them): the games without a verdict read out
    read = [{**r, "games": [g and {**g, "score": g["score"] or g.get("forced_verdict")}
                            for g in r["games"]]} for r in mine]
    with_readouts = battles_from_judgments(read)
    out["battle_rows_with_readouts"] = len(with_readouts)
    if not with_readouts.empty:
        plain = plain_scores(with_readouts, rounds=rounds, seed=seed).iloc[0]
        out.update({f"{k}_with_readouts": 100.0 * float(plain[k])
                    for k in ("score", "lower", "upper")})
    battles = battles_from_judgments(mine)
    out["battle_rows"] = len(battles)
    if battles.empty:
        return {**out, "score": None, "lower": None, "upper": None, "style_score": None,
                "style_lower": None, "style_upper": None}
    plain = plain_scores(battles, rounds=rounds, seed=seed).iloc[0]
    out.update({k: 100.0 * float(plain[k]) for k in ("score", "lower", "upper", "mean")})
    try:
        style, coefs = style_scores(
            battles, [metadata[u] for u in battles["uid"]],
            [answers[u]["metadata"] for u in battles["uid"]], baseline, rounds=rounds,
            seed=seed)
        row = style.iloc[0]
        out.update({k: 100.0 * float(row[k]) for k in ("style_score", "style_lower",
                                                       "style_upper")})
        out["style_coefs"] = coefs
        # a feature constant over the battles is left out of the fit (the tool stops on it)
        out["style_left_out"] = [n for n in STYLE_FEATURES if n not in coefs]
    except ValueError as error:  # e.g. no rows to tell features apart
        out.update(style_score=None, style_lower=None, style_upper=None, style_error=str(error))
    return out


def _mean(values: list[int]) -> float | None:
    return float(pd.Series(values, dtype=float).mean()) if values else None


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:16]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
