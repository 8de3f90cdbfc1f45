"""In-process generation with Hugging Face transformers.

Requests are rendered with the model's chat template, sorted by prompt length and generated in
left-padded batches. Sampling is seeded per request (Gumbel-max over temperature- and top-p-shaped
logits, one generator per row), so a request's sample does not depend on which other requests
share its batch. Optionally records the log-probability of every generated token and of the top
alternatives, from the model's raw distribution.

    backend = TransformersBackend.from_config(BackendConfig(model="smollm2-135m-instruct"))
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

from metajudge.backends.base import (
    Backend,
    LabelCallback,
    ResultCallback,
    check_unique_ids,
    normalised,
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
    LabelResult,
    LabelScores,
    ScoreRequest,
    TokenLogprob,
    TopLogprob,
)

log = logging.getLogger(__name__)
#: shortest common prompt prefix worth computing once for a whole batch
PREFIX_SHARE_MIN = 32
torch = require("torch", "transformers")
transformers = require("transformers", "transformers")


class _SeededSampler(transformers.LogitsProcessor):  # type: ignore[misc,name-defined]
    """Turns greedy decoding into exact per-row seeded sampling (Gumbel-max trick)."""

    def __init__(self, requests: Sequence[GenerationRequest]):
        self.temperature = torch.tensor([r.params.temperature for r in requests])
        self.top_p = torch.tensor([r.params.top_p for r in requests])
        self.generators = [torch.Generator().manual_seed(r.seed) for r in requests]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        scores = scores.float()
        greedy = self.temperature == 0
        if bool(greedy.all()):
            return scores
        temp = torch.where(greedy, torch.ones_like(self.temperature), self.temperature)
        logits = scores / temp.to(scores.device)[:, None]
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= self.top_p.to(scores.device)[:, None]
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        noisy = logits + gumbel.to(scores.device)
        return torch.where(greedy.to(scores.device)[:, None], scores, noisy)


class _LogprobRecorder(transformers.LogitsProcessor):  # type: ignore[misc,name-defined]
    """Keeps, per step, the raw log-probability of the chosen token and the top-k alternatives."""

    def __init__(self, top_k: int):
        self.top_k = top_k
        self._pending: Any = None
        self.chosen: list[Any] = []  # per step: (batch,) logprobs of the chosen tokens
        self.top: list[tuple[Any, Any]] = []  # per step: (values, indices), each (batch, k)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self._pending is not None:
            self._commit(input_ids[:, -1])
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        self._pending = logprobs
        if self.top_k:
            values, indices = logprobs.topk(self.top_k, dim=-1)
            self.top.append((values.cpu(), indices.cpu()))
        return scores

    def _commit(self, tokens: Any) -> None:
        self.chosen.append(self._pending.gather(1, tokens[:, None])[:, 0].cpu())
        self._pending = None

    def finish(self, last_tokens: Any) -> None:
        if self._pending is not None:
            self._commit(last_tokens)


class TransformersBackend(Backend):
    kind = "transformers"

    def __init__(self, config: BackendConfig):
        resolved = resolve_model(config.model, config.revision)
        opts = config.transformers
        device = opts.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = _pick_dtype(config.dtype, device)
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(
            resolved.path, revision=resolved.revision if not resolved.local else None,
            trust_remote_code=config.trust_remote_code,
        )
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model: Any = None  # loaded on first use: a run with nothing left to do skips it
        self._load_args = dict(
            path=resolved.path, revision=None if resolved.local else resolved.revision,
            dtype=dtype, trust_remote_code=config.trust_remote_code,
        )
        self._device = device
        self._batch_size = opts.batch_size
        self._share = opts.share_prefixes
        model_config = transformers.AutoConfig.from_pretrained(
            resolved.path, revision=self._load_args["revision"],
            trust_remote_code=config.trust_remote_code,
        )
        self._eos = _eos_ids(model_config, self._tokenizer, resolved.path)
        self._context = getattr(model_config, "max_position_embeddings", None)
        self._token_text: dict[int, str] = {}
        self._vocab_text: list[str] = []
        self._labels: dict[str, list[int]] = {}
        self._fingerprint = BackendFingerprint(
            kind=self.kind, model=config.model, revision=resolved.revision,
            dtype=str(dtype).removeprefix("torch."),
            chat_template_sha256=sha256_text(self._tokenizer.chat_template),
        )

    @classmethod
    def from_config(cls, config: BackendConfig) -> TransformersBackend:
        return cls(config)

    @property
    def fingerprint(self) -> BackendFingerprint:
        return self._fingerprint

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(logprobs=True, max_top_logprobs=20, seeds=True, prefill=True,
                            label_scores=True, context_length=self._context)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def model(self) -> Any:
        """The loaded model (loads it on first access)."""
        if self._model is None:
            args = self._load_args
            self._model = transformers.AutoModelForCausalLM.from_pretrained(
                args["path"], revision=args["revision"], dtype=args["dtype"],
                use_safetensors=True, trust_remote_code=args["trust_remote_code"],
            ).to(self._device)
            self._model.eval()
        return self._model

    def score_labels(
        self, requests: Sequence[ScoreRequest], on_result: LabelCallback | None = None
    ) -> list[LabelResult]:
        """The exact next-token distribution over each request's labels: one forward pass per
        batch after its prefill (with the batch's common prefix computed once), the mass of
        every vocabulary token that reads as a label (``"4"``, ``" 4"``) summed, renormalised
        over the labels. No text is generated."""
        check_unique_ids(requests)
        results: list[LabelResult | None] = [None] * len(requests)

        def emit(index: int, result: LabelResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        encoded: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            if request.prefill[-1:].isspace() and any(self._merges_space(label)
                                                      for label in request.labels):
                # the tokenizer writes " A" as one token: read where that token starts
                request = request.model_copy(update={"prefill": request.prefill.rstrip()})
            ids = self.render(request)
            if self._context and len(ids) + 1 > self._context:
                emit(i, Failure(request_id=request.id, kind=FailureKind.CONTEXT_LENGTH,
                                retryable=False,
                                message=f"prompt of {len(ids)} tokens > {self._context}"))
            else:
                encoded[i] = ids
        order = sorted(encoded, key=lambda i: encoded[i]) if self._share else list(encoded)
        for start in range(0, len(order), self._batch_size):
            batch = order[start:start + self._batch_size]
            try:
                probs = self._next_token_probs([encoded[i] for i in batch])
            except (RuntimeError, ValueError) as exc:
                log.warning("transformers scoring batch of %d failed: %s", len(batch), exc)
                for i in batch:
                    emit(i, Failure(request_id=requests[i].id, kind=FailureKind.BACKEND_ERROR,
                                    retryable=True, message=str(exc)[:500]))
                continue
            for row, i in enumerate(batch):
                labels = requests[i].labels
                mass = [float(probs[row, self._label_tokens(label)].sum()) for label in labels]
                dist = normalised(mass)
                emit(i, LabelScores(request_id=requests[i].id, probs=dist,
                                    note=None if dist else "no probability mass on the labels",
                                    prompt_tokens=len(encoded[i]),
                                    logprobs_returned=len(labels)))
        return [r for r in results if r is not None]

    def _next_token_probs(self, prompts: list[list[int]]) -> Any:
        """P(next token) after each prompt, (batch, vocabulary), float32."""
        input_ids, attention, cache = self._prepare_inputs(prompts)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            if cache is None:
                logits = self.model(input_ids=input_ids, attention_mask=attention,
                                    position_ids=positions).logits[:, -1]
            else:
                logits = self.model(input_ids=input_ids[:, -1:], attention_mask=attention,
                                    position_ids=positions[:, -1:], past_key_values=cache,
                                    use_cache=True).logits[:, -1]
        return torch.softmax(logits.float(), dim=-1).cpu()

    def _label_tokens(self, label: str) -> list[int]:
        """Every vocabulary token that reads as ``label`` without surrounding whitespace."""
        if label not in self._labels:
            if not self._vocab_text:
                self._vocab_text = [self._text(t).strip() for t in range(len(self._tokenizer))]
            self._labels[label] = [t for t, text in enumerate(self._vocab_text) if text == label]
        return self._labels[label]

    def _merges_space(self, label: str) -> bool:
        """Whether some token reads as whitespace followed by ``label``."""
        return any(self._text(t) != label for t in self._label_tokens(label))

    def render(self, request: GenerationRequest | ScoreRequest) -> list[int]:
        """Token ids of the chat-templated prompt, ready for generation.

        A prefill is rendered as chat servers (vLLM) render it: the last assistant turn
        continued (``continue_final_message``), so a template that trims its turns (Llama 3's,
        Gemma's) trims the prefill here too, and in-process and served runs see the same
        prompt. A scoring request is rendered as the served read-out sends it (the prefill
        without its trailing whitespace, continued; :meth:`Backend.score_labels`), followed by
        that whitespace's own tokens, as the served continuation writes it before the label:
        the exact read-out is taken right after them. So a judgment that starts with a space
        is scored on the same tokens in-process and served."""
        messages = [m.model_dump() for m in request.messages]
        head, tail = request.prefill or "", ""
        if isinstance(request, ScoreRequest):
            head = request.prefill.rstrip()
            tail = request.prefill[len(head):]
        text = None
        if head:
            try:
                text = self._tokenizer.apply_chat_template(
                    [*messages, {"role": "assistant", "content": head}],
                    continue_final_message=True, add_generation_prompt=False, tokenize=False)
            except ValueError:  # a template that rewrites the turn: append the prefill
                text = None
        if text is None:
            text = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                       tokenize=False) + head
        ids = list(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        if tail:
            ids += self._tokenizer(tail, add_special_tokens=False)["input_ids"]
        return ids

    def generate(
        self, requests: Sequence[GenerationRequest], on_result: ResultCallback | None = None
    ) -> list[GenerationResult]:
        check_unique_ids(requests)
        results: list[GenerationResult | None] = [None] * len(requests)

        def emit(index: int, result: GenerationResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        encoded: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            ids = self.render(request)
            if self._context and len(ids) + request.params.max_tokens > self._context:
                emit(i, Failure(request_id=request.id, kind=FailureKind.CONTEXT_LENGTH,
                                retryable=False, message=f"prompt of {len(ids)} tokens + "
                                f"max_tokens {request.params.max_tokens} > {self._context}"))
            else:
                encoded[i] = ids
        # one batch shape per (max_tokens, logprobs) group; within a group prompts are ordered by
        # their tokens, so batches gather prompts that share long prefixes (computed once)
        def key(i: int) -> tuple[int, int, int, list[int]]:
            p = requests[i].params
            return (p.max_tokens, int(p.logprobs), p.top_logprobs, encoded[i])

        order = sorted(encoded, key=key if self._share else lambda i: key(i)[:3])
        start = 0
        while start < len(order):
            group = key(order[start])[:3]
            batch = [order[start]]
            while (len(batch) < self._batch_size and start + len(batch) < len(order)
                   and key(order[start + len(batch)])[:3] == group):
                batch.append(order[start + len(batch)])
            start += len(batch)
            try:
                outputs = self._generate_batch([requests[i] for i in batch],
                                               [encoded[i] for i in batch])
            except (RuntimeError, ValueError) as exc:  # e.g. out of memory: the batch fails
                log.warning("transformers batch of %d failed: %s", len(batch), exc)
                outputs = [Failure(request_id=requests[i].id, kind=FailureKind.BACKEND_ERROR,
                                   retryable=True, message=str(exc)[:500]) for i in batch]
            for i, result in zip(batch, outputs, strict=True):
                emit(i, result)
        return [r for r in results if r is not None]

    def _generate_batch(
        self, requests: list[GenerationRequest], prompts: list[list[int]]
    ) -> list[GenerationResult]:
        params = requests[0].params
        processors = transformers.LogitsProcessorList()
        recorder = _LogprobRecorder(params.top_logprobs) if params.logprobs else None
        if recorder is not None:
            processors.append(recorder)
        processors.append(_SeededSampler(requests))
        gen_config = transformers.GenerationConfig(
            do_sample=False, max_new_tokens=params.max_tokens, eos_token_id=self._eos,
            pad_token_id=self._tokenizer.pad_token_id, num_beams=1,
        )
        input_ids, attention, cache = self._prepare_inputs(prompts)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            sequences = self.model.generate(
                input_ids=input_ids, attention_mask=attention, generation_config=gen_config,
                logits_processor=processors, past_key_values=cache,
            )
        generated = sequences[:, input_ids.shape[1]:].cpu()
        if recorder is not None:
            recorder.finish(generated[:, -1].to(self._device))
        out: list[GenerationResult] = []
        for row, request in enumerate(requests):
            tokens = generated[row].tolist()
            length, stopped = len(tokens), False
            for pos, token in enumerate(tokens):
                if token in self._eos:
                    length, stopped = pos + 1, True
                    break
            text_ids = tokens[: length - 1] if stopped else tokens[:length]
            out.append(Completion(
                request_id=request.id,
                text=self._tokenizer.decode(text_ids, skip_special_tokens=True),
                finish_reason="stop" if stopped else "length",
                prompt_tokens=len(prompts[row]),
                completion_tokens=length,
                logprobs=self._logprobs(recorder, row, tokens[:length]) if recorder else None,
            ))
        return out

    def _prepare_inputs(self, prompts: list[list[int]]) -> tuple[Any, Any, Any]:
        """Batch the prompts and pre-compute what rows have in common.

        When the prompts share a long common prefix (a rubric), its key/value cache is computed
        once for the batch and each row's remainder is padded in the middle (masked, positions
        exact); identical prompts (the K samples or N judgments of one chat) are computed once
        and their cache copied. Returns input ids, attention mask and the cache (or None)."""
        pad = self._tokenizer.pad_token_id
        if not self._share:
            width = max(len(p) for p in prompts)
            return (torch.tensor([[pad] * (width - len(p)) + p for p in prompts],
                                 device=self._device),
                    torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                                 device=self._device), None)
        shared = _common_prefix_length(prompts)
        shared = shared if shared >= PREFIX_SHARE_MIN and len(prompts) > 1 else 0
        shared = min(shared, min(len(p) for p in prompts) - 1)  # every row keeps a token
        width = max(len(p) for p in prompts) - shared
        prefix = prompts[0][:shared]
        ids = [prefix + [pad] * (width - len(p) + shared) + p[shared:] for p in prompts]
        mask = [[1] * shared + [0] * (width - len(p) + shared) + [1] * (len(p) - shared)
                for p in prompts]
        first_of: dict[tuple[int, ...], int] = {}
        unique = [first_of.setdefault(tuple(p), i) for i, p in enumerate(prompts)]
        rows = sorted(set(unique))
        if not shared and len(rows) == len(prompts):
            return (torch.tensor(ids, device=self._device),
                    torch.tensor(mask, device=self._device), None)
        cache = transformers.DynamicCache()
        ids_t = torch.tensor(ids, device=self._device)
        mask_t = torch.tensor(mask, device=self._device)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            if shared:
                self.model(input_ids=ids_t[:1, :shared], past_key_values=cache, use_cache=True)
                cache.batch_repeat_interleave(len(rows))
            # the rest of each distinct prompt but its last token (generate feeds that one)
            sub_ids, sub_mask = ids_t[rows], mask_t[rows]
            positions = (sub_mask.cumsum(-1) - 1).clamp(min=0)
            end = sub_ids.shape[1] - 1
            if end > shared:
                self.model(input_ids=sub_ids[:, shared:end], attention_mask=sub_mask[:, :end],
                           position_ids=positions[:, shared:end], past_key_values=cache,
                           use_cache=True)
        if len(rows) < len(prompts):
            index = {row: k for k, row in enumerate(rows)}
            cache.batch_select_indices(torch.tensor([index[u] for u in unique],
                                                    device=self._device))
        return ids_t, mask_t, cache

    def _logprobs(self, recorder: _LogprobRecorder, row: int, tokens: list[int]
                  ) -> tuple[TokenLogprob, ...]:
        steps = []
        for step, token in enumerate(tokens):
            top: tuple[TopLogprob, ...] = ()
            if recorder.top_k:
                values, indices = recorder.top[step]
                top = tuple(TopLogprob(token=self._text(int(t)), logprob=float(v))
                            for v, t in zip(values[row], indices[row], strict=True))
            steps.append(TokenLogprob(token=self._text(token),
                                      logprob=float(recorder.chosen[step][row]), top=top))
        return tuple(steps)

    def _text(self, token_id: int) -> str:
        if token_id not in self._token_text:
            self._token_text[token_id] = self._tokenizer.decode([token_id])
        return self._token_text[token_id]

    def close(self) -> None:
        if getattr(self, "_model", None) is not None:
            self._model = None
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _common_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the token prefix that every prompt starts with.

    >>> _common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
    2
    """
    first = prompts[0]
    length = min(len(p) for p in prompts)
    for i in range(length):
        if any(p[i] != first[i] for p in prompts):
            return i
    return length


def _pick_dtype(name: str, device: str) -> Any:
    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _eos_ids(model_config: Any, tokenizer: Any, path: str) -> list[int]:
    try:
        eos = transformers.GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # no generation_config.json
        eos = model_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)
