"""Llama-3-style models built on this machine, for tests and miniature runs of the paper's set-up.

The paper's model is Llama-3-8B-Instruct, which nothing here can download. Two things about it
matter to this toolkit and are reproduced exactly:

- **its chat template** (:data:`LLAMA3_CHAT_TEMPLATE`, the text shipped with
  Meta-Llama-3-8B-Instruct, the same as TRL's ``chat_templates/llama3.jinja``). It trims every
  message's content, so a prefilled assistant turn loses its trailing space under
  ``continue_final_message``;
- **a tokenizer that puts the space before a digit in its own token**: ``"Score: 4"`` is
  ``'Score', ':', ' ', '4'``. The tokenizer is SmolLM2's (it splits ``' 4'`` that way too) with
  Llama-3's special tokens added: ``<|begin_of_text|>`` (bos, prepended by the tokenizer's
  post-processor as Llama-3's is), ``<|end_of_text|>``, ``<|start_header_id|>``,
  ``<|end_header_id|>`` and ``<|eot_id|>`` (eos of the chat model). No pad token, as in Llama-3.

Two models carry them (both ``LlamaForCausalLM``, float32 safetensors, loadable by transformers,
``transformers serve`` and ``vllm serve``):

``llama3-mini``
    A random-init Llama (hidden 64, 2 layers, 2 heads of 32 with 1 key-value head, untied
    embeddings as in Llama-3-8B), built from a fixed seed. About 6.4 M parameters, almost all in
    the two vocabulary matrices, so generation, DPO and ZeRO-3 on CPU are fast. Its outputs are
    noise: use it where the machinery is under test, not the model's judgement.
``smollm2-llama3``
    The embedded SmolLM2-135M-Instruct weights with the template above. The added tokens'
    embedding rows are copied from SmolLM2's ChatML counterparts (``<|start_header_id|>`` from
    ``<|im_start|>``, ``<|end_header_id|>`` from ``'\\n'``, ``<|eot_id|>`` from ``<|im_end|>``,
    both bos/end-of-text from ``<|endoftext|>``), so the model still writes text and ranks digits
    in its top-20 after ``Score: ``. Use it where a read-out must find the labels.

Each is built once into ``<models>/<name>-v<recipe>`` and published by an atomic rename; the
build is deterministic, and the revision recorded for it is the weights' SHA-256 (16 hex digits,
as for a checkpoint). The arrows run one way: :mod:`metajudge.models` resolves these names and
hands this module the folder to build in and the embedded SmolLM2 it builds from; this module
imports nothing of metajudge's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECIPE = 1  #: bump when a build changes; the folder name carries it
SEED = 20240728
MINI_MODELS = ("llama3-mini", "smollm2-llama3")

#: Meta-Llama-3-8B-Instruct's chat template, verbatim (it trims each message's content).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
BOS, END_OF_TEXT = "<|begin_of_text|>", "<|end_of_text|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
#: each added token and the SmolLM2 token whose embedding ``smollm2-llama3`` starts it from
_ADDED = {BOS: "<|endoftext|>", END_OF_TEXT: "<|endoftext|>", START_HEADER: "<|im_start|>",
          END_HEADER: "\n", EOT: "<|im_end|>"}


def mini_model_path(name: str, models: Path, smollm2: Callable[[], Path]) -> Path:
    """Build ``name`` (one of :data:`MINI_MODELS`) once into ``models`` and return its folder;
    ``smollm2`` gives the embedded SmolLM2's safetensors folder (its tokenizer, and its weights
    for ``smollm2-llama3``), called only when the model is built."""
    if name not in MINI_MODELS:
        raise ValueError(f"unknown mini model {name!r}; choose one of {', '.join(MINI_MODELS)}")
    target = models / f"{name}-v{RECIPE}"
    if (target / "model.safetensors").is_file() and (target / "metajudge.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    tmp.chmod(0o755)
    try:
        log.info("building %s in %s (once)", name, target)
        _build(name, tmp, smollm2())
        digest = _sha256(tmp / "model.safetensors")[:16]  # as a checkpoint's weights_digest
        (tmp / "metajudge.json").write_text(json.dumps(
            {"source": f"metajudge.mini_llama {name} recipe {RECIPE} seed {SEED}",
             "weights_sha256": digest}))
        try:
            tmp.rename(target)  # atomic: a concurrent builder either wins or finds it done
        except OSError:
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def llama3_tokenizer(source: str | Path) -> Any:
    """SmolLM2's tokenizer at ``source`` with Llama-3's special tokens, bos and chat template."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AddedToken, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source))
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in _ADDED])
    tok.bos_token, tok.eos_token, tok.pad_token = BOS, EOT, None
    tok.unk_token = None
    bos_id = tok.convert_tokens_to_ids(BOS)
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    tok.chat_template = LLAMA3_CHAT_TEMPLATE
    return tok


def _build(name: str, out: Path, smollm2: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = llama3_tokenizer(smollm2)
    ids = {t: tok.convert_tokens_to_ids(t) for t in _ADDED}
    if name == "llama3-mini":
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            max_position_embeddings=8192, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
            tie_word_embeddings=False, bos_token_id=ids[BOS], eos_token_id=ids[EOT],
            pad_token_id=None, initializer_range=0.02, dtype="float32")
        torch.manual_seed(SEED)
        model: Any = LlamaForCausalLM(config)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype=torch.float32)
        model.resize_token_embeddings(len(tok), mean_resizing=False)
        with torch.no_grad():
            emb: Any = model.get_input_embeddings().weight
            base = tok.__class__.from_pretrained(str(smollm2))
            for added, like in _ADDED.items():
                source = base.convert_tokens_to_ids(like) if like.startswith("<") else \
                    base(like, add_special_tokens=False)["input_ids"][0]
                emb[ids[added]] = emb[source]
        model.config.bos_token_id, model.config.eos_token_id = ids[BOS], ids[EOT]
        model.config.pad_token_id = None
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS], eos_token_id=[ids[EOT], ids[END_OF_TEXT]])
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
