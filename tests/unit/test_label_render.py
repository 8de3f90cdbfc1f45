"""Label scoring renders the same prompt in-process and served (issue 27, B9).

A served read-out (vLLM's chat endpoint) sends the prefill without its trailing whitespace as a
continued assistant turn; Llama-3's template trims that turn, leading whitespace included, and
the structured-outputs guide then writes the whitespace before the label
(:func:`metajudge.backends.base.label_guide`). The transformers backend's exact read-out must
score the labels after the same tokens, or a judgment that starts with a space is scored on
another prompt. Here the served side is rebuilt from the tokenizer's own
``apply_chat_template`` (the call vLLM's chat endpoint makes) and the model's forward pass, on
``llama3-mini`` (Llama-3's template and tokenizer, random weights).
"""

from __future__ import annotations

import pytest

from metajudge.backends.base import label_guide
from metajudge.backends.transformers_local import TransformersBackend
from metajudge.config import BackendConfig
from metajudge.judging.readout import SCORE_LABELS, SCORE_PREFILL
from metajudge.records import LabelScores, Message, ScoreRequest

pytestmark = pytest.mark.timeout(600)

JUDGE = (Message(role="user", content="Review the answer and end with 'Score: <0-5>'.\n"
                 "Question: What is 2 + 2?\nAnswer: 4, because two and two make four."),)


@pytest.fixture(scope="module")
def backend() -> TransformersBackend:
    with TransformersBackend.from_config(BackendConfig(model="llama3-mini", dtype="float32")
                                         ) as b:
        yield b


def _served(backend: TransformersBackend, request: ScoreRequest) -> tuple[list[int], list[float]]:
    """The served read-out: the ids vLLM feeds the model, and the guided label distribution at
    the label's step (the guide's whitespace written, the labels renormalised)."""
    import torch

    tok = backend.tokenizer
    sent = request.prefill.rstrip()  # Backend.score_labels sends it so
    ids = tok.apply_chat_template(
        [*(m.model_dump() for m in request.messages), {"role": "assistant", "content": sent}],
        continue_final_message=True, add_generation_prompt=False, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    space = request.prefill[len(sent):]
    assert label_guide(request.prefill, request.labels).startswith(space)  # the guide writes it
    ids += tok(space, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([ids])).logits[0, -1]
    probs = torch.softmax(logits.float(), dim=-1)
    mass = [float(probs[tok.convert_tokens_to_ids(label)]) for label in request.labels]
    return ids, [m / sum(mass) for m in mass]


@pytest.mark.parametrize("judgment", [" The answer is right and clear.",  # starts with a space
                                      "The answer is right and clear.",
                                      "\n\nRight.\n"])
def test_in_process_and_served_read_outs_agree_on_llama3(
        backend: TransformersBackend, judgment: str) -> None:
    request = ScoreRequest(id="r", messages=JUDGE, prefill=judgment + SCORE_PREFILL,
                           labels=SCORE_LABELS)
    served_ids, served = _served(backend, request)
    assert backend.render(request) == served_ids  # the same tokens
    exact = backend.score_labels([request])[0]
    assert isinstance(exact, LabelScores) and exact.probs is not None
    assert max(abs(a - b) for a, b in zip(exact.probs, served, strict=True)) < 1e-4, (
        exact.probs, served)
