"""Shared fixtures: the embedded model's backend is loaded once per test session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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


BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if BENCHMARKS not in sys.path:  # the instant backend, a user backend named 'module:Class'
    sys.path.insert(0, BENCHMARKS)

#: a tiny run on the instant backend: the pipeline without a model
INSTANT = ["backend.kind=instant_backend:InstantBackend", "prompts.per_iteration=4",
           "generation.samples_per_prompt=3", "judge.judgments_per_response=3",
           "runner.retry_delay_s=0", "judge.forced_readout=true",
           "meta_judge.forced_readout=true"]


@pytest.fixture
def instant_run(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A run directory on the tiny config with the instant backend, and that backend."""
    from instant_backend import InstantBackend

    from metajudge.config import load_config
    from metajudge.store import Store

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml", INSTANT)
    store = Store.open(tmp_path / "run", config)
    yield store, InstantBackend(config.backend)
    store.close()
