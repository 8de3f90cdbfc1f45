"""Stage ``meta-judge``: compare pairs of judgments of one response per prompt (SPEC §5).

    metajudge meta-judge RUN_DIR [--iteration 1]

**Selection.** Per prompt, the response whose judge scores vary most: the population variance
(ddof = 0) of its scored judgments, parsed or forced (a forced read-out is a score the judge
gave, and the tiny CPU run has few others); it needs at least two; ties are broken by a seeded
choice. The selection is made once, when the stage first runs, and saved atomically in
``meta_selection.jsonl``; every later pass and the pairs stage read that file.

**Comparisons.** Every ordered pair of the selected response's scored judgments is shown once:
both orders of every unordered pair. Unscored (failed) judgments are left out: they have no
verdict for the meta-judge to weigh ("is the final score consistent with the reasoning") and can
never be a judge pair's chosen text. The verdict is the last ``Winner: Judgment A|B``, else
(with ``meta_judge.forced_readout``) the likelier of A and B after ``\\nWinner: Judgment``, else
none; with ``meta_judge.complete_verdict`` that read-out's winner line is also appended to the
text (``completed_text``, source ``completed``). A judgment completed by the judge stage
(``judge.complete_verdict``) is shown as completed, with the score it will be trained with. With
``meta_judge.hide_scores`` the judgments are shown without their scores, with the template that
does not ask about them (``meta_judge_hidden``).

Memory stays flat however many comparisons there are: one pass over the judgments keeps their
scores and file offsets, and each response's judgments are read back when its requests are
built.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from metajudge.backends.base import Backend
from metajudge.jsonl import iter_lines
from metajudge.judging.readout import readouts_not_run
from metajudge.judging.scorers import MetaJudge, Outcome
from metajudge.records import (
    GenerationRequest,
    Judgment,
    Message,
    MetaJudgment,
    MetaSelection,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stages.judge import recorded_judge_template, template_settings
from metajudge.stages.runner import Item, StageRun, StageSummary, Step
from metajudge.store import JUDGMENTS, META_JUDGMENTS, META_SELECTION, RESPONSES, Store
from metajudge.templates import load_template, rubric_text

STAGE = "meta-judge"
#: the fewest scored judgments a response needs to be selected
MIN_SCORED = 2

_SCORE_LINE = re.compile(r"(?im)^.*\bscore\s*\**\s*[:：].*(?:\n|$)")
_SCORE_PROSE = re.compile(
    r"(?i)\b(?:[0-5](?:\.\d+)?\s*(?:/|out\s+of)\s*5\b(?:\s*points?)?"
    r"|(?:total|overall|final)(?:\s+(?:score|rating|of))?\s*(?:is|:|=|of)?\s*[0-5](?:\.\d+)?"
    r"(?:\s*points?)?"
    r"|(?:awards?|deserves?|earns?|gets?|give|gives|receives?|scores?)\s+(?:it\s+|a\s+)?"
    r"(?:total\s+of\s+)?[0-5](?:\.\d+)?\s*points?"
    r"|[0-5](?:\.\d+)?\s*points?\s+(?:in\s+total|overall|total))")


def hide_score_lines(text: str) -> str:
    """The ``hide_scores`` variant: remove every line stating a score, and score totals in prose
    ("4/5 overall", "a total of 3 points", "awards it 4 points"). Per-criterion reasoning
    ("the first point is earned") stays: it is the judgment.

    >>> hide_score_lines("Relevant and clear.\\nScore: 4\\n")
    'Relevant and clear.\\n'
    >>> hide_score_lines("Clear, so 4/5 overall. I award it 4 points.")
    'Clear, so [score removed] overall. I [score removed].'
    """
    return _SCORE_PROSE.sub("[score removed]", _SCORE_LINE.sub("", text))


def select_responses(groups: Mapping[str, Sequence[tuple[str, Sequence[float]]]], seed: int,
                     iteration: int) -> list[MetaSelection]:
    """Per prompt (``groups``: prompt id → its responses' ids and scored judge scores), the
    response whose scores have the largest population variance (ddof = 0), among responses
    with at least :data:`MIN_SCORED` scores; ties go to a seeded choice.

    >>> picks = select_responses({"p": [("p#0", [3, 3, 3]), ("p#1", [1, 5]), ("p#2", [4])]},
    ...                          0, 1)
    >>> picks[0].response_id, picks[0].variance, picks[0].scored_judgments
    ('p#1', 4.0, 2)
    """
    selections = []
    for prompt_id, candidates in groups.items():
        variances = {rid: float(np.var(scores)) for rid, scores in candidates
                     if len(scores) >= MIN_SCORED}
        counts = {rid: len(scores) for rid, scores in candidates}
        if not variances:
            selections.append(MetaSelection(
                id=prompt_id, iteration=iteration, response_id=None, variance=None,
                scored_judgments=0,
                reason=f"no response with {MIN_SCORED} scored judgments"))
            continue
        top = max(variances.values())
        tied = sorted(rid for rid, v in variances.items() if v >= top - 1e-12)
        chosen = random.Random(derive_seed(seed, "meta-select", iteration, prompt_id)).choice(
            tied)
        reason = "largest score variance" + (f" (seeded pick among {len(tied)} tied)"
                                             if len(tied) > 1 else "")
        selections.append(MetaSelection(
            id=prompt_id, iteration=iteration, response_id=chosen, variance=top,
            scored_judgments=counts[chosen], reason=reason))
    return selections


def meta_selection(store: Store, iteration: int) -> list[MetaSelection]:
    """The iteration's selection: the saved one, or made now from the judgments and saved."""
    if store.path(META_SELECTION, iteration).is_file():
        return store.read(META_SELECTION, iteration)
    scores: dict[str, list[float]] = defaultdict(list)
    for judgment in store.iter_records(JUDGMENTS, iteration):
        if judgment.score is not None:
            scores[judgment.response_id].append(judgment.score)
    groups: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    for response in store.iter_records(RESPONSES, iteration):
        groups[response.prompt_id].append((response.id, scores.get(response.id, [])))
    selections = select_responses(groups, store.config.seed, iteration)
    store.write_all(META_SELECTION, selections, iteration)
    return selections


def scored_offsets(store: Store, iteration: int, responses: set[str]
                   ) -> dict[str, dict[int, int]]:
    """For the given responses, the file offset of each scored judgment by its index."""
    offsets: dict[str, dict[int, int]] = defaultdict(dict)
    for offset, judgment in store.iter_with_offsets(JUDGMENTS, iteration):
        if judgment.response_id in responses and judgment.score is not None:
            offsets[judgment.response_id][judgment.index] = offset
    return offsets


def run_meta_judge(store: Store, backend: Backend, iteration: int = 1, *,
                   progress: bool = True, redo: bool = False) -> StageSummary:
    """Run every meta-judge comparison of an iteration; resumable like every stage."""
    cfg = store.config.meta_judge
    if not store.path(JUDGMENTS, iteration).is_file():
        raise FileNotFoundError(f"{store.path(JUDGMENTS, iteration)}: no judgments; "
                                "run `metajudge judge` first")
    template = load_template(cfg.template or ("meta_judge_hidden" if cfg.hide_scores
                                              else "meta_judge"))
    rubric = rubric_text(recorded_judge_template(store, iteration))
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens)
    settings: dict[str, Any] = {
        **template_settings(template), "params": params.model_dump(),
        "forced_readout": cfg.forced_readout, "hide_scores": cfg.hide_scores,
        "seed": store.config.seed,
        **({"complete_verdict": True} if cfg.complete_verdict else {}),
        **readouts_not_run(STAGE, {"forced_readout": cfg.forced_readout,
                                   "complete_verdict": cfg.complete_verdict},
                           backend.capabilities, backend.fingerprint)}
    run = StageRun(store, META_JUDGMENTS, backend, stage=STAGE, iteration=iteration,
                   settings=settings, runner=store.config.runner, progress=progress,
                   unit="comparison", redo=redo, inputs=(RESPONSES, JUDGMENTS),
                   together=(META_SELECTION,))  # --redo moves the selection aside with them
    selections = meta_selection(store, iteration)
    chosen = {s.response_id for s in selections if s.response_id is not None}
    offsets = scored_offsets(store, iteration, chosen)
    response_at = {r: o for o, r in ((o, rec.id) for o, rec in
                                     store.iter_with_offsets(RESPONSES, iteration)) if r in chosen}
    judge = MetaJudge(template, cfg.forced_readout, backend.capabilities, cfg.complete_verdict)

    def start(response: Response, first: Judgment, second: Judgment) -> Step:
        a, b = first.completed_text or first.text, second.completed_text or second.text
        if cfg.hide_scores:
            a, b = hide_score_lines(a), hide_score_lines(b)
        text = template.render(instruction=response.instruction, response=response.text,
                               rubric=rubric, judgment_a=a, judgment_b=b)
        request = GenerationRequest(
            id=f"{response.id}@m{first.index}-{second.index}",
            messages=(Message(role="user", content=text),), params=params,
            seed=derive_seed(store.config.seed, STAGE, iteration, response.id, first.index,
                             second.index))
        provenance = Provenance(backend=backend.fingerprint, params=params, seed=request.seed,
                                sample_index=0, template=template.ref,
                                swapped=first.index > second.index)

        def finish(outcome: Outcome) -> MetaJudgment:
            run.count(outcome.source)
            return MetaJudgment(
                id=request.id, response_id=response.id, prompt_id=response.prompt_id,
                iteration=iteration, first=first.index, second=second.index,
                winner={"A": "first", "B": "second", None: None}[outcome.value],
                winner_source=outcome.source,  # type: ignore[arg-type]
                parse_error=outcome.error,
                choice_probs=outcome.probs,  # type: ignore[arg-type]
                hide_scores=cfg.hide_scores, text=outcome.text,
                completed_text=outcome.completed_text,
                prompt_tokens=outcome.prompt_tokens,
                completion_tokens=outcome.completion_tokens, provenance=provenance)

        return judge.start(request, finish, lambda failure: run.failed(
            request.id, Step(request, finish), failure, template.ref))  # type: ignore[arg-type]

    def items() -> Iterator[Item]:
        for selection in selections:
            rid = selection.response_id
            if rid is None:
                continue
            response = store.read_at(RESPONSES, response_at[rid], iteration)
            shown = {n: store.read_at(JUDGMENTS, o, iteration)
                     for n, o in sorted(offsets[rid].items())}
            for first, second in itertools.permutations(sorted(shown), 2):
                yield Item(f"{rid}@m{first}-{second}",
                           partial(start, response, shown[first], shown[second]))

    total = sum(len(o) * (len(o) - 1) for o in offsets.values())
    return run.run(items, total=total, prompts=len(selections), extra=lambda: {
        "first_position_share": round(first_position_share(store, iteration), 4)})


_WINNER_FIELD = re.compile(rb'"winner":"(first|second)"')


def first_position_share(store: Store, iteration: int) -> float:
    """Share of the iteration's verdicts that went to the judgment shown first, read from the
    raw lines (the field cannot occur unescaped inside a text) without building records."""
    path = store.path(META_JUDGMENTS, iteration)
    counts = {b"first": 0, b"second": 0}
    if path.is_file():
        for _, raw in iter_lines(path):
            match = _WINNER_FIELD.search(raw)
            if match:
                counts[match.group(1)] += 1
    decided = counts[b"first"] + counts[b"second"]
    return counts[b"first"] / decided if decided else 0.0
