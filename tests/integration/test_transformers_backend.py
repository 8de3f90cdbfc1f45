"""The transformers backend on the real embedded model (SmolLM2-135M-Instruct)."""

from __future__ import annotations

import math

import torch

from metajudge.records import Completion, Failure, FailureKind, GenerationRequest, Message
from metajudge.records import SamplingParams as SP

QUESTIONS = ["What is a polygon?", "Name three fruits.", "Why is the sky blue? Be brief.",
             "Say hi", "Write one sentence about the sea, please, in a calm tone."]


def _req(i: int, text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(id=f"r{i}", messages=(Message(role="user", content=text),),
                             params=SP(**{"max_tokens": 16, **params}), seed=100 + i)


def test_results_in_input_order_with_seeded_batch_independent_samples(transformers_backend
                                                                       ) -> None:
    requests = [_req(i, q) for i, q in enumerate(QUESTIONS)]
    reported: dict[int, object] = {}
    results = transformers_backend.generate(requests, on_result=reported.__setitem__)
    assert [r.request_id for r in results] == [r.id for r in requests]
    assert sorted(reported) == list(range(len(requests)))
    assert all(isinstance(r, Completion) and r.completion_tokens > 0 for r in results)
    # the same request alone, in a batch of different company, gives the same sample
    alone = transformers_backend.generate([requests[2]])[0]
    assert alone.text == results[2].text
    # another seed gives (almost surely) another sample
    other = transformers_backend.generate([requests[2].model_copy(update={"seed": 7})])[0]
    assert other.text != results[2].text


def test_greedy_matches_plain_hf_generate(transformers_backend) -> None:
    request = _req(0, QUESTIONS[0], temperature=0.0, max_tokens=12)
    ours = transformers_backend.generate([request])[0]
    ids = torch.tensor([transformers_backend.render(request)])
    with torch.inference_mode():
        out = transformers_backend.model.generate(ids, max_new_tokens=12, do_sample=False)
    expected = transformers_backend.tokenizer.decode(out[0, ids.shape[1]:],
                                                     skip_special_tokens=True)
    assert ours.text == expected


def test_logprobs_of_generated_tokens_and_alternatives(transformers_backend) -> None:
    greedy = transformers_backend.generate(
        [_req(0, QUESTIONS[1], temperature=0.0, logprobs=True, top_logprobs=5)])[0]
    assert greedy.logprobs is not None and len(greedy.logprobs) == greedy.completion_tokens
    for step in greedy.logprobs:
        assert step.logprob <= 0 and len(step.top) == 5
        assert math.isclose(step.logprob, step.top[0].logprob, abs_tol=1e-5)  # greedy = argmax
        assert [t.logprob for t in step.top] == sorted((t.logprob for t in step.top),
                                                       reverse=True)
        assert sum(math.exp(t.logprob) for t in step.top) <= 1 + 1e-5
    sampled = transformers_backend.generate(
        [_req(1, QUESTIONS[2], temperature=1.0, logprobs=True, top_logprobs=0)])[0]
    assert sampled.logprobs is not None and all(s.top == () for s in sampled.logprobs)
    assert "".join(s.token for s in sampled.logprobs).startswith(sampled.text[:5])


def test_too_long_prompt_is_a_typed_failure_not_an_exception(transformers_backend) -> None:
    long = _req(0, "word " * 9000)
    ok = _req(1, "Say hi")
    results = transformers_backend.generate([long, ok])
    assert isinstance(results[0], Failure) and results[0].kind is FailureKind.CONTEXT_LENGTH
    assert not results[0].retryable
    assert isinstance(results[1], Completion)


def test_shared_prefix_batches_match_single_requests(transformers_backend) -> None:
    rubric = ("Rate the answer below from 0 to 5 by the following rubric, one point for each "
              "criterion it meets: relevance, coverage, usefulness, clarity and expertise. ") * 3
    answers = ["Paris is the capital of France.", "I don't know.",
               "The capital of France is Paris, a city on the Seine with about two million "
               "inhabitants."]
    requests = [_req(i, rubric + "Answer: " + a, temperature=0.0, max_tokens=12)
                for i, a in enumerate(answers)]
    prompts = [transformers_backend.render(r) for r in requests]
    from metajudge.backends.transformers_local import PREFIX_SHARE_MIN, _common_prefix_length

    assert _common_prefix_length(prompts) >= PREFIX_SHARE_MIN  # the shared path is taken
    batched = transformers_backend.generate(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = transformers_backend.generate([request])[0]
        assert result.text == alone.text


def test_repeated_prompts_computed_once_match_single_requests(transformers_backend) -> None:
    # K samples of one prompt and N judgments of one response arrive as identical prompts
    prompts = ["Name three fruits.", "Say hi", "Name three fruits.", "Say hi", "Say hi"]
    requests = [_req(i, q, temperature=0.0, max_tokens=10) for i, q in enumerate(prompts)]
    batched = transformers_backend.generate(requests)
    assert batched[0].text == batched[2].text and batched[1].text == batched[4].text
    for request, result in zip(requests, batched, strict=True):
        assert result.text == transformers_backend.generate([request])[0].text
    sampled = transformers_backend.generate([_req(i, q) for i, q in enumerate(prompts)])
    assert sampled[1].text != sampled[3].text or sampled[3].text != sampled[4].text  # seeds


def test_prefix_sharing_off_gives_the_same_outputs(transformers_backend) -> None:
    from metajudge.backends.transformers_local import TransformersBackend
    from metajudge.config import BackendConfig, TransformersOptions

    prompts = ["Rate this answer from 0 to 5. Answer: Paris.",
               "Rate this answer from 0 to 5. Answer: I don't know.", "Say hi", "Say hi"]
    requests = [_req(i, q, temperature=0.0, max_tokens=10) for i, q in enumerate(prompts)]
    plain = BackendConfig(transformers=TransformersOptions(batch_size=8, share_prefixes=False))
    with TransformersBackend(plain) as backend:
        unshared = [r.text for r in backend.generate(requests)]
    assert unshared == [r.text for r in transformers_backend.generate(requests)]
