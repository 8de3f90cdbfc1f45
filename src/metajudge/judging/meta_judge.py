"""Stage ``meta-judge``: compare pairs of judgments of one response per prompt (SPEC §5).

    metajudge meta-judge RUN_DIR [--iteration 1]

Per prompt, the response whose judge scores vary most is selected (ties broken by a seeded
choice; it needs two scored judgments). Every unordered pair of its scored judgments is shown
twice, once in each order, with the meta-judge template; the verdict is the last
``Winner: Judgment A|B``, else (with ``meta_judge.forced_readout``) the likelier of A and B after
appending ``\\nWinner: Judgment ``, else no verdict. With ``meta_judge.hide_scores`` the
``Score:`` lines are removed from the judgments shown.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from metajudge.backends.base import Backend
from metajudge.judging.judge import forced_readouts, judge_template
from metajudge.judging.parse import parse_winner
from metajudge.judging.readout import CHOICE_LABELS, WINNER_PREFILL
from metajudge.records import (
    Completion,
    FailedRequest,
    GenerationRequest,
    GenerationResult,
    Judgment,
    Message,
    MetaJudgment,
    MetaSelection,
    Provenance,
    Response,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stage import StagePass, StageSummary
from metajudge.store import RunStore
from metajudge.templates import load_template, rubric_text

STAGE = "meta-judge"
META = "meta_judgments"
FAILURES = "meta_judgments.failures"
SELECTION = "meta_selection"

_SCORE_LINE = re.compile(r"(?im)^.*\bscore\s*\**\s*[:：].*(?:\n|$)")


def hide_score_lines(text: str) -> str:
    """Remove every line that states a score (the ``hide_scores`` variant).

    >>> hide_score_lines("Relevant and clear.\\nScore: 4\\n")
    'Relevant and clear.\\n'
    """
    return _SCORE_LINE.sub("", text)


def select_responses(responses: Sequence[Response], judgments: Sequence[Judgment], seed: int,
                     iteration: int) -> list[MetaSelection]:
    """Per prompt, the response with the largest variance of its judge scores."""
    scores: dict[str, list[float]] = defaultdict(list)
    for j in judgments:
        if j.score is not None:
            scores[j.response_id].append(j.score)
    by_prompt: dict[str, list[Response]] = defaultdict(list)
    for r in responses:
        by_prompt[r.prompt_id].append(r)
    selections = []
    for prompt_id, candidates in by_prompt.items():
        variances = {r.id: float(np.var(scores[r.id])) for r in candidates
                     if len(scores[r.id]) >= 2}
        if not variances:
            selections.append(MetaSelection(
                id=prompt_id, iteration=iteration, response_id=None, variance=None,
                scored_judgments=0, reason="no response with two scored judgments"))
            continue
        top = max(variances.values())
        tied = sorted(rid for rid, v in variances.items() if v >= top - 1e-12)
        chosen = random.Random(derive_seed(seed, "meta-select", iteration, prompt_id)).choice(
            tied)
        reason = "largest score variance" + (f" (seeded pick among {len(tied)} tied)"
                                             if len(tied) > 1 else "")
        selections.append(MetaSelection(
            id=prompt_id, iteration=iteration, response_id=chosen, variance=top,
            scored_judgments=len(scores[chosen]), reason=reason))
    return selections


def run_meta_judge(store: RunStore, backend: Backend, iteration: int = 1,
                   *, progress: bool = True) -> StageSummary:
    """Run every meta-judge comparison of an iteration; resumable like every stage."""
    cfg = store.config.meta_judge
    responses = {r.id: r for r in store.read(iteration, "responses", Response)}
    judgments = store.read(iteration, "judgments", Judgment)
    if not judgments:
        raise FileNotFoundError(f"{store.path(iteration, 'judgments')}: no judgments; "
                                "run `metajudge judge` first")
    selections = select_responses(list(responses.values()), judgments, store.config.seed,
                                  iteration)
    known = store.done_ids(iteration, SELECTION, MetaSelection)
    with store.appender(iteration, SELECTION) as out:
        out.write_all(s for s in selections if s.id not in known)

    template = load_template(cfg.template or "meta_judge")
    rubric = rubric_text(judge_template(store))
    params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens)
    by_response: dict[str, dict[int, Judgment]] = defaultdict(dict)
    for j in judgments:
        if j.score is not None:
            by_response[j.response_id][j.index] = j
    requests: list[GenerationRequest] = []
    pair_of: dict[str, tuple[Response, int, int]] = {}
    for selection in selections:
        if selection.response_id is None:
            continue
        response = responses[selection.response_id]
        shown = by_response[response.id]
        for first, second in itertools.permutations(sorted(shown), 2):
            a, b = shown[first].text, shown[second].text
            if cfg.hide_scores:
                a, b = hide_score_lines(a), hide_score_lines(b)
            text = template.render(instruction=response.instruction, response=response.text,
                                   rubric=rubric, judgment_a=a, judgment_b=b)
            request = GenerationRequest(
                id=f"{response.id}@m{first}-{second}",
                messages=(Message(role="user", content=text),), params=params,
                seed=derive_seed(store.config.seed, STAGE, iteration, response.id, first,
                                 second),
            )
            requests.append(request)
            pair_of[request.id] = (response, first, second)

    todo = store.pending(iteration, META, MetaJudgment, requests)
    run = StagePass(STAGE, iteration, len(selections), len(requests), len(requests) - len(todo),
                    progress=progress, unit="comparison")
    caps = backend.capabilities
    forced_on = cfg.forced_readout and caps.prefill and caps.logprobs
    deferred: list[tuple[GenerationRequest, Completion, str]] = []
    sources = {"parsed": 0, "forced": 0, "failed": 0}

    with store.appender(iteration, META) as out, \
            store.appender(iteration, FAILURES) as fail_out:

        def provenance(request: GenerationRequest) -> Provenance:
            _, first, second = pair_of[request.id]
            return Provenance(backend=backend.fingerprint, params=request.params,
                              seed=request.seed, sample_index=0, template=template.ref,
                              swapped=first > second)

        def write(request: GenerationRequest, completion: Completion, choice: str | None,
                  source: str, error: str | None,
                  probs: tuple[float, float] | None = None) -> None:
            response, first, second = pair_of[request.id]
            sources[source] += 1
            out.write(MetaJudgment(
                id=request.id, response_id=response.id, prompt_id=response.prompt_id,
                iteration=iteration, first=first, second=second,
                winner={"A": "first", "B": "second", None: None}[choice],  # type: ignore[arg-type]
                winner_source=source, parse_error=error,  # type: ignore[arg-type]
                choice_probs=probs, hide_scores=cfg.hide_scores, text=completion.text,
                prompt_tokens=completion.prompt_tokens,
                completion_tokens=completion.completion_tokens, provenance=provenance(request),
            ))
            run.finished(True)

        def on_result(index: int, result: GenerationResult) -> None:
            request = todo[index]
            run.tokens(result)
            if not isinstance(result, Completion):
                fail_out.write(FailedRequest(id=request.id, stage=STAGE, iteration=iteration,
                                             failure=result, provenance=provenance(request)))
                return run.finished(False)
            parsed = parse_winner(result.text)
            if parsed.value is not None:
                return write(request, result, parsed.value, "parsed", None)
            if forced_on:
                deferred.append((request, result, parsed.error or ""))
                return None
            return write(request, result, None, "failed", parsed.error)

        if todo:
            run.count_call()
            backend.generate(todo, on_result=on_result)
        if deferred:

            def on_readout(index: int, dist: tuple[float, ...] | None, note: str | None) -> None:
                request, completion, error = deferred[index]
                if dist is not None and dist[0] != dist[1]:
                    return write(request, completion, "A" if dist[0] > dist[1] else "B",
                                 "forced", error, (dist[0], dist[1]))
                note = note or "A and B equally likely"
                return write(request, completion, None, "failed",
                             f"{error}; forced read-out: {note}")

            forced_readouts(backend, run, deferred, WINNER_PREFILL, CHOICE_LABELS, on_readout)
    metas = store.read(iteration, META, MetaJudgment)
    first_share = (sum(m.winner == "first" for m in metas)
                   / max(1, sum(m.winner is not None for m in metas)))
    run.summary.extra = {**sources, "first_position_share": round(first_share, 4)}
    return run.close(store)
