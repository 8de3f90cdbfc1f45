"""MT-Bench: the 80 two-turn questions, single-answer grading 1–10 per turn, in FastChat's files.

    metajudge eval mt-bench --model runs/tiny/iter_02/checkpoint --limit 10 --out results/mt/t2

**Answers** (``mt_answers.jsonl``): both turns of each question, the second after the first in
the conversation, sampled at FastChat's temperature for the question's category (0.7 writing
and roleplay, 0.1 stem and humanities, 0 otherwise: greedy) up to ``generation.max_tokens``.

**Grading** (``mt_judgments.jsonl``): the judge rates each turn with the single-answer templates
(``mt_bench_single`` and ``mt_bench_multi`` for the second turn, which shows the whole
conversation), against GPT-4's reference answer for math, reasoning and coding as FastChat does
(``*_ref``). The rating is the *first* ``[[x]]`` (else ``[x]``), FastChat's parse; a judgment
without one is recorded with score −1, FastChat's mark, counted and left out of every mean.

**Files**, in FastChat's layouts, which its ``show_result.py --mode single`` reads:
``model_answer/<model>.jsonl`` (``question_id, answer_id, model_id, choices[0].turns, tstamp``)
and ``model_judgment/<judge>_single.jsonl`` (``question_id, model, judge, user_prompt, judgment,
score, turn, tstamp``); ``metrics.json`` holds the per-turn and overall means with bootstrap
intervals over questions. Both stages resume after a kill.

**Forced read-outs** (``judging.forced_readout``, on backends that score labels): a judgment
without a rating gets a read-out after ``Rating: [[`` (the first digit over 1–9, then "0" or "]"
where "1" leads), kept as ``forced_score`` beside the −1 that FastChat's file and the plain means
keep; ``metrics.json`` adds the means with read-outs (``*_with_readouts``) and their count.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from metajudge.backends.base import Backend
from metajudge.evaluation.config import default_name
from metajudge.evaluation.records import MTBenchAnswer, MTBenchJudgment
from metajudge.judging.parse import parse_rating
from metajudge.judging.readout import (
    RATING_LABELS,
    RATING_PREFILL,
    TEN_LABELS,
    most_probable_rating,
)
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
from metajudge.templates import load_template

ANSWERS = evaluation_file("mt_answers")
JUDGMENTS = evaluation_file("mt_judgments")
#: FastChat's temperature per category (fastchat/llm_judge/common.py)
TEMPERATURES = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0,
                "coding": 0.0, "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
#: categories graded against the GPT-4 reference answer (FastChat's NEED_REF_CATS)
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")


@dataclass(frozen=True)
class Question:
    question_id: int
    category: str
    turns: tuple[str, str]
    reference: tuple[str, str] | None


@cache
def mt_bench_questions() -> tuple[Question, ...]:
    def rows(name: str) -> list[dict[str, Any]]:
        data = (resources.files("metajudge") / "data" / "benchmarks" / name).read_bytes()
        return [json.loads(line) for line in gzip.decompress(data).decode().splitlines()
                if line.strip()]

    references = {r["question_id"]: tuple(r["choices"][0]["turns"])
                  for r in rows("mt_bench_gpt-4_reference_answers.jsonl.gz")}
    return tuple(Question(q["question_id"], q["category"], tuple(q["turns"]),  # type: ignore[arg-type]
                          references.get(q["question_id"])
                          if q["category"] in REFERENCE_CATEGORIES else None)
                 for q in rows("mt_bench_questions.jsonl.gz"))


def answer_questions(store: Store, model: Backend, questions: tuple[Question, ...], *,
                     progress: bool = True) -> dict[int, MTBenchAnswer]:
    """Both turns of every question (resumable: a question is one item of two steps)."""
    config = store.config
    run = StageRun(store, ANSWERS, model, stage="mt-bench answers", iteration=None,
                   settings={"temperatures": TEMPERATURES, "max_tokens":
                             config.generation.max_tokens, "seed": config.seed},
                   runner=config.runner, progress=progress, unit="question")

    def start(question: Question) -> Step:
        params = SamplingParams(temperature=TEMPERATURES.get(question.category, 0.7),
                                top_p=1.0, max_tokens=config.generation.max_tokens)
        first = (Message(role="user", content=question.turns[0]),)
        request = GenerationRequest(id=str(question.question_id), messages=first,
                                    params=params,
                                    seed=derive_seed(config.seed, "mt-bench", question.question_id))

        def second(result: Result) -> Any:
            if not isinstance(result, Completion):
                return run.failed(request.id, step, result)  # type: ignore[arg-type]
            follow = request.model_copy(update={
                "messages": first + (Message(role="assistant", content=result.text),
                                     Message(role="user", content=question.turns[1])),
                "seed": request.seed + 1, "sample_index": 1})
            return Step(follow, partial(finish, result, follow))

        def finish(one: Completion, follow: GenerationRequest, result: Result) -> Any:
            if not isinstance(result, Completion):
                return run.failed(request.id, Step(follow, second), result)  # type: ignore[arg-type]
            return MTBenchAnswer(
                id=request.id, question_id=question.question_id, category=question.category,
                turns=(one.text, result.text), finish_reasons=(one.finish_reason,
                                                              result.finish_reason),
                prompt_tokens=one.prompt_tokens + result.prompt_tokens,
                completion_tokens=one.completion_tokens + result.completion_tokens,
                provenance=Provenance(backend=model.fingerprint, params=params,
                                      seed=request.seed, sample_index=0))

        step = Step(request, second)
        return step

    def items() -> Iterator[Item]:
        for question in questions:
            yield Item(str(question.question_id), partial(start, question))

    run.run(items, total=len(questions), prompts=len(questions))
    wanted = {q.question_id for q in questions}
    return {a.question_id: a for a in store.iter_records(ANSWERS) if a.question_id in wanted}


def judge_prompt(question: Question, answer: MTBenchAnswer, turn: int) -> tuple[str, str]:
    """(template name@version, the judge prompt) for one turn, as FastChat builds it."""
    reference = question.reference
    if turn == 1:
        if reference:
            template = load_template("mt_bench_single_ref")
            return template.ref, template.render(question=question.turns[0],
                                                 ref_answer_1=reference[0],
                                                 answer=answer.turns[0])
        template = load_template("mt_bench_single")
        return template.ref, template.render(question=question.turns[0], answer=answer.turns[0])
    values = {"question_1": question.turns[0], "answer_1": answer.turns[0],
              "question_2": question.turns[1], "answer_2": answer.turns[1]}
    if reference:
        template = load_template("mt_bench_multi_ref")
        return template.ref, template.render(ref_answer_1=reference[0],
                                             ref_answer_2=reference[1], **values)
    template = load_template("mt_bench_multi")
    return template.ref, template.render(**values)


def grade(store: Store, judge: Backend, questions: tuple[Question, ...],
          answers: dict[int, MTBenchAnswer], *, progress: bool = True
          ) -> dict[str, MTBenchJudgment]:
    """One judgment per (question, turn), resumable."""
    config = store.config
    judge_name = default_name(judge.fingerprint.model)
    params = SamplingParams(temperature=config.judging.temperature, top_p=config.judging.top_p,
                            max_tokens=config.judging.max_tokens)
    readouts = config.judging.forced_readout and judge.capabilities.label_scores
    run = StageRun(store, JUDGMENTS, judge, stage="mt-bench judge", iteration=None,
                   settings={"templates": [load_template(n).ref for n in (
                       "mt_bench_single", "mt_bench_single_ref", "mt_bench_multi",
                       "mt_bench_multi_ref")], "params": params.model_dump(),
                       "seed": config.seed, "forced_readout": readouts},
                   runner=config.runner, progress=progress, unit="judgment")

    def start(question: Question, turn: int) -> Step:
        answer = answers[question.question_id]
        ref, prompt = judge_prompt(question, answer, turn)
        request = GenerationRequest(
            id=f"{question.question_id}@t{turn}",
            messages=(Message(role="user", content=prompt),), params=params,
            seed=derive_seed(config.seed, "mt-bench-judge", question.question_id, turn))

        def record(result: Completion, forced: float | None = None) -> MTBenchJudgment:
            rating = parse_rating(result.text)
            run.count("parsed" if rating.value is not None else
                      "forced" if forced is not None else "failed")
            return MTBenchJudgment(
                id=request.id, question_id=question.question_id, turn=turn,
                category=question.category, model=config.name, judge=judge_name,
                reference=question.reference is not None,
                score=rating.value if rating.value is not None else -1.0,
                score_source="parsed" if rating.value is not None else "failed",
                parse_error=rating.error, forced_score=forced, user_prompt=prompt,
                judgment=result.text, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                provenance=Provenance(backend=judge.fingerprint, params=params,
                                      seed=request.seed, sample_index=0, template=ref))

        def finish(result: Result) -> Any:
            if not isinstance(result, Completion):
                return run.failed(request.id, step, result, ref)  # type: ignore[arg-type]
            if not readouts or parse_rating(result.text).value is not None:
                return record(result)
            prefill = result.text + RATING_PREFILL
            digit = ScoreRequest(id=request.id, messages=request.messages, prefill=prefill,
                                 labels=RATING_LABELS)
            return Step(digit, partial(read, result, prefill))

        def read(judged: Completion, prefill: str, result: Result) -> Any:
            if not isinstance(result, LabelScores) or result.probs is None:
                return record(judged)  # no read-out: the rating stays missing
            first = result.probs
            rating = most_probable_rating(first, None)
            if rating != 1.0:  # a leading "1" is 1 or 10: the next token decides
                return record(judged, rating)
            ten = ScoreRequest(id=request.id, messages=request.messages, prefill=prefill + "1",
                               labels=TEN_LABELS)
            return Step(ten, lambda r: record(judged, most_probable_rating(
                first, r.probs if isinstance(r, LabelScores) else None)))

        step = Step(request, finish)
        return step

    def items() -> Iterator[Item]:
        for question in questions:
            if question.question_id in answers:
                for turn in (1, 2):
                    yield Item(f"{question.question_id}@t{turn}", partial(start, question, turn))

    run.run(items, total=2 * len(answers), prompts=len(answers))
    return {j.id: j for j in store.iter_records(JUDGMENTS)
            if j.question_id in answers}


def mt_bench_metrics(judgments: list[MTBenchJudgment], *, bootstrap_rounds: int = 1000,
                     seed: int = 0) -> dict[str, object]:
    """Per-turn and overall means of the ratings (−1 left out, as FastChat leaves it out), with
    percentile intervals from resampling questions.

    >>> from metajudge.records import BackendFingerprint
    >>> p = Provenance(backend=BackendFingerprint(kind="t", model="j"), params=SamplingParams(),
    ...                seed=0, sample_index=0)
    >>> rows = [MTBenchJudgment(id=f"{q}@t{t}", question_id=q, turn=t, category="writing",
    ...         model="m", judge="j", reference=False, score=s, score_source="parsed",
    ...         user_prompt="", judgment="", prompt_tokens=1, completion_tokens=1,
    ...         provenance=p) for q, t, s in [(1, 1, 8.0), (1, 2, 6.0), (2, 1, 4.0), (2, 2, -1)]]
    >>> m = mt_bench_metrics(rows, bootstrap_rounds=0)
    >>> m["turn_1"], m["turn_2"], m["score"], m["no_rating"]
    (6.0, 6.0, 6.0, 1)
    """
    def value(row: MTBenchJudgment, with_readouts: bool) -> float | None:
        if row.score != -1:
            return row.score
        return row.forced_score if with_readouts else None

    def means(rows: list[MTBenchJudgment]) -> dict[str, float]:
        out = {}
        for suffix, forced in (("", False), ("_with_readouts", True)):
            rated = [(r.turn, v) for r in rows if (v := value(r, forced)) is not None]
            out["score" + suffix] = float(np.mean([v for _, v in rated])) if rated \
                else float("nan")
            for turn in (1, 2):
                scores = [v for t, v in rated if t == turn]
                out[f"turn_{turn}{suffix}"] = float(np.mean(scores)) if scores \
                    else float("nan")
        return out

    metrics: dict[str, object] = {**means(judgments), "judgments": len(judgments),
                                  "no_rating": sum(r.score == -1 for r in judgments),
                                  "forced": sum(r.score == -1 and r.forced_score is not None
                                                for r in judgments),
                                  "questions": len({r.question_id for r in judgments})}
    if bootstrap_rounds and judgments:
        by_question: dict[int, list[MTBenchJudgment]] = {}
        for row in judgments:
            by_question.setdefault(row.question_id, []).append(row)
        ids = sorted(by_question)
        rng = np.random.default_rng(seed)
        samples = [means([r for q in rng.choice(ids, len(ids)) for r in by_question[int(q)]])
                   for _ in range(bootstrap_rounds)]
        for key in ("score", "turn_1", "turn_2", "score_with_readouts"):
            values = np.array([s[key] for s in samples], dtype=float)
            values = values[~np.isnan(values)]
            if len(values):
                metrics[f"{key}_lower"], metrics[f"{key}_upper"] = (
                    float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
    return metrics


def run_mt_bench(store: Store, model: Backend, judge: Backend, *, limit: int | None = None,
                 bootstrap_rounds: int = 1000, progress: bool = True) -> dict[str, object]:
    """Answer, grade, write FastChat's files; returns the metrics (also in metrics.json)."""
    config = store.config
    questions = mt_bench_questions()[:limit]
    answers = answer_questions(store, model, questions, progress=progress)
    judged = grade(store, judge, questions, answers, progress=progress)
    stamp = dt.datetime.now(dt.timezone.utc).timestamp()
    _write(store.root / "model_answer" / f"{config.name}.jsonl", [
        {"question_id": a.question_id, "answer_id": f"{config.name}:{a.question_id}",
         "model_id": config.name, "choices": [{"index": 0, "turns": list(a.turns)}],
         "tstamp": stamp} for a in sorted(answers.values(), key=lambda a: a.question_id)])
    rows = sorted(judged.values(), key=lambda j: (j.question_id, j.turn))
    judge_name = rows[0].judge if rows else default_name(judge.fingerprint.model)
    _write(store.root / "model_judgment" / f"{judge_name}_single.jsonl", [
        {"question_id": j.question_id, "model": j.model,
         "judge": [judge_name, j.provenance.template], "user_prompt": j.user_prompt,
         "judgment": j.judgment, "score": j.score, "turn": j.turn, "tstamp": stamp}
        for j in rows])
    metrics = mt_bench_metrics(rows, bootstrap_rounds=bootstrap_rounds, seed=config.seed)
    metrics.update(judge=judge_name, model=config.name, questions_asked=len(questions),
                   answered=len(answers))
    store.write_json("metrics.json", metrics)
    return metrics


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
