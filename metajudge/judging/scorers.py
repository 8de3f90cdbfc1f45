"""Judges as objects: a template, a parser and a read-out policy give a value (inspect_ai's
scorer pattern). The loop's judge stage and the judge evaluation share :class:`RubricJudge`;
the meta-judge stage uses :class:`MetaJudge`; the pairwise harnesses :class:`PairwiseJudge`.

Each ``start`` returns the first :class:`~metajudge.stages.runner.Step` of one judgment: the
generation, then where the policy asks for it one label-scoring request (a probability-weighted
score at the written score, or a forced read-out when nothing parsed), or a follow-up turn.
The last step calls ``finish`` with the outcome; the stage turns it into its record.

**Verdict completion** (``complete`` / ``complete_verdict``, SPEC §3): a text without a parsed
verdict, stopped or cut at ``max_tokens``, gets the read-out's prefix and a label appended, the
text it would have ended with had it written the verdict line: the label drawn from the
read-out's distribution at the request's temperature and top-p, seeded by the request
(:func:`~metajudge.judging.readout.sampled_label`; the top label at temperature 0), from the same
request; the source is ``completed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from metajudge.judging.parse import parse_score, parse_verdict, parse_winner
from metajudge.judging.readout import (
    CHOICE_LABELS,
    SCORE_LABELS,
    SCORE_PREFILL,
    WINNER_PREFILL,
    expected_score,
    most_probable_score,
    sampled_label,
    score_prefix,
)
from metajudge.records import (
    Capabilities,
    Completion,
    Failure,
    GenerationRequest,
    LabelScores,
    Message,
    ScoreRequest,
)
from metajudge.stages.runner import Result, Step
from metajudge.templates import Template

log = logging.getLogger(__name__)
#: what a stage does with a non-retryable failure of the first request
OnFailure = Callable[[Failure], BaseModel]


@dataclass(frozen=True)
class ReadoutPolicy:
    """When a judge asks for a label-scoring request (SPEC §3)."""

    forced: bool = False
    probability_weighted: bool = False
    complete: bool = False


@dataclass
class Outcome:
    """A finished judgment: its value, where the value came from, and the texts behind it."""

    value: Any
    source: str
    error: str | None
    text: str
    completions: list[Completion] = field(default_factory=list)
    prob_score: float | None = None
    probs: tuple[float, ...] | None = None
    completed_text: str | None = None
    #: why a parsed score's probability-weighted read-out gave no ``prob_score``
    readout_error: str | None = None

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.completions)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.completions)

    @property
    def first(self) -> Completion:
        return self.completions[0]


def _readout(request: GenerationRequest, prefill: str, labels: tuple[str, ...]) -> ScoreRequest:
    return ScoreRequest(id=request.id, messages=request.messages, prefill=prefill, labels=labels)


def completed(prefill: str, label: str) -> str:
    """The read-out's prefix with its label written after it: the verdict line the text lacked.

    >>> completed("Clear and relevant.\\nScore: ", "4")
    'Clear and relevant.\\nScore: 4'
    >>> completed("B is vague.\\nWinner: Judgment", "A")
    'B is vague.\\nWinner: Judgment A'
    """
    return prefill + ("" if prefill[-1:].isspace() else " ") + label


def _note(result: Result) -> str:
    if isinstance(result, LabelScores):
        return result.note or "no label had probability mass"
    if isinstance(result, Failure):
        return f"failed: {result.kind.value}: {result.message[:120]}"
    return "not a read-out"


class RubricJudge:
    """The additive 5-point rubric judge: ``Score: N`` parsed from the last ``Score:``; else,
    with ``policy.forced``, the most probable score after ``\\nScore: ``; with
    ``policy.probability_weighted``, the expected score at the written (or forced) position.
    A probability-weighted read-out that fails keeps the parsed score, with the reason in
    ``Outcome.readout_error``; the first such failure of a judge is logged."""

    def __init__(self, template: Template, policy: ReadoutPolicy, capabilities: Capabilities):
        self.template = template
        self.scoring = capabilities.label_scores
        self.forced = policy.forced and self.scoring
        self.weighted = policy.probability_weighted and self.scoring
        self.complete = policy.complete and self.forced
        self.readout_failures = 0

    def messages(self, instruction: str, response: str) -> tuple[Message, ...]:
        """The judge's chat prompt for one response; also the DPO prompt of judge pairs."""
        return (Message(role="user", content=self.template.render(instruction=instruction,
                                                                  response=response)),)

    def start(self, request: GenerationRequest, finish: Callable[[Outcome], BaseModel],
              fail: OnFailure) -> Step:
        def judged(result: Result) -> BaseModel | Step:
            if not isinstance(result, Completion):
                return fail(result)  # type: ignore[arg-type]
            parsed = parse_score(result.text)
            value = parsed.value
            if value is not None:
                prefix = score_prefix(result.text)
                if self.weighted and prefix is not None:
                    return Step(_readout(request, prefix, SCORE_LABELS),
                                lambda r: finish(self._weighted(request, result, value, r)))
                return finish(Outcome(value, "parsed", None, result.text, [result]))
            if self.forced:
                readout = _readout(request, result.text + SCORE_PREFILL, SCORE_LABELS)
                return Step(readout, lambda r: finish(forced(
                    result, parsed.error or "", r,
                    (readout.prefill, request) if self.complete else None)))
            return finish(Outcome(None, "failed", parsed.error, result.text, [result]))

        return Step(request, judged)

    def _weighted(self, request: GenerationRequest, completion: Completion, value: float,
                  result: Result) -> Outcome:
        outcome = weighted(completion, value, result)
        if outcome.readout_error is not None:
            self.readout_failures += 1
            if self.readout_failures == 1:
                log.warning("probability-weighted read-out of %s gave no prob_score: %s. Its "
                            "parsed score is kept, and such judgments record why in "
                            "readout_error (logged for the first one only)",
                            request.id, outcome.readout_error)
        return outcome


def weighted(completion: Completion, value: float, result: Result) -> Outcome:
    """A parsed score with its probability-weighted score beside it (when the read-out gave
    one; else why not, in ``readout_error``)."""
    probs = result.probs if isinstance(result, LabelScores) else None
    return Outcome(value, "parsed", None, completion.text, [completion],
                   expected_score(probs) if probs else None, probs,
                   readout_error=None if probs else _note(result))


def _drawn(probs: tuple[float, ...], request: GenerationRequest) -> int:
    """The label index verdict completion writes: drawn as the request's sampler would."""
    return sampled_label(probs, request.params.temperature, request.params.top_p, request.seed)


def forced(completion: Completion, error: str, result: Result,
           completion_of: tuple[str, GenerationRequest] | None = None) -> Outcome:
    """A forced read-out's score (the most probable), or a failed judgment with both reasons;
    with ``completion_of`` = (the read-out's prefill, the judgment's request) given (verdict
    completion), the score drawn as the request's sampler would, written after the prefill:
    source ``completed``."""
    probs = result.probs if isinstance(result, LabelScores) else None
    if probs is None:
        return Outcome(None, "failed", f"{error}; forced read-out: {_note(result)}",
                       completion.text, [completion])
    if completion_of is not None:
        prefill, request = completion_of
        score = float(SCORE_LABELS[_drawn(probs, request)])
        text = completed(prefill, f"{score:g}")
        if parse_score(text).value == score:  # else the text would not carry it: forced
            return Outcome(score, "completed", error, completion.text, [completion],
                           expected_score(probs), probs, completed_text=text)
    return Outcome(most_probable_score(probs), "forced", error, completion.text, [completion],
                   expected_score(probs), probs)


class MetaJudge:
    """The meta-judge: ``Winner: Judgment A|B`` parsed from the last such line; else, with
    ``forced``, the likelier of A and B after ``\\nWinner: Judgment`` (equal: no verdict); with
    ``complete``, the one drawn as the request's sampler would, appended to the text."""

    def __init__(self, template: Template, forced_readout: bool, capabilities: Capabilities,
                 complete: bool = False):
        self.template = template
        self.forced = forced_readout and capabilities.label_scores
        self.complete = complete and self.forced

    def start(self, request: GenerationRequest, finish: Callable[[Outcome], BaseModel],
              fail: OnFailure) -> Step:
        def judged(result: Result) -> BaseModel | Step:
            if not isinstance(result, Completion):
                return fail(result)  # type: ignore[arg-type]
            parsed = parse_winner(result.text)
            if parsed.value is not None:
                return finish(Outcome(parsed.value, "parsed", None, result.text, [result]))
            if self.forced:
                readout = _readout(request, result.text + WINNER_PREFILL, CHOICE_LABELS)
                return Step(readout, lambda r: finish(self._read(
                    result, parsed.error or "", r,
                    (readout.prefill, request) if self.complete else None)))
            return finish(Outcome(None, "failed", parsed.error, result.text, [result]))

        return Step(request, judged)

    @staticmethod
    def _read(completion: Completion, error: str, result: Result,
              completion_of: tuple[str, GenerationRequest] | None = None) -> Outcome:
        probs = result.probs if isinstance(result, LabelScores) else None
        if probs is not None and completion_of is not None:
            prefill, request = completion_of
            winner = CHOICE_LABELS[_drawn(probs, request)]
            text = completed(prefill, winner)
            if parse_winner(text).value == winner:
                return Outcome(winner, "completed", error, completion.text, [completion],
                               probs=probs, completed_text=text)
        if probs is not None and probs[0] != probs[1]:
            winner = "A" if probs[0] > probs[1] else "B"
            return Outcome(winner, "forced", error, completion.text, [completion], probs=probs)
        note = "A and B equally likely" if probs is not None else _note(result)
        return Outcome(None, "failed", f"{error}; forced read-out: {note}", completion.text,
                       [completion], probs=probs)


FOLLOW_UP = ("Finish your judgment now: end your reply with exactly one final verdict label, "
             "one of [[A>>B]], [[A>B]], [[A=B]], [[B>A]], [[B>>A]].")
FORCED_PREFILL = "Final verdict: [["


class PairwiseJudge:
    """The pairwise judge of the harnesses: the last ``[[A>B]]``-style label; a reply without
    one gets one follow-up turn asking for it (as arena-hard-auto does); a follow-up still
    without one, where the backend scores labels, a read-out of A or B after ``Final verdict:
    [[``, recorded as the slight preference ``A>B`` or ``B>A``."""

    def __init__(self, template: Template, capabilities: Capabilities):
        self.template = template
        self.scoring = capabilities.label_scores

    def messages(self, instruction: str, output_a: str, output_b: str) -> tuple[Message, ...]:
        return (Message(role="user", content=self.template.render(
            instruction=instruction, output_a=output_a, output_b=output_b)),)

    def start(self, request: GenerationRequest, finish: Callable[[Outcome], BaseModel],
              fail: OnFailure) -> Step:
        def judged(result: Result) -> BaseModel | Step:
            if not isinstance(result, Completion):
                return fail(result)  # type: ignore[arg-type]
            verdict = parse_verdict(result.text)
            if verdict.value is not None:
                return finish(Outcome(verdict.value, "parsed", None, result.text, [result]))
            follow = request.model_copy(update={
                "messages": request.messages + (Message(role="assistant", content=result.text),
                                                Message(role="user", content=FOLLOW_UP)),
                "seed": request.seed + 1})
            return Step(follow, lambda r: followed(result, follow, r))

        def followed(first: Completion, follow: GenerationRequest,
                     result: Result) -> BaseModel | Step:
            if not isinstance(result, Completion):
                return fail(result)  # type: ignore[arg-type]
            text = first.text + "\n[follow-up]\n" + result.text
            verdict = parse_verdict(result.text)
            if verdict.value is not None or not self.scoring:
                return finish(Outcome(verdict.value, "follow_up" if verdict.value else "failed",
                                      verdict.error, text, [first, result]))
            # the follow-up answered again, this time starting with the label's opening
            readout = ScoreRequest(id=request.id, messages=follow.messages,
                                   prefill=FORCED_PREFILL, labels=CHOICE_LABELS)
            return Step(readout, lambda r: read(text, [first, result], verdict.error or "", r))

        def read(text: str, completions: list[Completion], error: str,
                 result: Result) -> BaseModel:
            probs = result.probs if isinstance(result, LabelScores) else None
            if probs is not None and probs[0] != probs[1]:
                label = "A>B" if probs[0] > probs[1] else "B>A"
                return finish(Outcome(label, "forced", error, text + "\n[forced]\n"
                                      + FORCED_PREFILL + label + "]]", completions, probs=probs))
            note = "A and B equally likely" if probs is not None else _note(result)
            return finish(Outcome(None, "failed", f"{error}; forced read-out: {note}", text,
                                  completions, probs=probs))

        return Step(request, judged)


__all__ = ["MetaJudge", "Outcome", "PairwiseJudge", "ReadoutPolicy", "RubricJudge",
           "completed"]
