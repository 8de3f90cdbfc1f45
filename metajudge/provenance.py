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
  for requests that had failed, say) makes the later one's records stale too. The records a
  model made (responses, judgments, meta-judgments) also name that model, M_t, under
  ``model``: its identity (:func:`model_identity`), an input checked like any other, so that
  when iteration t-1 is retrained every file the old M_t made is stale, and so is everything
  made from them (pairs, the checkpoint).

M_t itself is handed out by :func:`iteration_model` only while it is current: the previous
iteration's checkpoint must have been trained from that iteration's current pairs and M_{t-1}.

A stage that rewrites several files whole (``pairs``: ``pairs.jsonl``, ``pair_decisions.jsonl``,
``dpo_pairs.jsonl``) is checked first (:func:`prepare`) and recorded last
(:meth:`Making.commit`), with each file's digest under ``outputs``: its files become current
together, once all are written, and a file that is not the one the stage made (an interrupted
stage, an edit) is refused by :func:`require_current`. ``--redo`` moves all of them aside.

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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from metajudge.jsonl import write_atomic
from metajudge.models import resolve_model
from metajudge.store import GENERATION, STAGE_FILES, StageFile, Store, digest
from metajudge.training.checkpoint import CHECKPOINT, MARKER, checkpoint_done, file_digest

#: a settings file's other keys beside the stage's settings (and ``generation``)
INPUTS, OUTPUTS = "inputs", "outputs"
#: the input that names the model that made a file's records (M_t)
MODEL = "model"
#: the pairs file, whose currency a checkpoint depends on
PAIRS_FILE = STAGE_FILES["pairs"]
#: the command that makes each stage file of a run (named when a stage must be redone)
MADE_BY = {"responses": "generate", "judgments": "judge", "meta_judgments": "meta-judge",
           "pairs": "pairs"}


# ------------------------------------------------------------------------ M_t
def iteration_model(store: Store, iteration: int) -> str:
    """M_t: the seed model (or the EFT checkpoint the config names) for iteration 1, else the
    previous iteration's checkpoint, refused (naming the command that retrains it) when it was
    trained from pairs or an M_{t-1} the run no longer holds."""
    if iteration == 1:
        return seed_model(store)
    previous = store.iteration_dir(iteration - 1)
    if not checkpoint_done(previous):
        raise FileNotFoundError(f"{previous / CHECKPOINT} is missing: iteration {iteration - 1} "
                                "has not finished training")
    differs = checkpoint_differs(store, iteration - 1)
    if differs:
        raise store.refuse(stale_checkpoint(store, iteration - 1, differs))
    return str(previous / CHECKPOINT)


def seed_model(store: Store) -> str:
    """M_1: ``eft.checkpoint`` when the config names one (iteration 0), else the seed model."""
    eft = store.config.eft.checkpoint
    if eft is None:
        return str(store.config.backend.model)
    path = Path(eft)
    if (path / CHECKPOINT / MARKER).is_file():
        path = path / CHECKPOINT  # an `metajudge eft --out DIR` folder
    if not (path / MARKER).is_file() and not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"eft.checkpoint {eft}: no finished checkpoint there; run "
                                "`metajudge eft` first")
    return str(path)


def model_identity(store: Store, model: str) -> str:
    """M_t as its records and checkpoints name it: a checkpoint's weights digest, or the seed
    model's name and revision (the embedded model's content hash, or the pinned
    ``backend.revision``)."""
    marker = Path(model) / MARKER
    stamp = marker.stat().st_mtime_ns if marker.is_file() else None
    return _identity(model, store.config.backend.revision, stamp)


@lru_cache(maxsize=64)
def _identity(model: str, revision: str | None, marker_stamp: int | None) -> str:
    """(cached by the marker's time: the embedded model's identity hashes its file)"""
    if marker_stamp is not None:  # a metajudge checkpoint, wherever the run directory is moved
        meta = json.loads((Path(model) / MARKER).read_text(encoding="utf-8"))
        return str(meta.get("weights_sha256") or meta.get("gguf_sha256")
                   or Path(model).resolve())
    resolved = resolve_model(model, revision)
    return f"{resolved.name}@{resolved.revision}"


def current_model(store: Store, iteration: int) -> str:
    """The identity of iteration ``iteration``'s M_t now (refused when M_t is stale)."""
    return model_identity(store, iteration_model(store, iteration))


def checkpoint_differs(store: Store, iteration: int) -> list[str]:
    """What a finished checkpoint was trained from that the run no longer holds: its pairs
    (stale, or other rows than ``dpo_pairs.jsonl``'s now) or its M_t (retrained since). A
    checkpoint made before this was recorded differs in nothing it can name."""
    require_made(store, PAIRS_FILE, iteration)
    folder = store.iteration_dir(iteration)
    meta = json.loads((folder / CHECKPOINT / MARKER).read_text(encoding="utf-8"))
    recorded = meta.get("made_from")
    if not recorded:
        return []
    pairs = store.path(STAGE_FILES["dpo_pairs"], iteration)
    now = {"model": current_model(store, iteration),
           "dpo_pairs": file_digest(pairs) if pairs.is_file() else None}
    return [key for key in ("model", "dpo_pairs") if recorded.get(key) != now[key]]


def stale_checkpoint(store: Store, iteration: int, differs: list[str]) -> str:
    folder = store.iteration_dir(iteration)
    return (f"{folder / CHECKPOINT} was trained from another {', '.join(differs)} than the "
            f"run's now (the pairs were remade, M_t retrained, or the settings changed): "
            f"`metajudge train {store.root} --iteration {iteration} --redo` trains it again")


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


def same_input(name: str, was: str | None, now: str | None) -> bool:
    """Whether a recorded input is the same now: M_t's identity (a checkpoint's weights digest
    has no ``@``) by equality, a stage file's state by :func:`same_state`.

    >>> same_input(MODEL, "87279228b19741c4", "87279228b19741c4"), same_input(
    ...     MODEL, "smollm2@abc", "smollm2@abd"), same_input("judgments", "g1", "g1@12")
    (True, False, True)
    """
    return was == now if name == MODEL else same_state(was, now)


def generation(store: Store, file: StageFile, iteration: int | None = None) -> str | None:
    """Which making of a stage file its records are (None for a file without one: not made
    yet, or made before generations were recorded)."""
    return store.generation(file, iteration)


def check(store: Store, file: StageFile, settings: dict[str, Any], iteration: int | None = None,
          *, redo: bool = False, inputs: tuple[StageFile, ...] = (),
          by_model: bool = False, together: tuple[StageFile, ...] = ()) -> str:
    """Compare a stage's settings and inputs with those its records were made under, then
    record them (records appended as they come are current from the start, and resumed);
    returns the digest of the settings. ``by_model``: the records are made by the
    iteration's M_t, whose identity is then one of the inputs. ``together``: files the stage
    makes beside its records (the meta-judge's selection), moved aside with them by ``redo``.
    Refusals are :meth:`Store.refuse`'s (a refused command's settings are never saved)."""
    return prepare(store, file, settings, iteration, redo=redo, inputs=inputs,
                   by_model=by_model, together=together).commit()


@dataclass
class Making:
    """A stage's settings, checked and not yet recorded: :meth:`commit` makes its outputs
    current, together, once they are all complete."""

    store: Store
    file: StageFile
    iteration: int | None
    record: dict[str, Any]
    outputs: tuple[StageFile, ...]
    settings_digest: str

    def commit(self) -> str:
        """Record the settings (and the digest of each output, checked by
        :func:`require_current`); returns the settings digest."""
        record = dict(self.record)
        if self.outputs:
            record[OUTPUTS] = {f.name: _output_state(self.store, f, self.iteration)
                               for f in (self.file, *self.outputs)}
        path = self.store.settings_path(self.file, self.iteration)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return self.settings_digest


def prepare(store: Store, file: StageFile, settings: dict[str, Any],
            iteration: int | None = None, *, redo: bool = False,
            inputs: tuple[StageFile, ...] = (), by_model: bool = False,
            outputs: tuple[StageFile, ...] = (), together: tuple[StageFile, ...] = ()
            ) -> Making:
    """:func:`check` for a stage that rewrites its files whole (``pairs``): it refuses as
    ``check`` does, and with ``redo`` moves aside every output (``file`` and ``outputs``) and
    the settings; nothing is recorded until :meth:`Making.commit`, after all outputs are
    written, so an interrupted stage leaves no output that looks current."""
    records = store.path(file, iteration)
    made_from = {f.name: state(store, f, iteration) for f in inputs}
    if by_model and iteration is not None:
        made_from[MODEL] = current_model(store, iteration)
    for upstream in inputs:
        require_current(store, upstream, iteration)
    if redo and any(store.path(f, iteration).is_file() for f in (file, *outputs, *together)) \
            or redo and store.settings_path(file, iteration).is_file():
        store.move_aside(file, iteration, together=outputs + together)
    saved = read(store, file, iteration)
    text = json.dumps(settings, indent=2, sort_keys=True, default=str) + "\n"
    if saved is not None:
        # a file made before generations were recorded kept its inputs' settings digests
        # under their names: they are not settings
        old = {k: v for k, v in saved.items() if k not in (GENERATION, INPUTS, OUTPUTS)
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
                 if name in made_from and not same_input(name, was, made_from[name])]
        if stale:
            raise store.refuse(_stale(records, stale))
    if saved is not None and records.is_file():  # resumed: the same making of the file
        made = saved.get(GENERATION)  # (None: made before generations were recorded)
    else:
        made = new_generation()
    return Making(store, file, iteration, {**json.loads(text), GENERATION: made,
                                           INPUTS: made_from}, outputs, digest(text))


def _output_state(store: Store, file: StageFile, iteration: int | None) -> str | None:
    path = store.path(file, iteration)
    return file_digest(path) if path.is_file() else None


def require_current(store: Store, file: StageFile, iteration: int | None = None) -> None:
    """Refuse to read a stage file made from an earlier making of one of its inputs (checking
    its own inputs first, so the first stale file up the chain is the one named), or one
    whose stage's outputs are not those it made together (an interrupted stage)."""
    saved = read(store, file, iteration) or {}
    recorded = saved.get(INPUTS) or {}
    changed = [name for name, was in (saved.get(OUTPUTS) or {}).items()
               if _output_state(store, STAGE_FILES[name], iteration) != was]
    if changed:
        path = store.path(file, iteration)
        raise store.refuse(
            f"{', '.join(f'{name}.jsonl' for name in changed)} in {path.parent} "
            f"{'is' if len(changed) == 1 else 'are'} not what the last {path.stem} stage made "
            f"(interrupted, or changed since): {_redo_command(path)} makes them again")
    stale = []
    for name, was in recorded.items():
        if name == MODEL:
            if iteration is not None and was != current_model(store, iteration):
                stale.append(name)
            continue
        upstream = STAGE_FILES.get(name) or StageFile(name, BaseModel)
        require_current(store, upstream, iteration)
        if not same_state(was, state(store, upstream, iteration)):
            stale.append(name)
    if stale:
        raise store.refuse(_stale(store.path(file, iteration), stale))


def require_made(store: Store, file: StageFile, iteration: int | None = None) -> None:
    """:func:`require_current` for a file that a stage must have finished (training's pairs):
    one without a settings file was left by a stage that stopped before it was complete."""
    path = store.path(file, iteration)
    if path.is_file() and read(store, file, iteration) is None:
        raise store.refuse(f"{path} has no {file.name}.settings.json: the stage that makes it "
                           f"stopped before it was complete; {_redo_command(path)} makes it")
    require_current(store, file, iteration)


def new_generation() -> str:
    """A new generation id: when, and a random part."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"


def _redo_command(path: Path) -> str:
    """The command that remakes a stage file."""
    command = MADE_BY.get(path.stem)
    iteration = int(path.parent.name[5:]) if path.parent.name.startswith("iter_") else None
    where = f" --iteration {iteration}" if iteration is not None else ""
    return (f"`metajudge {command} {path.parent.parent if iteration else path.parent}{where} "
            "--redo`" if command else "--redo")


def _stale(path: Path, stale: list[str]) -> str:
    iteration = int(path.parent.name[5:]) if path.parent.name.startswith("iter_") else None
    redo = _redo_command(path)
    if MODEL in stale:
        model = f"M_{iteration}" if iteration else "model"
        since = (f"iteration {iteration - 1}'s checkpoint was retrained since"
                 if iteration and iteration > 1 else "the seed model changed since")
        return (f"{path} was made by an earlier {model} ({since}): its records are stale. "
                f"Make them again with the current {model} with {redo}")
    files = " and ".join(f"{name}.jsonl" for name in stale)
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
