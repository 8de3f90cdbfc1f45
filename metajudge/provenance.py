"""Provenance, in one place: what a stage file's records were made under, and from which records.

The store (:mod:`metajudge.store`) holds the files; this module decides whether they are
current. It imports the store, never the other way.

``RUN/iter_01/judgments.settings.json`` holds the judge's settings (template, sampling, N,
variants) and two keys of its own:

- ``generation``: which making of ``judgments.jsonl`` its records are, an id drawn when the file
  starts (first made, or remade by ``--redo``) and kept while the stage is resumed;
- ``inputs``: which state of each stage file the records were made from
  (``{"responses": "<generation>@<bytes>"}``): its generation and its size, since records are
  only ever appended, so that a stage resumed after a later one had read it (records added
  for requests that had failed, say) makes the later one's records stale too.

A stage is refused, naming what differs, when its settings changed, when one of its inputs was
remade or grown since its records were made (their records are stale), or when an input is
itself stale
(made from an earlier making of its own inputs). ``--redo`` moves the old records aside and
makes them again; it does not cascade: after ``generate --redo`` the judge, then the meta-judge,
then the pairs refuse their records until each is redone in turn, so nothing is ever judged,
selected or paired from texts the run no longer holds.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from metajudge.jsonl import write_atomic
from metajudge.store import GENERATION, STAGE_FILES, StageFile, Store, digest

#: a settings file's other key beside the stage's settings (and ``generation``)
INPUTS = "inputs"
#: the command that makes each stage file of a run (named when a stage must be redone)
MADE_BY = {"responses": "generate", "judgments": "judge", "meta_judgments": "meta-judge",
           "pairs": "pairs"}


def read(store: Store, file: StageFile, iteration: int | None = None
         ) -> dict[str, Any] | None:
    """What a stage file's settings file holds (None when it has none)."""
    return store.settings(file, iteration)


def state(store: Store, file: StageFile, iteration: int | None = None) -> str | None:
    """A stage file as a later stage records it was made from: its generation and its size
    (None for a file without a generation)."""
    made = generation(store, file, iteration)
    if made is None:
        return None
    path = store.path(file, iteration)
    return f"{made}@{path.stat().st_size if path.is_file() else 0}"


def same_state(was: str | None, now: str | None) -> bool:
    """Whether a recorded input state is the file's now (one recorded before sizes were, a
    bare generation, is compared by generation).

    >>> same_state("g1@10", "g1@10"), same_state("g1@10", "g1@12"), same_state("g1", "g1@12")
    (True, False, True)
    """
    if was is not None and now is not None and "@" not in was:
        return now.rpartition("@")[0] == was
    return was == now


def generation(store: Store, file: StageFile, iteration: int | None = None) -> str | None:
    """Which making of a stage file its records are (None for a file without one: not made
    yet, or made before generations were recorded)."""
    return store.generation(file, iteration)


def check(store: Store, file: StageFile, settings: dict[str, Any], iteration: int | None = None,
          *, redo: bool = False, inputs: tuple[StageFile, ...] = ()) -> str:
    """Compare a stage's settings and inputs with those its records were made under, then
    record them; returns the digest of the settings. Refusals are :meth:`Store.refuse`'s
    (a refused command's settings are never saved)."""
    records = store.path(file, iteration)
    made_from = {f.name: state(store, f, iteration) for f in inputs}
    for upstream in inputs:
        require_current(store, upstream, iteration)
    if redo and (records.is_file() or store.settings_path(file, iteration).is_file()):
        store.move_aside(file, iteration)
    saved = read(store, file, iteration)
    text = json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n"
    if saved is not None:
        # a file made before generations were recorded kept its inputs' settings digests
        # under their names: they are not settings
        old = {k: v for k, v in saved.items() if k not in (GENERATION, INPUTS)
               and (INPUTS in saved or k not in made_from)}
        changed = _differences(old, json.loads(text))
        if changed:
            raise store.refuse(
                f"{records} was made with other settings: " + "; ".join(changed)
                + ". Resume with the old settings, or pass --redo to move the old records "
                "aside and make them again")
        # (an older file's inputs had no generation: they are current until remade)
        was_made_from = saved[INPUTS] if INPUTS in saved else {
            name: None for name in made_from if name in saved}
        stale = [name for name, was in (was_made_from or {}).items()
                 if name in made_from and not same_state(was, made_from[name])]
        if stale:
            raise store.refuse(_stale(records, stale))
    if saved is not None and records.is_file():  # resumed: the same making of the file
        made = saved.get(GENERATION)  # (None: made before generations were recorded)
    else:
        made = new_generation()
    path = store.settings_path(file, iteration)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({**json.loads(text), GENERATION: made, INPUTS: made_from},
                                  indent=2, sort_keys=True) + "\n")
    return digest(text)


def require_current(store: Store, file: StageFile, iteration: int | None = None) -> None:
    """Refuse to read a stage file made from an earlier making of one of its inputs (checking
    its own inputs first, so the first stale file up the chain is the one named)."""
    recorded = (read(store, file, iteration) or {}).get(INPUTS) or {}
    stale = []
    for name, was in recorded.items():
        upstream = STAGE_FILES.get(name) or StageFile(name, BaseModel)
        require_current(store, upstream, iteration)
        if not same_state(was, state(store, upstream, iteration)):
            stale.append(name)
    if stale:
        raise store.refuse(_stale(store.path(file, iteration), stale))


def new_generation() -> str:
    """A new generation id: when, and a random part."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


def _stale(path: Path, stale: list[str]) -> str:
    files = " and ".join(f"{name}.jsonl" for name in stale)
    command = MADE_BY.get(path.stem)
    where = (f" --iteration {int(path.parent.name[5:])}"
             if path.parent.name.startswith("iter_") else "")
    redo = f"`metajudge {command} RUN{where} --redo`" if command else "--redo"
    return (f"{path} was made from an earlier {files}, remade (--redo) or grown (a resumed "
            f"stage) since: its records are stale. Make them again from the current {files} "
            f"with {redo}")


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Each setting that differs, as ``name: old -> new``.

    >>> _differences({"params": {"temperature": 0.8, "top_p": 1}}, {"params": {
    ...     "temperature": 0.0, "top_p": 1}})
    ['params.temperature: 0.8 -> 0.0']
    """
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: {old!r:.80} -> {new!r:.80}"]
    return []
