"""Pairwise judging of the model's answers against a baseline's, with one follow-up request.

Every game is one request: the pairwise template with the two answers in a given order. A reply
without a verdict label gets one follow-up turn asking for it (as arena-hard-auto does). Where the
backend can continue an assistant prefix (``capabilities.prefill``), a reply still without one
gets a forced read-out: the follow-up answer is prefilled with ``Final verdict: [[`` and a few
greedy tokens complete the label. ``verdict_source`` records which of ``parsed``, ``follow_up``
and ``forced`` gave the verdict; a game that still has none is recorded with ``verdict=None``
and the reason (``failed``), and counted. Games finished in an earlier pass are reused; backend
failures go to ``<name>.failures.jsonl`` and are tried again on the next run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from metajudge.backends.base import Backend
from metajudge.evaluation.records import PairwiseGame, VerdictSource
from metajudge.evaluation.workdir import EvalDir
from metajudge.judging.parse import parse_verdict
from metajudge.records import (
    Completion,
    FailedRequest,
    GenerationRequest,
    GenerationResult,
    Message,
    Provenance,
    SamplingParams,
)
from metajudge.seeds import derive_seed
from metajudge.stage import StagePass
from metajudge.templates import load_template

FORCED_PREFILL = "Final verdict: [["
FOLLOW_UP = ("Finish your judgment now: end your reply with exactly one final verdict label, "
             "one of [[A>>B]], [[A>B]], [[A=B]], [[B>A]], [[B>>A]].")


@dataclass(frozen=True)
class Game:
    """One pairwise comparison to make."""

    id: str
    item_id: str
    instruction: str
    model_answer: str
    baseline_answer: str
    model_position: Literal["A", "B"]
    model: str
    baseline: str

    @property
    def answers(self) -> tuple[str, str]:
        if self.model_position == "A":
            return self.model_answer, self.baseline_answer
        return self.baseline_answer, self.model_answer


def hashed_position(*content: str) -> Literal["A", "B"]:
    """Where the model's answer goes, from a hash of the content: the same for every rerun and
    every judge, and balanced over items."""
    digest = hashlib.sha256("\x1f".join(content).encode("utf-8")).digest()
    return "A" if digest[0] & 1 else "B"


def judge_games(
    workdir: EvalDir, backend: Backend, games: Sequence[Game], *, name: str = "games",
    progress: bool = True,
) -> dict[str, PairwiseGame]:
    """Judge the games not judged yet; returns every judged game by id."""
    config = workdir.config
    template = load_template(config.template)
    sampling = config.judging
    params = SamplingParams(temperature=sampling.temperature, top_p=sampling.top_p,
                            max_tokens=sampling.max_tokens)
    done = {g.id: g for g in workdir.read(name, PairwiseGame)}
    todo = [g for g in games if g.id not in done]
    by_id = {g.id: g for g in todo}
    run = StagePass(f"{config.harness} judge", 1, len(games), len(games),
                    len(games) - len(todo), progress=progress, unit="game")

    def request(game: Game, follow_up: str | None = None,
                forced: bool = False) -> GenerationRequest:
        a, b = game.answers
        prompt = template.render(instruction=game.instruction, output_a=a, output_b=b)
        messages = [Message(role="user", content=prompt)]
        if follow_up is not None:
            messages += [Message(role="assistant", content=follow_up),
                         Message(role="user", content=FOLLOW_UP)]
        return GenerationRequest(
            id=game.id, messages=tuple(messages),
            params=SamplingParams(temperature=0.0, max_tokens=8) if forced else params,
            seed=derive_seed(config.seed, "pairwise", game.id, follow_up is not None),
            prefill=FORCED_PREFILL if forced else None)

    def provenance(req: GenerationRequest, game: Game) -> Provenance:
        return Provenance(backend=backend.fingerprint, params=params, seed=req.seed,
                          sample_index=0, template=template.ref,
                          swapped=game.model_position == "B")

    first_texts: dict[str, Completion] = {}
    with workdir.appender(name) as out, workdir.appender(f"{name}.failures") as failed:

        def record(game: Game, req: GenerationRequest, text: str, source: VerdictSource,
                   completions: Sequence[Completion]) -> None:
            verdict, error = parse_verdict(text)
            if verdict is None:
                source = "failed"
            game_record = PairwiseGame(
                id=game.id, item_id=game.item_id, model=game.model, baseline=game.baseline,
                model_position=game.model_position, verdict=verdict, verdict_source=source,
                parse_error=error, judgment=text,
                prompt_tokens=sum(c.prompt_tokens for c in completions),
                completion_tokens=sum(c.completion_tokens for c in completions),
                provenance=provenance(req, game))
            out.write(game_record)
            done[game.id] = game_record

        def fail(req: GenerationRequest, result: GenerationResult) -> None:
            assert not isinstance(result, Completion)
            failed.write(FailedRequest(id=req.id, stage="eval-judge", iteration=1,
                                       failure=result, provenance=provenance(req,
                                                                             by_id[req.id])))
            run.finished(False)

        requests = [request(g) for g in todo]

        def on_first(index: int, result: GenerationResult) -> None:
            req = requests[index]
            run.tokens(result)
            if not isinstance(result, Completion):
                fail(req, result)
            elif parse_verdict(result.text).value is not None:
                record(by_id[req.id], req, result.text, "parsed", [result])
                run.finished(True)
            else:
                first_texts[req.id] = result

        if requests:
            run.count_call()
            backend.generate(requests, on_result=on_first)
        follow_ups = [request(by_id[i], first.text) for i, first in first_texts.items()]

        can_force = backend.capabilities.prefill
        second_texts: dict[str, Completion] = {}

        def on_follow_up(index: int, result: GenerationResult) -> None:
            req = follow_ups[index]
            run.tokens(result)
            if not isinstance(result, Completion):
                fail(req, result)
                return
            first = first_texts[req.id]
            if parse_verdict(result.text).value is None and can_force:
                second_texts[req.id] = result
                return
            record(by_id[req.id], req, first.text + "\n[follow-up]\n" + result.text,
                   "follow_up", [first, result])
            run.finished(True)

        if follow_ups:
            run.count_call()
            backend.generate(follow_ups, on_result=on_follow_up)
        forced = [request(by_id[i], first_texts[i].text, forced=True) for i in second_texts]

        def on_forced(index: int, result: GenerationResult) -> None:
            req = forced[index]
            run.tokens(result)
            if not isinstance(result, Completion):
                fail(req, result)
                return
            first, second = first_texts[req.id], second_texts[req.id]
            text = (first.text + "\n[follow-up]\n" + second.text + "\n[forced]\n"
                    + FORCED_PREFILL + result.text)
            record(by_id[req.id], req, text, "forced", [first, second, result])
            run.finished(True)

        if forced:
            run.count_call()
            backend.generate(forced, on_result=on_forced)
    summary = run.finish()
    summary.extra.update(follow_ups=len(follow_ups), forced=len(forced))
    workdir.record_stage(summary)
    return done
