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

**Adaptive** (``meta_judge.adaptive``, SPEC §5a): the comparisons are asked for in rounds, a
ring then LUCB races for the chosen and the rejected judgment (:func:`_rounds`), each record
saying which round and rule asked for it; the audit's comparisons (rule ``audit``) come last.
With ``judge.adaptive`` the selection is made on each response's initial judgments.

Memory stays flat however many comparisons there are: one pass over the judgments keeps their
scores and file offsets, and each response's judgments are read back when its requests are
built.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from metajudge.backends.base import Backend
from metajudge.jsonl import iter_lines
from metajudge.judging.adaptive import meta_asks
from metajudge.judging.readout import readouts_not_run
from metajudge.judging.scorers import MetaJudge, Outcome
from metajudge.pairs.judge import positional_weights
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
from metajudge.stages import adaptive
from metajudge.stages.adaptive import audit_share
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


def score_groups(store: Store, iteration: int, *, below: int | None = None,
                 prompts: Collection[str] | None = None
                 ) -> dict[str, list[tuple[str, list[float]]]]:
    """Per prompt, its responses' ids and scored judge scores (those with index < ``below``
    only, when given; the prompts in ``prompts`` only, when given)."""
    scores: dict[str, list[float]] = defaultdict(list)
    for judgment in store.iter_records(JUDGMENTS, iteration):
        if judgment.score is not None and (below is None or judgment.index < below) and (
                prompts is None or judgment.prompt_id in prompts):
            scores[judgment.response_id].append(judgment.score)
    groups: dict[str, list[tuple[str, list[float]]]] = defaultdict(list)
    for response in store.iter_records(RESPONSES, iteration):
        if prompts is None or response.prompt_id in prompts:
            groups[response.prompt_id].append((response.id, scores.get(response.id, [])))
    return groups


def meta_selection(store: Store, iteration: int) -> list[MetaSelection]:
    """The iteration's selection: the saved one, or made now from the judgments and saved.
    With ``judge.adaptive`` it is made on each response's initial judgments, as the judge
    stage made it (that response then got all N)."""
    if store.path(META_SELECTION, iteration).is_file():
        return store.read(META_SELECTION, iteration)
    judge = store.config.judge
    below = judge.adaptive_initial if judge.adaptive else None
    selections = select_responses(score_groups(store, iteration, below=below),
                                  store.config.seed, iteration)
    if below is not None:
        selections = [s.model_copy(update={"reason": s.reason + f" of the first {below} "
                                           "judgments (judge.adaptive)"})
                      if s.response_id is not None else s for s in selections]
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
                           backend.capabilities, backend.fingerprint),
        # recorded when on only: runs made before adaptive judging resume unchanged
        **({"selection_on_initial": store.config.judge.adaptive_initial}
           if store.config.judge.adaptive else {}),
        **(adaptive.meta_settings(store.config) if cfg.adaptive else {}),
        **({"audit_share": audit_share(store.config)} if audit_share(store.config) else {})}
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

    def start(response: Response, first: Judgment, second: Judgment,
              asked: tuple[int, str] | None = None) -> Step:
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
                completion_tokens=outcome.completion_tokens, provenance=provenance,
                round=asked[0] if asked else None,
                rule=asked[1] if asked else None)  # type: ignore[arg-type]

        return judge.start(request, finish, lambda failure: run.failed(
            request.id, Step(request, finish), failure, template.ref,  # type: ignore[arg-type]
            asked))

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

    def extra() -> dict[str, float | int]:
        return {"first_position_share": round(first_position_share(store, iteration), 4)}

    share = audit_share(store.config)
    if not cfg.adaptive and not share:
        return run.run(items, total=total, prompts=len(selections), extra=extra)
    rounds = _rounds(store, iteration, selections, offsets, response_at, start)
    return run.run(total=total, prompts=len(selections), extra=extra, rounds=rounds)


def full_selection(store: Store, iteration: int, prompts: Collection[str]
                   ) -> dict[str, str | None]:
    """The full procedure's selection on the given (audited) prompts: over all their
    judgments."""
    return {s.id: s.response_id for s in select_responses(
        score_groups(store, iteration, prompts=prompts), store.config.seed, iteration)}


def _rounds(store: Store, iteration: int, selections: Sequence[MetaSelection],
            offsets: dict[str, dict[int, int]], response_at: dict[str, int],
            start: Callable[..., Step]) -> Iterator[list[Item]]:
    """The rounds of ``meta_judge.adaptive`` (SPEC §5a), replayed from the records: per
    selected response, :func:`metajudge.judging.adaptive.meta_asks` of the verdicts the rounds
    before gave, with the ω of every such verdict of the iteration; without it, one round of
    every comparison. Then the audit round: every ordered pair of the audited prompts'
    selected response, and of their full selection's when the judge stage was audited too."""
    from metajudge.stages.pairs import _carries_verdict as carries_verdict  # (a judge pair's)

    config = store.config
    rule = adaptive.meta_rule(config)
    shown: dict[str, dict[int, Judgment]] = defaultdict(dict)
    for response_id, at in offsets.items():
        for n, offset in at.items():
            shown[response_id][n] = store.read_at(JUDGMENTS, offset, iteration)
    chosen = [s for s in selections if s.response_id is not None]

    def item(rid: str, a: int, b: int, asked: tuple[int, str]) -> Item:
        def begin() -> Step:
            return start(store.read_at(RESPONSES, response_at[rid], iteration),
                         shown[rid][a], shown[rid][b], asked)
        return Item(f"{rid}@m{a}-{b}", begin)

    verdicts: dict[str, dict[tuple[int, int], str | None]] = defaultdict(dict)
    round_ = 0
    while True:
        omega = positional_weights([w for v in verdicts.values() for w in v.values()])
        asks: dict[str, tuple[str, int, int, str]] = {}
        for selection in chosen:
            rid = selection.response_id
            assert rid is not None
            judgments = sorted(shown[rid])
            if config.meta_judge.adaptive:
                eligible = [n for n in judgments if carries_verdict(shown[rid][n])]
                pairs = [(ask.target, ask.rule) for ask in meta_asks(
                    judgments, eligible, verdicts[rid], omega, rule,
                    derive_seed(config.seed, "meta-ring", iteration, rid))]
            elif round_ == 0:
                pairs = [((a, b), "full") for a, b in itertools.permutations(judgments, 2)]
            else:
                pairs = []
            for (a, b), why in pairs:  # type: ignore[misc]
                asks[f"{rid}@m{a}-{b}"] = (rid, a, b, why)
        if not asks:
            break
        yield [item(rid, a, b, (round_, why) if why != "full" else None)  # type: ignore[arg-type]
               for rid, a, b, why in asks.values()]
        got = adaptive.answers(store, META_JUDGMENTS, iteration, asks, lambda m: m.winner)
        if len(got) < len(asks):
            return  # retryable failures remain: the runner stops, a rerun resumes here
        for key, (rid, a, b, _) in asks.items():
            verdicts[rid][(a, b)] = got[key]
        round_ += 1
    yield from _audit_round(store, iteration, chosen, shown, verdicts, round_, start)


def _audit_round(store: Store, iteration: int, chosen: Sequence[MetaSelection],
                 shown: dict[str, dict[int, Judgment]],
                 verdicts: dict[str, dict[tuple[int, int], str | None]], round_: int,
                 start: Callable[..., Step]) -> Iterator[list[Item]]:
    config = store.config
    share = audit_share(config)
    sample = {s.id: s.response_id for s in chosen
              if adaptive.audited(config.seed, iteration, s.id, share)}
    if not sample:
        return
    full: dict[str, str | None] = {}
    if config.judge.adaptive:
        full = full_selection(store, iteration, sample)  # the judge stage audited them all
    targets = sorted({rid for p, rid in sample.items() for rid in (rid, full.get(p))
                      if rid is not None})
    extra = {rid for rid in targets if rid not in shown}
    for j in store.iter_records(JUDGMENTS, iteration):
        if j.response_id in extra and j.score is not None:
            shown[j.response_id][j.index] = j
    response_at = {r.id: o for o, r in store.iter_with_offsets(RESPONSES, iteration)
                   if r.id in targets}
    items = []
    for rid in targets:
        for a, b in itertools.permutations(sorted(shown[rid]), 2):
            if (a, b) not in verdicts.get(rid, {}):
                first, second = shown[rid][a], shown[rid][b]
                items.append(Item(f"{rid}@m{a}-{b}", partial(
                    _start_at, store, iteration, response_at[rid], first, second,
                    (round_, "audit"), start)))
    if items:
        yield items


def _start_at(store: Store, iteration: int, offset: int, first: Judgment, second: Judgment,
              asked: tuple[int, str], start: Callable[..., Step]) -> Step:
    return start(store.read_at(RESPONSES, offset, iteration), first, second, asked)


_WINNER_FIELD = re.compile(rb'"winner":"(first|second)"')
_AUDIT_RULE = re.compile(rb'"rule":"audit"')


def first_position_share(store: Store, iteration: int) -> float:
    """Share of the iteration's verdicts that went to the judgment shown first, read from the
    raw lines (the fields cannot occur unescaped inside a text) without building records; an
    adaptive audit's verdicts (rule ``audit``, SPEC §5a) are left out, as in ``summary.csv``."""
    path = store.path(META_JUDGMENTS, iteration)
    counts = {b"first": 0, b"second": 0}
    if path.is_file():
        for _, raw in iter_lines(path):
            match = _WINNER_FIELD.search(raw)
            if match and not _AUDIT_RULE.search(raw):
                counts[match.group(1)] += 1
    decided = counts[b"first"] + counts[b"second"]
    return counts[b"first"] / decided if decided else 0.0
