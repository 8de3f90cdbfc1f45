"""Label scoring on the Llama-3 chat template and tokenizer (issue 21, item 3), in-process.

A server renders a prefilled assistant turn with ``continue_final_message``; Llama-3's template
trims it, so ``"Score: "`` reaches the model as ``"Score:"``, and its tokenizer writes the space
as its own token. These tests render exactly that with the model's own tokenizer, show where a
one-token read-out then lands, and check the default read-out (the one servers get) against the
transformers backend's exact next-token distribution at the label's position.
"""

from __future__ import annotations

import pytest

from metajudge.backends.base import Backend
from metajudge.backends.transformers_local import TransformersBackend
from metajudge.config import BackendConfig
from metajudge.judging.readout import CHOICE_LABELS, SCORE_LABELS, SCORE_PREFILL, WINNER_PREFILL
from metajudge.records import LabelScores, Message, ScoreRequest

pytestmark = pytest.mark.timeout(600)

JUDGE = (Message(role="user", content="Review the answer and end with 'Score: <0-5>'.\n"
                 "Question: What is 2 + 2?\nAnswer: 4, because two and two make four."),)
PAIR = (Message(role="user", content="Which judgment is better, A or B? End with 'Winner: "
                "Judgment A' or 'Winner: Judgment B'.\nA: Correct and clear. Score: 5\n"
                "B: Wrong. Score: 0"),)


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    with TransformersBackend.from_config(BackendConfig(model="smollm2-llama3", dtype="float32")
                                         ) as b:
        yield b


def _served_prompt(backend: TransformersBackend, request: ScoreRequest) -> list[int]:
    """The token ids a chat server (vLLM) feeds the model for a prefilled request."""
    messages = [m.model_dump() for m in request.messages]
    messages.append({"role": "assistant", "content": request.prefill})
    ids = backend.tokenizer.apply_chat_template(messages, continue_final_message=True,
                                                add_generation_prompt=False, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_llama3_template_trims_the_prefill_and_the_space_is_its_own_token(
        backend: TransformersBackend) -> None:
    tok = backend.tokenizer
    pieces = [tok.decode([t]) for t in tok("Score: 4", add_special_tokens=False)["input_ids"]]
    assert pieces == ["Score", ":", " ", "4"]
    request = ScoreRequest(id="s", messages=JUDGE, prefill="Fine.\nScore: ", labels=SCORE_LABELS)
    served = _served_prompt(backend, request)
    assert tok.decode(served[-2:]) == "Score:"  # the trailing space is gone
    # the one-token read-out the backend used to make lands on the space, not on the digit
    probs = backend._next_token_probs([served])[0]
    top = int(probs.argmax())
    assert tok.decode([top]) == " "
    digits = sum(float(probs[backend._label_tokens(label)].sum()) for label in SCORE_LABELS)
    assert digits < 0.5 * float(probs[top])


@pytest.mark.parametrize(("prefill", "labels"), [
    ("Fine answer." + SCORE_PREFILL, SCORE_LABELS),  # ' ' then '4'
    ("A is right." + WINNER_PREFILL, CHOICE_LABELS),  # ' A' is one token
    ("A is right." + WINNER_PREFILL + " ", CHOICE_LABELS),  # the space merges into ' A'
])
def test_default_readout_reads_where_the_label_is_predicted(
        backend: TransformersBackend, prefill: str, labels: tuple[str, ...]) -> None:
    messages = JUDGE if labels == SCORE_LABELS else PAIR
    request = ScoreRequest(id="r", messages=messages, prefill=prefill, labels=labels)
    exact = backend.score_labels([request])[0]
    # the generation-based read-out every server gets, over the same real model and template
    served = Backend.score_labels(backend, [request])[0]
    assert isinstance(exact, LabelScores) and exact.probs is not None
    assert isinstance(served, LabelScores) and served.probs is not None, served
    assert max(range(len(labels)), key=lambda k: served.probs[k]) == \
        max(range(len(labels)), key=lambda k: exact.probs[k])  # type: ignore[index]
    # only the labels outside the top 20 alternatives differ
    assert max(abs(a - b) for a, b in zip(served.probs, exact.probs, strict=True)) < 0.05
