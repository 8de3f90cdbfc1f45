"""The run directory: resolved config, manifest, and one append-only JSONL file per stage.

Layout::

    RUN/config.yaml                 the resolved config (no secrets)
    RUN/manifest.json               version, creation time, per-stage counts and timings
    RUN/iter_01/prompts.jsonl       this iteration's prompt sample
    RUN/iter_01/responses.jsonl     stage `generate`: one Response per (prompt, sample)
    RUN/iter_01/responses.failures.jsonl   requests that ended in a backend failure

Every stage file is append-only. Reopening a run repairs a partial last line left by a kill, and
:meth:`RunStore.done_ids` tells a stage which records already exist so it never redoes them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

import metajudge
from metajudge.config import RunConfig
from metajudge.jsonl import Appender, read_records, write_atomic
from metajudge.records import FailedRequest, GenerationRequest

R = TypeVar("R", bound=BaseModel)

#: config sections whose change would make existing records inconsistent with new ones
_RECORD_SHAPING = ("seed", "backend", "prompts", "generation")


#: stage-summary fields that add up over passes
_ACCUMULATE = ("seconds", "completed", "failed", "backend_calls", "prompt_tokens",
               "generated_tokens")


class ConfigMismatchError(ValueError):
    """A run directory was created with a different config than the one given now."""


class RunStore:
    """One run directory."""

    def __init__(self, root: str | Path, config: RunConfig):
        self.root = Path(root)
        self.config = config

    @classmethod
    def open(cls, root: str | Path, config: RunConfig | None = None) -> RunStore:
        """Create a run directory, or reopen one; a given config must agree with the saved one
        on everything that shapes records (seed, backend, prompts, generation)."""
        root = Path(root)
        saved_path = root / "config.yaml"
        if saved_path.is_file():
            from metajudge.config import load_config

            saved = load_config(saved_path)
            if config is not None:
                _check_compatible(saved, config, root)
                write_atomic(saved_path, config.to_yaml())  # later stages' settings may change
            store = cls(root, config or saved)
        else:
            if config is None:
                raise FileNotFoundError(f"{root} is not a run directory (no config.yaml)")
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(saved_path, config.to_yaml())
            store = cls(root, config)
            store._write_manifest({"metajudge_version": metajudge.__version__,
                                   "created": _now(), "stages": {}})
        return store

    # ------------------------------------------------------------------ files
    def iteration_dir(self, iteration: int) -> Path:
        return self.root / f"iter_{iteration:02d}"

    def path(self, iteration: int, name: str) -> Path:
        return self.iteration_dir(iteration) / f"{name}.jsonl"

    def read(self, iteration: int, name: str, model: type[R]) -> list[R]:
        """All records of a stage file (none if it does not exist); repairs a partial tail."""
        path = self.path(iteration, name)
        if not path.is_file():
            return []
        return read_records(path, model, repair_tail=True)

    def done_ids(self, iteration: int, name: str, model: type[BaseModel]) -> set[str]:
        return {r.id for r in self.read(iteration, name, model)}  # type: ignore[attr-defined]

    def pending(self, iteration: int, name: str, model: type[BaseModel],
                requests: Sequence[GenerationRequest]) -> list[GenerationRequest]:
        """The requests of a stage still to run: neither finished in ``<name>.jsonl`` nor failed
        for good in ``<name>.failures.jsonl`` (retryable failures are tried again)."""
        done = self.done_ids(iteration, name, model)
        done |= {f.id for f in self.read(iteration, f"{name}.failures", FailedRequest)
                 if not f.failure.retryable}
        return [r for r in requests if r.id not in done]

    def appender(self, iteration: int, name: str) -> Appender:
        return Appender(self.path(iteration, name))

    # --------------------------------------------------------------- manifest
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def _write_manifest(self, data: dict[str, Any]) -> None:
        write_atomic(self.manifest_path, json.dumps(data, indent=2) + "\n")

    def record_stage(self, iteration: int, stage: str, summary: dict[str, Any]) -> None:
        """Store a stage pass's counts and timings. Work done (seconds, tokens, calls, records)
        adds up over the passes that finished; everything else is the latest pass's."""
        data = self.manifest()
        key = f"iter_{iteration:02d}/{stage}"
        previous = data.setdefault("stages", {}).get(key, {})
        merged = {**summary, "updated": _now(), "passes": previous.get("passes", 0) + 1}
        for name in _ACCUMULATE:
            if name in summary and name in previous:
                merged[name] = previous[name] + summary[name]
        data["stages"][key] = merged
        self._write_manifest(data)


def _check_compatible(saved: RunConfig, given: RunConfig, root: Path) -> None:
    old, new = saved.model_dump(mode="json"), given.model_dump(mode="json")
    diffs = [key for key in _RECORD_SHAPING if old[key] != new[key]]
    if diffs:
        raise ConfigMismatchError(
            f"{root} was created with different settings for {', '.join(diffs)}; "
            "resume with the same config (omit --config to reuse the saved one) or use a new --out"
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
