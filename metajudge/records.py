"""Typed, frozen records that cross stages and live on disk as JSONL.

Backend-level records (:class:`GenerationRequest`, :class:`Completion`, :class:`Failure`) describe
one call to a model; stage records (:class:`Prompt`, :class:`Response`) are what a run directory
stores, each carrying its provenance.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("instruction is empty")
    return value


#: a string with some non-whitespace text (instructions)
NonBlankText = Annotated[str, AfterValidator(_not_blank)]


class Record(BaseModel):
    """Base of every record: immutable, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- backend level


class Message(Record):
    """One chat message. ``content`` is data: it is never evaluated as a template."""

    role: Literal["system", "user", "assistant"]
    content: str


class SamplingParams(Record):
    """How to sample one completion."""

    temperature: float = Field(0.8, ge=0.0, description="0 means greedy decoding")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1, description="cap on generated tokens")
    logprobs: bool = Field(False, description="return log-probabilities of generated tokens")
    top_logprobs: int = Field(0, ge=0, le=20, description="alternatives per step, with logprobs")


class GenerationRequest(Record):
    """One completion to produce: a chat, how to sample it, and its seed."""

    id: str = Field(description="unique within a batch; results carry it back")
    messages: tuple[Message, ...] = Field(min_length=1)
    params: SamplingParams = SamplingParams()
    seed: int = Field(0, ge=0, description="per-request seed, derived from config and content")
    sample_index: int = Field(0, ge=0, description="which of the K samples of the same chat")
    prefill: str | None = Field(
        None, description="assistant text the completion continues (forced read-outs)"
    )
    guide: str | None = Field(
        None, description="a regular expression the continuation must match, for backends "
        "with structured outputs (read-outs: the prefill's trailing whitespace, then a label)")


class TopLogprob(Record):
    token: str
    logprob: float


class TokenLogprob(Record):
    """The log-probability of one generated token and of the best alternatives at that step."""

    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


class Completion(Record):
    """A finished generation."""

    request_id: str
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


class ScoreRequest(Record):
    """A label-scoring request: the next-token distribution over ``labels`` after the chat and
    the assistant text ``prefill`` (lm-evaluation-harness's idea of a scoring request, not a
    generation). Labels are told apart by their first token, compared without surrounding
    whitespace ("4" and " 4" are the same label)."""

    id: str = Field(description="unique within a batch; results carry it back")
    messages: tuple[Message, ...] = Field(min_length=1)
    prefill: str = Field(description="assistant text after which the next token is read")
    labels: tuple[str, ...] = Field(min_length=2)


class LabelScores(Record):
    """The answer to a :class:`ScoreRequest`: P(label), renormalised over the labels."""

    request_id: str
    probs: tuple[float, ...] | None = Field(
        description="one probability per label, summing to 1; None when no label had mass")
    note: str | None = Field(None, description="why probs is None")
    prompt_tokens: int = 0
    logprobs_returned: int = Field(0, description="log-probability objects the backend sent")


class FailureKind(str, Enum):
    """Why a request produced no completion."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    BAD_REQUEST = "bad_request"
    MALFORMED_RESPONSE = "malformed_response"
    CONTEXT_LENGTH = "context_length"
    BACKEND_ERROR = "backend_error"


RETRYABLE_KINDS = frozenset(
    {
        FailureKind.TIMEOUT,
        FailureKind.CONNECTION,
        FailureKind.RATE_LIMITED,
        FailureKind.SERVER_ERROR,
        FailureKind.MALFORMED_RESPONSE,
    }
)


class Failure(Record):
    """A request that ended without a completion: a value, never an exception."""

    request_id: str
    kind: FailureKind
    message: str
    retryable: bool
    attempts: int = 1


GenerationResult = Completion | Failure
LabelResult = LabelScores | Failure


class BackendFingerprint(Record):
    """Identifies what produced a record; stamped on every record a backend makes."""

    kind: str
    model: str
    revision: str | None = None
    dtype: str | None = None
    chat_template_sha256: str | None = None
    server_url: str | None = None

    def identity(self) -> dict[str, str | None]:
        """What decides whether two records come from the same model: everything but where it
        was served (a server's URL changes between runs; the weights do not). A known
        revision (a content hash) stands for the model's path."""
        return {"kind": self.kind, "model": None if self.revision else self.model,
                "revision": self.revision, "dtype": self.dtype,
                "chat_template_sha256": self.chat_template_sha256}


class Capabilities(Record):
    """What a backend can do."""

    logprobs: bool
    max_top_logprobs: int
    seeds: bool
    prefill: bool = Field(False, description="can continue a given assistant prefix")
    label_scores: bool = Field(False, description="answers ScoreRequests (Backend.score_labels)")
    guided: bool = Field(False, description="honours GenerationRequest.guide (structured "
                         "outputs), with log-probabilities over the allowed tokens")
    context_length: int | None = None


# ---------------------------------------------------------------- stage level


class Prompt(Record):
    """One user instruction from a prompt file or the bundled pool."""

    id: str = Field(min_length=1)
    instruction: NonBlankText
    source: str | None = None


class Provenance(Record):
    """Where a stage record came from."""

    backend: BackendFingerprint
    params: SamplingParams
    seed: int
    sample_index: int
    template: str | None = Field(None, description="template name@version, when one was used")
    swapped: bool | None = Field(None, description="pairwise prompts: was the order swapped")


class Response(Record):
    """One actor response to a prompt (stage ``generate``)."""

    id: str = Field(description="<prompt_id>#<sample_index>")
    prompt_id: str
    instruction: str
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    iteration: int = 1
    provenance: Provenance


#: why an adaptive stage asked for a record (SPEC §5a)
AdaptiveJudgeRule = Literal["initial", "selected", "actor", "audit"]
AdaptiveMetaRule = Literal["ring", "best", "worst", "audit"]


class FailedRequest(Record):
    """A stage request that ended in a backend failure; kept so reports can count it. An
    adaptive stage's says, like its records, which round and rule asked for it (SPEC §5a): an
    audit request that failed for good is then told from the procedure's own."""

    id: str
    stage: str
    iteration: int = 1
    failure: Failure
    provenance: Provenance
    round: int | None = Field(None, ge=0, description="adaptive stages: the round that asked")
    rule: AdaptiveJudgeRule | AdaptiveMetaRule | None = Field(
        None, description="adaptive stages: the rule that asked for it")


#: where a judge's or meta-judge's value came from: parsed from its text; ``completed`` (the
#: text had no verdict, so the template's verdict prefix and the label the model's sampler
#: draws under label scoring were appended, ``completed_text``); ``forced`` (the top label read
#: out, the text left as it was); ``failed`` (no value, with the reason)
ValueSource = Literal["parsed", "completed", "forced", "failed"]


class Judgment(Record):
    """One judge evaluation of a response (stage ``judge``)."""

    id: str = Field(description="<response_id>@j<index>")
    response_id: str
    prompt_id: str
    iteration: int
    index: int = Field(ge=0, description="which of the N judgments of this response")
    text: str = Field(description="raw judge output, kept whether or not it parsed")
    completed_text: str | None = Field(
        None, description="source completed: text + the verdict prefix + the read-out's label")
    score: float | None = Field(description="parsed score, else the read-out's (completed or "
                                "forced), else None")
    score_source: ValueSource
    parse_error: str | None = Field(None, description="why the text gave no score")
    prob_score: float | None = Field(
        None, description="expected score from log-probabilities (SPEC §3), beside `score`"
    )
    score_probs: tuple[float, ...] | None = Field(None, description="P(0..5) behind prob_score")
    readout_error: str | None = Field(
        None, description="why the probability-weighted read-out of a parsed score gave no "
        "prob_score (the read-out's note, or its request's failure)")
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    provenance: Provenance
    round: int | None = Field(None, ge=0, description="judge.adaptive: the round that asked "
                              "for it (None: the full procedure)")
    rule: AdaptiveJudgeRule | None = Field(
        None, description="judge.adaptive: why it was asked for (SPEC §5a): initial, selected "
        "(the meta-judge's response, to N), actor (could change the actor pair), audit (the "
        "full procedure on an audited prompt)")


class MetaJudgment(Record):
    """One meta-judge comparison of two judgments of the same response (stage ``meta-judge``)."""

    id: str = Field(description="<response_id>@m<first>-<second>")
    response_id: str
    prompt_id: str
    iteration: int
    first: int = Field(description="index of the judgment shown as A")
    second: int = Field(description="index of the judgment shown as B")
    winner: Literal["first", "second"] | None
    winner_source: ValueSource
    parse_error: str | None = None
    choice_probs: tuple[float, float] | None = Field(
        None, description="P(A), P(B) from a forced read-out, when one was made"
    )
    hide_scores: bool
    text: str
    completed_text: str | None = Field(
        None, description="source completed: text + the winner prefix + the read-out's label")
    prompt_tokens: int
    completion_tokens: int
    provenance: Provenance
    round: int | None = Field(None, ge=0, description="meta_judge.adaptive: the round that "
                              "asked for it (None: the full procedure)")
    rule: AdaptiveMetaRule | None = Field(
        None, description="meta_judge.adaptive: why it was asked for (SPEC §5a): ring (round "
        "0), best / worst (could change the chosen / rejected judgment), audit (the full "
        "procedure on an audited prompt)")


class MetaSelection(Record):
    """Which response of a prompt the meta-judge examines, and why (SPEC §5)."""

    id: str = Field(description="the prompt id")
    iteration: int
    response_id: str | None
    variance: float | None
    scored_judgments: int
    reason: str


class PreferencePair(Record):
    """A DPO pair: the prompt as chat messages and the chosen / rejected assistant texts."""

    id: str = Field(description="actor:<prompt_id> or judge:<response_id>")
    pair_type: Literal["actor", "judge"]
    iteration: int
    prompt_id: str
    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    chosen_score: float = Field(description="actor: mean judge score; judge: rating on the Elo "
                                "scale (400/ln 10 per logit unit, centred at 0)")
    rejected_score: float
    rho: float | None = None
    omega: tuple[float, float] | None = None
    template: str | None = None
    consistent_only: bool | None = Field(
        None, description="judge pairs: the meta_judge.consistent_only variant of the fit")


class DPORow(Record):
    """One row of ``dpo_pairs.jsonl``: TRL's conversational preference format (``prompt``,
    ``chosen``, ``rejected`` as message lists) plus provenance columns."""

    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    pair_type: Literal["actor", "judge"]
    id: str
    iteration: int
    prompt_id: str
    chosen_id: str
    rejected_id: str
    chosen_score: float
    rejected_score: float


class PairDecision(Record):
    """Why a prompt did or did not yield a pair of a given type."""

    id: str = Field(description="<pair_type>:<prompt_id>")
    pair_type: Literal["actor", "judge"]
    iteration: int
    prompt_id: str
    pair_id: str | None
    reason: str
    chosen_source: ValueSource | None = Field(
        None, description="judge pairs: where the chosen judgment's score came from (parsed, "
        "or completed when its verdict was appended)")
    requests: int | None = Field(
        None, ge=0, description="how many requests the decision took: actor, the judgments "
        "of the prompt's responses; judge, the meta-judge comparisons of its response "
        "(audit requests not counted)")


class AuditRow(Record):
    """One audited prompt (SPEC §5a): the adaptive procedure's pairs against the full
    procedure's on the same samples (``audit.jsonl``, written by the pairs stage)."""

    id: str = Field(description="the prompt id")
    iteration: int
    actor_adaptive: tuple[str, str] | None = Field(
        None, description="(chosen, rejected) response ids of the adaptive procedure")
    actor_full: tuple[str, str] | None = None
    actor_adaptive_gap: float | None = Field(
        None, description="N-judgment mean score of the adaptive chosen minus the rejected's")
    actor_full_gap: float | None = None
    judge_adaptive: tuple[str, str] | None = Field(
        None, description="(chosen, rejected) judgment ids of the adaptive procedure")
    judge_full: tuple[str, str] | None = None
    judge_adaptive_gap: float | None = Field(
        None, description="rating gap (Elo) of the adaptive pair, each judgment rated from every "
        "ordered comparison of its response, with the audit's ω")
    judge_full_gap: float | None = None
    adaptive_tokens: int = Field(description="generated tokens of the adaptive requests")
    full_tokens: int = Field(description="generated tokens of the full procedure's requests")
    adaptive_requests: int
    full_requests: int

