"""Prompt sources: the bundled decontaminated pool or a user's JSONL file, and per-iteration draws.

A prompt file is JSONL with one object per line holding a non-empty ``instruction`` string and
optionally ``id`` and ``source``; other fields are ignored. Without ``id`` a prompt is named by a
hash of its text, so the same file always yields the same ids.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from metajudge.jsonl import InputError, iter_lines, parse_line
from metajudge.records import NonBlankText, Prompt

BUNDLED = "bundled"


class _PromptLine(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | int | None = None
    instruction: NonBlankText
    source: str | None = None


def bundled_pool_path() -> Path:
    """The decontaminated English prompt pool shipped with the package (see data/PROVENANCE.md)."""
    return Path(str(importlib.resources.files("metajudge") / "data" / "pool_human_en.jsonl"))


def load_prompts(source: str | Path) -> list[Prompt]:
    """Read and validate every prompt of a source; raises :class:`InputError` on a bad line."""
    path = bundled_pool_path() if str(source) == BUNDLED else Path(source)
    if not path.is_file():
        raise InputError(path, None, None, "prompt file not found")
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, raw in iter_lines(path):
        line = parse_line(path, number, raw, _PromptLine)
        pid = str(line.id) if line.id is not None else _text_id(line.instruction)
        if pid in seen:
            raise InputError(path, number, "id",
                             f"duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = number
        prompts.append(Prompt(id=pid, instruction=line.instruction, source=line.source))
    if not prompts:
        raise InputError(path, None, None, "no prompts in file")
    return prompts


def _text_id(text: str) -> str:
    return "p" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def draw_for_iteration(
    pool: list[Prompt], iteration: int, per_iteration: int, seed: int
) -> list[Prompt]:
    """Iteration ``t`` (1-based) gets the t-th slice of one seeded shuffle of the pool, so the
    iterations' samples are disjoint (drawn without replacement) and reproducible."""
    if iteration < 1:
        raise ValueError("iterations are numbered from 1")
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    start = (iteration - 1) * per_iteration
    if start + per_iteration > len(pool):
        raise ValueError(
            f"iteration {iteration} needs prompts {start + 1}..{start + per_iteration} of the "
            f"pool, which holds {len(pool)}; lower prompts.per_iteration or use a larger pool"
        )
    return [pool[i] for i in order[start : start + per_iteration]]
