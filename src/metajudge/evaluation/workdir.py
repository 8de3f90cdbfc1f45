"""An evaluation's output directory: its saved config, its resumable record files, its results.

Records are appended one flushed line at a time (as in a run directory), so a killed harness
loses nothing it finished and a rerun picks up where it stopped. Reopening a directory with a
different model, judge, sampling or template is refused, because the records would mix.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel

from metajudge.evaluation.config import EvalConfig
from metajudge.jsonl import Appender, read_records, write_atomic
from metajudge.stage import StageSummary
from metajudge.store import ConfigMismatchError

R = TypeVar("R", bound=BaseModel)


class EvalDir:
    def __init__(self, root: Path, config: EvalConfig):
        self.root = root
        self.config = config

    @classmethod
    def open(cls, root: str | Path, config: EvalConfig) -> EvalDir:
        root = Path(root)
        saved_path = root / "eval_config.yaml"
        if saved_path.is_file():
            saved = EvalConfig.model_validate(yaml.safe_load(saved_path.read_text("utf-8")))
            if saved != config:
                differ = [k for k in EvalConfig.model_fields
                          if getattr(saved, k) != getattr(config, k)]
                raise ConfigMismatchError(
                    f"{root} holds an evaluation with other settings ({', '.join(differ)}); "
                    "use another --out")
        else:
            root.mkdir(parents=True, exist_ok=True)
            write_atomic(saved_path, yaml.safe_dump(config.model_dump(mode="json"),
                                                    sort_keys=False))
        return cls(root, config)

    def path(self, name: str) -> Path:
        return self.root / name

    def read(self, name: str, model: type[R]) -> list[R]:
        path = self.path(f"{name}.jsonl")
        return read_records(path, model, repair_tail=True) if path.is_file() else []

    def appender(self, name: str) -> Appender:
        return Appender(self.path(f"{name}.jsonl"))

    def record_stage(self, summary: StageSummary) -> None:
        """Add a pass's work (seconds, tokens, calls, records) to ``stages.json``."""
        path = self.path("stages.json")
        stages = json.loads(path.read_text("utf-8")) if path.is_file() else {}
        previous = stages.get(summary.stage, {})
        merged = asdict(summary)
        for key in ("seconds", "prompt_tokens", "generated_tokens", "backend_calls",
                    "completed", "failed"):
            merged[key] = previous.get(key, 0) + merged[key]
        merged["passes"] = previous.get("passes", 0) + 1
        stages[summary.stage] = merged
        self.write_json("stages.json", stages)

    def write_json(self, name: str, data: Any) -> Path:
        path = self.path(name)
        write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        return path
