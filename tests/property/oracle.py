"""The run's invariants, re-derived from the run directory's files alone (issue 27 C).

This module never calls metajudge: it reads the JSONL files, the settings files, the
manifest, ``summary.csv`` and the checkpoints' markers and weights as a user would, and says
what is wrong with them. The property test (``test_run_invariants.py``) calls it after every
command of a random sequence.

Invariants (each a function below, returning a list of violations):

- :func:`integrity`, after every command: each stage file parses, line by line (a last line
  without its newline, left by a kill, is allowed: the store repairs it on reopening), and
  holds no id twice.
- :func:`lost_records`, after every command: every record a stage file held before the command
  is still in it, or (when the command remade it) in a ``replaced/`` copy; every
  ``replaced/`` copy is still there, unchanged.
- :func:`current_files`, after every command that succeeded (exit 0), for the files that
  command called current (its inputs, its outputs, and M_t's own chain: the checkpoint it
  starts from and everything that checkpoint was trained on): every record was made by that
  iteration's M_t (its fingerprint's revision, and the revision its text names, are M_t's
  weights' digest), under the file's recorded settings (sampling parameters, template,
  N and K), from the current generation of each input (the settings file's recorded input
  states are the inputs' current generation and size, and each judgment names the digest of
  a response text the current responses file holds), and nothing is missing (K responses per
  prompt, N judgments per response); every ``pairs.jsonl`` row is derivable from current
  records, every ``dpo_pairs.jsonl`` row is a current pair of a type the iteration trains on;
  a checkpoint was trained from M_t on exactly the current ``dpo_pairs.jsonl``.
- :func:`manifest_counts`, with the files a successful command called current: the
  manifest's counts for them equal the files' (records made, pairs by type, training pairs).
- :func:`summary_rows` and :func:`tracker_rows`, after a ``run`` that wrote ``summary.csv``:
  each iteration's row counts what the files hold, a row that does not say its records are
  stale (``stale`` column) reports current files only, an alarm the run reported is flagged in
  its row, and the tensorboard summary holds the rows' numbers once each, none of a stale row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.property.weights_backend import text_digest

STAGE_FILES = ("prompts", "responses", "judgments", "meta_selection", "meta_judgments",
               "pairs", "pair_decisions", "dpo_pairs")
#: the stage files that grow by appending (kept across resumes, moved aside by --redo)
APPENDED = ("responses", "judgments", "meta_judgments")
#: manifest stage name of each appended file
STAGE_OF = {"responses": "generate", "judgments": "judge", "meta_judgments": "meta-judge"}
#: the inputs each stage file is made from
INPUTS = {"responses": (), "judgments": ("responses",),
          "meta_judgments": ("judgments",), "pairs": ("responses", "judgments",
                                                      "meta_judgments")}


# ------------------------------------------------------------------------ reading
def lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSONL file as objects (a partial last line is left out)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]
    return [json.loads(raw) for raw in complete.splitlines() if raw.strip()]


def settings(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.settings.json"
    return json.loads(path.read_text()) if path.is_file() else None


def sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def weights_digest(folder: Path) -> str | None:
    """The digest of a model folder's safetensors weights (None without any)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def state(folder: Path, name: str) -> str | None:
    """A stage file as a later stage must have recorded it: ``<generation>@<bytes>``."""
    saved = settings(folder, name)
    if saved is None or saved.get("generation") is None:
        return None
    path = folder / f"{name}.jsonl"
    return f"{saved['generation']}@{path.stat().st_size if path.is_file() else 0}"


def config(run: Path) -> dict[str, Any]:
    return yaml.safe_load((run / "config.yaml").read_text()) or {}


def iteration_dir(run: Path, t: int) -> Path:
    return run / f"iter_{t:02d}"


def scheduled(pair_types: list[list[str]], t: int) -> list[str]:
    """The pair types of iteration t (the last entry repeats)."""
    return list(pair_types[min(t, len(pair_types)) - 1])


@dataclass
class Seed:
    """Where M_1 comes from: the seed model's weights digest, and where EFT folders are."""

    seed_revision: str


def model_revision(run: Path, t: int, seed: Seed) -> str | None:
    """M_t's weights digest, from the files: M_1 is ``eft.checkpoint``'s model when the saved
    config names one, else the seed; M_t is iteration t-1's finished checkpoint (None when
    there is none)."""
    if t == 1:
        eft = (config(run).get("eft") or {}).get("checkpoint")
        if not eft:
            return seed.seed_revision
        folder = Path(eft) / "checkpoint"
        folder = folder if (folder / "metajudge.json").is_file() else Path(eft)
        return weights_digest(folder)
    folder = iteration_dir(run, t - 1) / "checkpoint"
    return weights_digest(folder) if (folder / "metajudge.json").is_file() else None


# --------------------------------------------------------------------- invariants
def integrity(run: Path) -> list[str]:
    """Each stage file parses and holds no id twice."""
    problems = []
    for folder in sorted(run.glob("iter_*")):
        for name in STAGE_FILES:
            path = folder / f"{name}.jsonl"
            try:
                ids = Counter(str(row.get("id")) for row in lines(path))
            except ValueError as exc:
                problems.append(f"{path}: does not parse ({exc})")
                continue
            twice = sorted(i for i, n in ids.items() if n > 1)
            if twice:
                problems.append(f"{path}: {len(twice)} ids twice, e.g. {twice[0]}")
    return problems


@dataclass
class Snapshot:
    """The ids of each appended file and the bytes of every replaced/ copy, before a step."""

    ids: dict[Path, set[str]] = field(default_factory=dict)
    generations: dict[Path, str | None] = field(default_factory=dict)
    replaced: dict[Path, str] = field(default_factory=dict)

    @classmethod
    def take(cls, run: Path) -> Snapshot:
        snap = cls()
        for folder in sorted(run.glob("iter_*")):
            for name in APPENDED:
                path = folder / f"{name}.jsonl"
                snap.ids[path] = {str(r["id"]) for r in lines(path)}
                snap.generations[path] = (settings(folder, name) or {}).get("generation")
            for copy in folder.glob("replaced/*/*.jsonl"):
                snap.replaced[copy] = sha16(copy)
        return snap


def lost_records(before: Snapshot, run: Path) -> list[str]:
    """No record lost: kept in its file, or in a replaced/ copy; replaced/ copies kept."""
    problems = []
    for copy, digest in before.replaced.items():
        if not copy.is_file() or sha16(copy) != digest:
            problems.append(f"{copy}: a moved-aside copy was overwritten or removed")
    for path, ids in before.ids.items():
        if not ids:
            continue
        now = {str(r["id"]) for r in lines(path)}
        if ids <= now:
            continue
        copies = [c for c in path.parent.glob(f"replaced/{path.stem}-*/{path.name}")
                  if c not in before.replaced]
        if not any(ids <= {str(r["id"]) for r in lines(c)} for c in copies):
            missing = sorted(ids - now)
            problems.append(f"{path}: {len(missing)} records gone, in no new replaced/ copy "
                            f"(e.g. {missing[0]})")
    return problems


def _check_file(run: Path, t: int, name: str, seed: Seed) -> list[str]:
    """A current appended file of iteration t: M_t's, under its settings, from current inputs,
    complete."""
    folder = iteration_dir(run, t)
    path = folder / f"{name}.jsonl"
    saved = settings(folder, name)
    if saved is None or not path.is_file():
        return [f"{path}: called current, but it (or its settings file) does not exist"]
    problems = []
    revision = model_revision(run, t, seed)
    rows = lines(path)
    if revision is None:
        problems.append(f"{path}: called current, but M_{t} (iteration {t - 1}'s checkpoint) "
                        "does not exist")
    made_by = Counter(r["provenance"]["backend"].get("revision") for r in rows)
    named = Counter(r["text"][1:17] for r in rows)
    for source, counts in (("fingerprint", made_by), ("text", named)):
        others = {k: v for k, v in counts.items() if k != revision}
        if revision is not None and others:
            problems.append(f"{path}: {sum(others.values())} of {len(rows)} records made by "
                            f"another model than M_{t} ({revision}), by their {source}: "
                            f"{sorted(others)}")
    params = saved.get("params")
    off = [r["id"] for r in rows if params is not None and r["provenance"]["params"]
           != {**r["provenance"]["params"], **params}]
    if off:
        problems.append(f"{path}: {len(off)} records made with other sampling parameters "
                        f"than its settings file's, e.g. {off[0]}")
    template = saved.get("template")
    off = [r["id"] for r in rows if template and r["provenance"].get("template") != template]
    if off:
        problems.append(f"{path}: {len(off)} records of another template than {template}")
    for upstream in INPUTS.get(name, ()):
        was = (saved.get("inputs") or {}).get(upstream)
        now = state(folder, upstream)
        if was != now:
            problems.append(f"{path}: made from {upstream}.jsonl as {was}, which is {now} now "
                            "(remade or grown since)")
    if name == "responses":
        k = saved.get("samples_per_prompt")
        prompts = {p["id"] for p in lines(folder / "prompts.jsonl")}
        per = Counter(r["prompt_id"] for r in rows)
        if k and (set(per) != prompts or any(n != k for n in per.values())):
            problems.append(f"{path}: not {k} responses for each of the {len(prompts)} prompts "
                            f"({dict(per)})")
    if name == "judgments":
        n = saved.get("judgments_per_response")
        texts = {r["id"]: r["text"] for r in lines(folder / "responses.jsonl")}
        per = Counter(r["response_id"] for r in rows)
        if n and (set(per) != set(texts) or any(v != n for v in per.values())
                  or any(r["index"] >= n for r in rows)):
            problems.append(f"{path}: not judgments 0..{n - 1} of each of the {len(texts)} "
                            "current responses")
        stale = [r["id"] for r in rows if r["response_id"] not in texts
                 or f"{{response {text_digest(texts[r['response_id']])}}}" not in r["text"]]
        if stale:
            problems.append(f"{path}: {len(stale)} judgments of a response text the current "
                            f"responses.jsonl does not hold, e.g. {stale[0]}")
    if name == "meta_judgments":
        judged = {(r["response_id"], r["index"]) for r in lines(folder / "judgments.jsonl")}
        stale = [r["id"] for r in rows if (r["response_id"], r["first"]) not in judged
                 or (r["response_id"], r["second"]) not in judged]
        if stale:
            problems.append(f"{path}: {len(stale)} comparisons of judgments the current "
                            f"judgments.jsonl does not hold, e.g. {stale[0]}")
    return problems


def _check_pairs(run: Path, t: int, seed: Seed) -> list[str]:
    """Current pairs: made from current records, every row derivable from them."""
    folder = iteration_dir(run, t)
    saved = settings(folder, "pairs")
    if saved is None:
        return [f"{folder}/pairs.settings.json: pairs called current but never made"]
    types = list(saved.get("pair_types") or ["actor", "judge"])
    problems = _check_file(run, t, "responses", seed) + _check_file(run, t, "judgments", seed)
    if "judge" in types:
        problems += _check_file(run, t, "meta_judgments", seed)
    for upstream in ("responses", "judgments") + (("meta_judgments",) if "judge" in types
                                                  else ()):
        was = (saved.get("inputs") or {}).get(upstream)
        if was != state(folder, upstream):
            problems.append(f"{folder}/pairs.jsonl: made from {upstream}.jsonl as {was}, "
                            f"which is {state(folder, upstream)} now")
    responses = {r["id"]: r for r in lines(folder / "responses.jsonl")}
    judgments = {r["id"]: r for r in lines(folder / "judgments.jsonl")}
    pairs = {p["id"]: p for p in lines(folder / "pairs.jsonl")}
    for pair in pairs.values():
        if pair["pair_type"] == "actor":
            chosen, rejected = responses.get(pair["chosen_id"]), responses.get(pair["rejected_id"])
            if chosen is None or rejected is None or chosen["text"] != pair["chosen"] \
                    or rejected["text"] != pair["rejected"]:
                problems.append(f"{folder}/pairs.jsonl: actor pair {pair['id']} is not made of "
                                "current responses")
                continue
            for side, response in (("chosen", chosen), ("rejected", rejected)):
                scores = [j["score"] for j in judgments.values()
                          if j["response_id"] == response["id"] and j["score"] is not None]
                if not scores or not math.isclose(sum(scores) / len(scores),
                                                  pair[f"{side}_score"], abs_tol=1e-9):
                    problems.append(f"{folder}/pairs.jsonl: actor pair {pair['id']}'s {side} "
                                    "score is not the mean of its current judgments' scores")
        else:
            chosen, rejected = judgments.get(pair["chosen_id"]), judgments.get(pair["rejected_id"])
            if chosen is None or rejected is None:
                problems.append(f"{folder}/pairs.jsonl: judge pair {pair['id']} is not made of "
                                "current judgments")
                continue
            for side, judgment in (("chosen", chosen), ("rejected", rejected)):
                full = judgment.get("completed_text") or judgment["text"]
                if not pair[side] or not (full.startswith(pair[side].rstrip())
                                          or judgment["text"].startswith(pair[side].rstrip())):
                    problems.append(f"{folder}/pairs.jsonl: judge pair {pair['id']}'s {side} "
                                    "text is not its judgment's")
            response = responses.get(chosen["response_id"])
            shown = "\n".join(m["content"] for m in pair["prompt"])
            if response is None or response["text"].strip() not in shown:
                problems.append(f"{folder}/pairs.jsonl: judge pair {pair['id']}'s prompt does "
                                "not show a current response")
    trained = [row for row in lines(folder / "dpo_pairs.jsonl")]
    if trained and not pairs:
        return problems + [f"{folder}/dpo_pairs.jsonl: {len(trained)} training rows while "
                           "pairs.jsonl holds no pair"]
    for row in trained:
        pair = pairs.get(row["id"])
        if pair is None or row["pair_type"] not in types or \
                row["chosen"][-1]["content"] != pair["chosen"] or \
                row["rejected"][-1]["content"] != pair["rejected"] or \
                [m["content"] for m in row["prompt"]] != [m["content"] for m in pair["prompt"]]:
            problems.append(f"{folder}/dpo_pairs.jsonl: row {row['id']} is no current pair of "
                            f"a type iteration {t} trains on ({types})")
    expected = {p["id"] for p in pairs.values() if p["pair_type"] in types}
    if {row["id"] for row in trained} != expected:
        problems.append(f"{folder}/dpo_pairs.jsonl: rows {sorted(r['id'] for r in trained)} "
                        f"are not the current pairs of types {types}: {sorted(expected)}")
    return problems


def _check_checkpoint(run: Path, t: int, seed: Seed) -> list[str]:
    """A current checkpoint: trained from M_t on the current dpo_pairs.jsonl, itself current."""
    folder = iteration_dir(run, t) / "checkpoint"
    marker = folder / "metajudge.json"
    if not marker.is_file():
        return [f"{folder}: called current, but it does not exist"]
    meta = json.loads(marker.read_text())
    problems = []
    if meta.get("weights_sha256") != weights_digest(folder):
        problems.append(f"{folder}: its marker's weights_sha256 is not its weights' digest")
    made = meta.get("made_from") or {}
    revision = model_revision(run, t, seed)
    if str(made.get("model", "")).rpartition("@")[2] != revision:
        problems.append(f"{folder}: trained from {made.get('model')}, not M_{t} ({revision})")
    pairs = iteration_dir(run, t) / "dpo_pairs.jsonl"
    if not pairs.is_file() or made.get("dpo_pairs") != sha16(pairs):
        problems.append(f"{folder}: trained on other rows than the current {pairs.name}")
    return problems + _check_pairs(run, t, seed)


def chain(run: Path, t: int, stage: str, seed: Seed) -> list[str]:
    """Everything a successful ``stage`` of iteration t called current: M_t (iteration t-1's
    checkpoint and its own chain), the stage's inputs and its outputs."""
    problems = chain(run, t - 1, "train", seed) if t > 1 else []
    if stage == "train":
        return problems + _check_checkpoint(run, t, seed)
    if stage == "pairs":
        return problems + _check_pairs(run, t, seed)
    names = {"generate": ["responses"], "judge": ["responses", "judgments"],
             "meta-judge": ["responses", "judgments", "meta_judgments"]}[stage]
    for name in names:
        problems += _check_file(run, t, name, seed)
    return problems


def manifest_counts(run: Path, t: int, stage: str) -> list[str]:
    """The manifest's counts of a stage a successful command called current equal its files'."""
    entries = json.loads((run / "manifest.json").read_text()).get("stages", {})
    folder = iteration_dir(run, t)
    entry = entries.get(f"iter_{t:02d}/{stage}")
    if entry is None:
        return [f"manifest.json: no iter_{t:02d}/{stage} entry after it ran"]
    problems = []
    if stage in ("generate", "judge", "meta-judge"):
        name = {v: k for k, v in STAGE_OF.items()}[stage]
        held = len(lines(folder / f"{name}.jsonl"))
        if entry.get("completed") != held:
            made = entry.get("completed")
            how = "more" if isinstance(made, int) and made > held else "other"
            problems.append(f"manifest.json: iter_{t:02d}/{stage} counts {made} records made, "
                            f"{how} than the {held} {name}.jsonl holds")
    elif stage == "pairs":
        by_type = Counter(p["pair_type"] for p in lines(folder / "pairs.jsonl"))
        rows = len(lines(folder / "dpo_pairs.jsonl"))
        for key, held in (("actor_pairs", by_type["actor"]), ("judge_pairs", by_type["judge"]),
                          ("training_pairs", rows)):
            if key in entry and entry[key] != held:
                problems.append(f"manifest.json: iter_{t:02d}/pairs {key} {entry[key]}, the files "
                                f"hold {held}")
    elif stage == "train":
        rows = len(lines(folder / "dpo_pairs.jsonl"))
        meta = json.loads((folder / "checkpoint" / "metajudge.json").read_text())
        if entry.get("pairs") != rows or entry.get("weights_sha256") != meta.get(
                "weights_sha256"):
            problems.append(f"manifest.json: iter_{t:02d}/train says {entry.get('pairs')} pairs "
                            f"and weights {entry.get('weights_sha256')}; the checkpoint holds "
                            f"{meta.get('weights_sha256')}, trained on {rows} rows")
    return problems


def summary_rows(run: Path, alarms: dict[int, list[str]], seed: Seed | None = None
                 ) -> list[str]:
    """summary.csv counts what the current files hold, and flags the alarms the run reported;
    with ``seed``, the files each row reports are current (a row of an iteration the run did
    not reach reports whatever records that iteration holds)."""
    path = run / "summary.csv"
    if not path.is_file():
        return [f"{path}: not written by the run"]
    problems = []
    with path.open() as fh:
        rows = {int(r["iteration"]): r for r in csv.DictReader(fh)}
    for t, row in rows.items():
        if t == 0:
            continue
        folder = iteration_dir(run, t)
        by_type = Counter(p["pair_type"] for p in lines(folder / "pairs.jsonl"))
        held = {"responses": len(lines(folder / "responses.jsonl")),
                "actor_pairs": by_type["actor"], "judge_pairs": by_type["judge"]}
        for key, value in held.items():
            if key in row and row[key] != "" and int(float(row[key])) != value:
                problems.append(f"{path}: iteration {t} {key} {row[key]}, the files hold {value}")
        for name in ("responses", "judgments", "meta_judgments"):
            if row.get("stale"):  # the row says its records are stale: not called current
                break
            if seed is not None and (folder / f"{name}.jsonl").is_file():
                problems += [f"{path}: iteration {t}'s row reports {name}.jsonl, which is not "
                             f"current: {p}" for p in _check_file(run, t, name, seed)
                             if "not judgments 0.." not in p and "responses for each" not in p]
        for name in alarms.get(t, []):
            column = f"alarm_{name}"
            if row.get(column) not in ("True", "1", "1.0"):
                problems.append(f"{path}: iteration {t}'s alarm {name} fired, but {column} is "
                                f"{row.get(column)!r}")
    return problems


def eft_folder(folder: Path, ranked: Path, seed: Seed) -> list[str]:
    """A finished ``metajudge eft`` folder: its judgments are M_0's, of the replies the current
    ``--ranked`` file holds, and its checkpoint was trained on the current examples."""
    problems = []
    replies = {r["message_id"]: r["text"] for row in lines(ranked) for r in row["replies"]}
    judgments = lines(folder / "eft_judgments.jsonl")
    stale = [j["id"] for j in judgments if j["response_id"] not in replies
             or f"{{response {text_digest(replies[j['response_id']])}}}" not in j["text"]]
    if stale:
        problems.append(f"{folder}/eft_judgments.jsonl: {len(stale)} judgments of a reply text "
                        f"{ranked.name} does not hold now, e.g. {stale[0]}")
    others = [j["id"] for j in judgments
              if j["provenance"]["backend"].get("revision") != seed.seed_revision]
    if others:
        problems.append(f"{folder}/eft_judgments.jsonl: {len(others)} judgments not by M_0")
    marker = folder / "checkpoint" / "metajudge.json"
    if marker.is_file():
        made = json.loads(marker.read_text()).get("made_from") or {}
        examples = folder / "eft_sft.jsonl"
        if made.get(examples.name) != sha16(examples):
            problems.append(f"{folder}/checkpoint: trained on other examples than the current "
                            f"{examples.name}")
        if str(made.get("model", "")).rpartition("@")[2] != seed.seed_revision:
            problems.append(f"{folder}/checkpoint: not trained from M_0")
    return problems


def tracker_rows(run: Path) -> list[str]:
    """The tensorboard summary (``RUN/tracking/summary``) holds summary.csv's numbers, one value
    per iteration and column."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run / "tracking" / "summary"
    if not folder.is_dir():
        return [f"{folder}: the run wrote no tracker rows"]
    with (run / "summary.csv").open() as fh:
        rows = {int(r["iteration"]): r for r in csv.DictReader(fh)}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    problems = []
    for tag in events.Tags()["scalars"]:
        column = tag.removeprefix("summary/")
        steps = Counter(e.step for e in events.Scalars(tag))
        if any(n > 1 for n in steps.values()):
            problems.append(f"{folder}: {tag} has a step twice ({dict(steps)})")
        for event in events.Scalars(tag):
            if rows.get(event.step, {}).get("stale"):
                problems.append(f"{folder}: {tag} at iteration {event.step}, a row of stale "
                                "records, is logged as current")
                continue
            text = rows.get(event.step, {}).get(column)
            value = {"True": 1.0, "False": 0.0}.get(text or "", None)
            try:
                value = float(text) if value is None and text else value
            except ValueError:
                value = None
            if value is None or not math.isclose(value, event.value, rel_tol=1e-5,
                                                 abs_tol=1e-6):
                problems.append(f"{folder}: {tag} at iteration {event.step} is {event.value}, "
                                f"summary.csv says {text!r}")
    return problems
