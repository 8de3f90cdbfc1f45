"""Records the harnesses write, one JSONL line each, with their provenance."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from metajudge.records import Provenance, Record, ValueSource

VerdictSource = Literal["parsed", "follow_up", "forced", "failed"]


class EvalOutput(Record):
    """The evaluated model's answer to one benchmark item."""

    id: str
    instruction: str
    output: str
    generator: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    provenance: Provenance


class PairwiseGame(Record):
    """One pairwise judgment of the model's answer against the baseline's, in one order."""

    id: str = Field(description="<item id>@<game>")
    item_id: str
    model: str
    baseline: str
    model_position: Literal["A", "B"] = Field(description="where the model's answer was shown")
    verdict: str | None = Field(description="A>>B, A>B, A=B, B>A, B>>A, or None")
    verdict_source: VerdictSource
    parse_error: str | None = None
    judgment: str = Field(description="the judge's text (and its follow-up, if one was asked)")
    prompt_tokens: int
    completion_tokens: int
    provenance: Provenance

    def model_outcome(self) -> float | None:
        """1 if the model won, 0 if it lost, 0.5 for a tie, None without a verdict."""
        if self.verdict is None:
            return None
        if self.verdict == "A=B":
            return 0.5
        a_won = self.verdict.startswith("A>")
        return float(a_won == (self.model_position == "A"))


class ArenaHardV2Game(PairwiseGame):
    """One Arena-Hard v2.0 game: game 1 shows the baseline as A, game 2 the model. ``verdict``
    is what the tool's own patterns read (``parsed``) or None (``failed``): v2.0 asks no
    follow-up. Where the backend scores labels, a game without a verdict gets a forced read-out
    of A or B after ``Final verdict: [[``, kept beside it in ``forced_verdict`` (``A>B`` or
    ``B>A``) and never written into the tool's ``score``."""

    category: str
    subcategory: str
    forced_verdict: str | None = Field(None, description="A>B or B>A from the read-out")
    forced_probs: tuple[float, ...] | None = Field(None, description="P(A), P(B) read out")


class ReplyScore(Record):
    """The judge's score of one human-ranked reply."""

    id: str = Field(description="the reply's message id")
    prompt_id: str
    rank: int
    score: float | None
    score_source: ValueSource
    prob_score: float | None = Field(
        None, description="expected score from log-probabilities (SPEC §3), beside `score`; "
        "at the read-out step when forced")
    readout_error: str | None = Field(
        None, description="why the probability-weighted read-out gave no prob_score")
    parse_error: str | None = None
    judgment: str
    prompt_tokens: int
    completion_tokens: int
    provenance: Provenance


class MTBenchAnswer(Record):
    """The evaluated model's two-turn answer to one MT-Bench question."""

    id: str = Field(description="the question id, as text")
    question_id: int
    category: str
    turns: tuple[str, ...] = Field(description="the model's answer to each turn")
    finish_reasons: tuple[Literal["stop", "length"], ...]
    prompt_tokens: int
    completion_tokens: int
    provenance: Provenance


class MTBenchJudgment(Record):
    """Single-answer grading of one turn (FastChat's ``single-v1`` / ``single-math-v1`` and
    their multi-turn forms): a rating 1–10, or −1 when the judgment has none (FastChat's way)."""

    id: str = Field(description="<question id>@t<turn>")
    question_id: int
    turn: int = Field(ge=1, le=2)
    category: str
    model: str
    judge: str
    reference: bool = Field(description="graded against the GPT-4 reference answer")
    score: float = Field(description="1–10, or −1 without a parseable [[rating]]")
    score_source: Literal["parsed", "failed"]
    parse_error: str | None = None
    forced_score: float | None = Field(
        None, description="without a parsed rating: the forced read-out's most probable rating "
        "after 'Rating: [[' (judging.forced_readout); FastChat's file keeps −1")
    user_prompt: str = Field(description="the judge prompt, as FastChat records it")
    judgment: str
    prompt_tokens: int
    completion_tokens: int
    provenance: Provenance


class EFTDecision(Record):
    """Whether one human-ranked prompt's judgments are kept as EFT training examples."""

    id: str = Field(description="the prompt id")
    kept: bool
    reason: str
    replies: int
    judged_replies: int = Field(description="replies with at least one parsed judgment")
    human_ranks: tuple[int, ...] = Field(description="rank per reply (0 = best), reply order")
    judge_means: tuple[float | None, ...] = Field(description="mean parsed score per reply")
    examples: int = Field(0, description="judgments kept as training examples")
