"""Shared fixtures: the embedded model's backend is loaded once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metajudge.config import BackendConfig, TransformersOptions


@pytest.fixture(scope="session")
def embedded_model_dir() -> str:
    from metajudge.models import resolve_model

    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def transformers_backend(embedded_model_dir: str) -> Iterator[object]:
    from metajudge.backends.transformers_local import TransformersBackend

    with TransformersBackend(BackendConfig(transformers=TransformersOptions(batch_size=8))) as b:
        yield b
