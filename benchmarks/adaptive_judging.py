"""Adaptive judging against the full procedure on identical samples (issue 28, SPEC §13).

    PYTHONPATH=.:benchmarks .venv/bin/python benchmarks/adaptive_judging.py [--prompts 300]
        [--full-size 5000] [--out results/benchmarks]

The workload is the synthetic judge (benchmarks/synthetic_judge.py: latent response quality,
noisy discretised clipped scores, judgments with a quality of their own, Bradley–Terry verdicts
with a first-position bias) run through the real stages at the paper's K = 7 and N = 11, for
each judge setting of the sweep (score noise sd × first-position bias):

1. the full procedure (``generate``, ``judge``, ``meta-judge``, ``pairs``);
2. the noise floor: a second full run on the same prompts and responses with new judgment and
   verdict samples (``judge_seed``, ``meta_seed``) for the actor pairs, and one with new verdicts
   on the same judgments for the judge pairs (a judge pair is rated by the first run's ratings
   of its judgments, which exist only for the first run's judgments);
3. adaptive judging at each of its settings of the sweep, on the same prompts and responses
   (copied) and on the same judgment and verdict samples: the synthetic judge's answer is a
   pure function of the request, and the adaptive stages keep the full run's request ids and
   seeds, so each judgment and verdict they ask for is the full run's; at the smallest setting
   the adaptive run is also made on a :class:`replay_backend.ReplayBackend` of the full run and
   its records are checked to be the same;
4. the comparisons of responses the full run did not select but another run did, made by the
   meta-judge stage on them (``shadow`` runs), so every judge pair is rated from all ordered
   comparisons of its response.

Writes ``adaptive_judging.json`` (the goal's setting: bias 0.5 logits, noise sd 1), ``.md`` (every
row), ``.png``/``.pdf`` (retention against token share over the sweep) and the headline rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from adaptive_metrics import Comparison, FullRatings, compare, judge_statistics  # noqa: E402
from adaptive_report import ACTOR_FLOOR  # noqa: E402
from synthetic_judge import JudgeModel, SyntheticJudge  # noqa: E402

from metajudge.backends.base import Backend  # noqa: E402
from metajudge.config import JudgeConfig, apply_overrides, load_config  # noqa: E402
from metajudge.records import MetaSelection  # noqa: E402
from metajudge.stages.generate import run_generate  # noqa: E402
from metajudge.stages.judge import run_judge  # noqa: E402
from metajudge.stages.meta_judge import first_position_share, run_meta_judge  # noqa: E402
from metajudge.stages.pairs import run_pairs  # noqa: E402
from metajudge.store import (  # noqa: E402
    JUDGMENTS,
    META_JUDGMENTS,
    META_SELECTION,
    PROMPTS,
    Store,
)

log = logging.getLogger("adaptive_judging")
#: the paper's procedure on the bundled pool (configs/paper.yaml's judging settings are the
#: defaults; the synthetic judge has no log-probabilities, so no probability-weighted read-out)
BASE = ["prompts.source=bundled", "prompts.pool_size=4995", "generation.samples_per_prompt=7",
        "judge.judgments_per_response=11", "judge.probability_weighted=false",
        "runner.retry_delay_s=0"]
#: the sweep of the judge model, (score noise sd, first-position bias in logits): a cross
#: through the goal's setting (1, 0.5); a bias of 2.6 logits gives the embedded model's
#: first-position share of about 0.9 (adaptive_judging.md measures each). ``--grid``: every
#: noise with every bias
GOAL = (1.0, 0.5)
NOISES = (0.5, 1.0, 1.5)
BIASES = (0.0, 0.5, 2.6)
CROSS = [(n, GOAL[1]) for n in NOISES] + [(GOAL[0], b) for b in BIASES if b != GOAL[1]]


def adaptive_available() -> bool:
    return "adaptive" in JudgeConfig.model_fields


#: adaptive judging's settings of the sweep: name -> config overrides (SPEC §5a's knobs); the
#: defaults, and z-scores looser and tighter than them (the curve of retention against cost)
ON = ["judge.adaptive=true", "meta_judge.adaptive=true"]
ADAPTIVE = {
    "default": ON,
    "loose": [*ON, "judge.adaptive_z=0.8", "meta_judge.adaptive_z=0.25"],
    "tight": [*ON, "judge.adaptive_z=2.0", "meta_judge.adaptive_z=1.0"],
}


def make_config(prompts: int, model: JudgeModel, extra: Sequence[str] = ()) -> Any:
    return load_config(None, [*BASE, f"prompts.per_iteration={prompts}",
                              "backend.kind=synthetic_judge:SyntheticJudge",
                              f"backend.model={model.name()}", *extra])


def stages(store: Store, backend: Backend, names: Sequence[str], *,
           allow_failures: bool = False) -> dict[str, float]:
    """Run the named stages of iteration 1; seconds per stage."""
    run = {"generate": run_generate, "judge": run_judge, "meta-judge": run_meta_judge}
    seconds = {}
    for name in names:
        started = time.perf_counter()
        if name == "pairs":
            run_pairs(store, 1)
        else:
            summary = run[name](store, backend, 1, progress=False)
            if summary.failed and not allow_failures:
                raise RuntimeError(f"{store.root}: {name} left {summary.failed} failed requests")
        seconds[name] = round(time.perf_counter() - started, 2)
    return seconds


def copy_inputs(src: Store, dst: Store, names: Sequence[str], *, resume: bool = False) -> None:
    """Copy the records (with their settings and failures) of the named stage files (with
    ``resume``, not into a run that has them already)."""
    folder = dst.iteration_dir(1)
    folder.mkdir(parents=True, exist_ok=True)
    for path in src.iteration_dir(1).iterdir():
        if resume and (folder / path.name).exists():
            continue
        if path.is_file() and path.name.split(".")[0] in names:
            shutil.copy2(path, folder / path.name)


def fresh(path: Path, config: Any) -> Store:
    if path.exists():
        shutil.rmtree(path)
    return Store.open(path, config)


def shadow_runs(full: Store, wanted: set[str], base: Path, config: Any,
                backend: Backend) -> list[Store]:
    """Every ordered comparison of the ``wanted`` responses the full run did not select, made
    by the meta-judge stage (with ``backend``, the full run's model) on a copy of the full run's
    records, one response per prompt per copy."""
    chosen = {m.response_id for m in full.iter_records(META_JUDGMENTS, 1)}
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for rid in sorted(wanted - chosen):
        by_prompt[rid.rpartition("#")[0]].append(rid)
    shadows = []
    for k in range(max((len(v) for v in by_prompt.values()), default=0)):
        store = fresh(base / f"shadow_{k}", config)
        copy_inputs(full, store, ("prompts", "responses", "judgments"))
        store.write_all(META_SELECTION, [MetaSelection(
            id=p, iteration=1, response_id=rids[k], variance=None, scored_judgments=0,
            reason="rating comparisons of a response another run selected")
            for p, rids in sorted(by_prompt.items()) if len(rids) > k], 1)
        stages(store, backend, ["meta-judge"])
        shadows.append(store)
    return shadows


def same_records(a: Store, b: Store) -> bool:
    """Whether two runs hold the same judgments and comparisons (ids, texts, values)."""
    def key(store: Store) -> list[tuple[Any, ...]]:
        rows = [(r.id, r.text, r.score) for r in store.iter_records(JUDGMENTS, 1)]
        rows += [(r.id, r.text, r.winner) for r in store.iter_records(META_JUDGMENTS, 1)]
        return sorted(rows)
    return key(a) == key(b)


def setting(base: Path, prompts: int, noise: float, bias: float, *, check_replay: bool,
            variants: Sequence[str] = tuple(ADAPTIVE)) -> list[dict[str, Any]]:
    """Full run, noise floor and adaptive runs of one judge setting; one row per comparison."""
    model = JudgeModel(noise=noise, bias=bias)
    folder = base / f"n{noise:g}_b{bias:g}_p{prompts}"
    full = Store.open(folder / "full", make_config(prompts, model))  # resumes a finished one
    timing = stages(full, SyntheticJudge(model=model),
                    ["generate", "judge", "meta-judge", "pairs"])
    log.info("%s: full run %s", folder.name, timing)
    runs: dict[str, tuple[Store, bool]] = {}
    # the noise floor: new judgments and verdicts (actor pairs); new verdicts (judge pairs)
    floor_model = JudgeModel(noise=noise, bias=bias, judge_seed=1, meta_seed=1)
    # the same model (M_1's identity, which copied records are checked against) drawing other
    # samples: the seeds are in the backend's fingerprint on each record, not in the config
    floor = Store.open(folder / "floor", make_config(prompts, model))
    copy_inputs(full, floor, ("prompts", "responses"), resume=True)
    stages(floor, SyntheticJudge(model=floor_model), ["judge", "meta-judge", "pairs"])
    runs[ACTOR_FLOOR] = (floor, False)
    verdict_model = JudgeModel(noise=noise, bias=bias, meta_seed=1)
    verdicts = Store.open(folder / "floor_verdicts", make_config(prompts, model))
    copy_inputs(full, verdicts, ("prompts", "responses", "judgments"), resume=True)
    stages(verdicts, SyntheticJudge(model=verdict_model), ["meta-judge", "pairs"])
    runs["floor: new verdicts"] = (verdicts, True)
    replay_identical = None
    if adaptive_available():
        for name, overrides in ADAPTIVE.items():
            if name not in variants:
                continue
            store = fresh(folder / f"adaptive_{name}", make_config(prompts, model, overrides))
            copy_inputs(full, store, ("prompts", "responses"))
            started = time.perf_counter()
            stages(store, SyntheticJudge(model=model), ["judge", "meta-judge", "pairs"])
            log.info("%s: adaptive %s in %.1f s", folder.name, name,
                     time.perf_counter() - started)
            runs[f"adaptive {name}"] = (store, True)
            if check_replay and name == "default":
                replayed(full, store, folder, prompts, model, overrides)
                replay_identical = True
    wanted = {m.response_id for store, judge_pairs in runs.values() if judge_pairs
              for m in store.iter_records(META_JUDGMENTS, 1)}
    ratings = FullRatings(full, shadow_runs(full, wanted, folder, make_config(prompts, model),
                                            SyntheticJudge(model=model)))
    share = first_position_share(full, 1)
    rows = []
    for name, (store, judge_pairs) in runs.items():
        result: Comparison = compare(store, full, ratings, judge_pairs=judge_pairs)
        rows.append({"noise": noise, "bias": bias, "prompts": prompts, "run": name,
                     "first_position_share": round(share, 4),
                     "replay_identical": replay_identical, **result.row(),
                     **({"judge_statistics": judge_statistics(full)}
                        if name == ACTOR_FLOOR else {})})
        log.info("%s %s: %s", folder.name, name, rows[-1])
    return rows


def replayed(full: Store, adaptive: Store, folder: Path, prompts: int, model: JudgeModel,
             overrides: Sequence[str]) -> Store:
    """The adaptive run again on a replay of the full run (the synthetic judge answering only
    what the recording lacks); it must hold the same records as the direct one."""
    from replay_backend import ReplayBackend

    store = fresh(folder / "adaptive_replay", make_config(prompts, model, overrides))
    copy_inputs(full, store, ("prompts", "responses"))
    with ReplayBackend([full.root], fallback=SyntheticJudge(model=model)) as backend:
        stages(store, backend, ["judge", "meta-judge", "pairs"])
        log.info("replay: %s", backend.stats())
    if not same_records(store, adaptive):
        raise RuntimeError(f"{store.root}: the replayed adaptive run differs from the direct "
                           "one: the adaptive stages did not ask for the full run's samples")
    return store


def with_overrides(config: Any, overrides: Sequence[str]) -> Any:
    return type(config).model_validate(apply_overrides(config.model_dump(mode="json"),
                                                       list(overrides)))


def replay_recorded(recorded: Path, work: Path, variants: Sequence[str] = ("default",)
                    ) -> list[dict[str, Any]]:
    """Adaptive judging on a replay of a full run recorded on a real model (its config, its
    iteration 1). First the full procedure replayed, which must give the recorded pairs; then,
    per adaptive setting, a first pass on the replay shows which responses its meta-judge
    selects, the model itself makes every comparison of those the full run did not select
    (shadow runs), and the adaptive run on the replay of all of it is compared with the full
    run."""
    from adaptive_metrics import pairs_by_prompt
    from replay_backend import ReplayBackend

    from metajudge.backends import load_backend

    full = Store.open(recorded, lock=False)
    config = full.config
    store = fresh(work / "full_replayed", config)
    with ReplayBackend([full.root]) as backend:
        stages(store, backend, ["generate", "judge", "meta-judge", "pairs"])
    same = pairs_by_prompt(store, 1) == pairs_by_prompt(full, 1)
    log.info("the full procedure replayed gives the recorded pairs: %s", same)
    if not same:
        raise RuntimeError(f"{store.root}: the replayed full procedure made other pairs")
    base = {"model": full.first(JUDGMENTS, 1).provenance.backend.model,
            "prompts": full.count(PROMPTS, 1),
            "first_position_share": round(first_position_share(full, 1), 4),
            "full_replayed_same_pairs": same, "judge_statistics": judge_statistics(full)}
    rows = []
    for name, overrides in ADAPTIVE.items() if adaptive_available() else ():
        if name not in variants:
            continue
        adaptive_config = with_overrides(config, overrides)
        first = fresh(work / f"{name}_pass1", adaptive_config)
        with ReplayBackend([full.root]) as backend:
            stages(first, backend, ["generate", "judge", "meta-judge"], allow_failures=True)
        wanted = {s.response_id for s in first.read(META_SELECTION, 1) if s.response_id}
        with load_backend(config.backend) as model:
            shadows = shadow_runs(full, wanted, work / name, config, model)
        store = fresh(work / f"adaptive_{name}", adaptive_config)
        with ReplayBackend([full.root, *(s.root for s in shadows)]) as backend:
            stages(store, backend, ["generate", "judge", "meta-judge", "pairs"])
            log.info("replay: %s", backend.stats())
        result = compare(store, full, FullRatings(full, shadows))
        rows.append({**base, "run": f"adaptive {name}", **result.row()})
        log.info("%s", rows[-1])
    return rows or [base]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=300, help="prompts of the sweep")
    parser.add_argument("--full-size", type=int, default=0,
                        help="also run the goal's setting at this many prompts (5000: paper)")
    parser.add_argument("--work", default="/tmp/adaptive_judging")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    parser.add_argument("--resume", action="store_true", help="keep the settings already in "
                        "adaptive_judging.rows.jsonl")
    parser.add_argument("--all-variants", action="store_true", help="every adaptive setting "
                        "at every judge setting (default: all at the goal's, the default one "
                        "elsewhere)")
    parser.add_argument("--grid", action="store_true", help="every noise with every bias "
                        "(default: the cross through the goal's setting)")
    parser.add_argument("--replay", help="instead: adaptive judging on a replay of this "
                        "recorded full run (a real model's); writes adaptive_judging.replay.*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("metajudge").setLevel(logging.ERROR)
    work, out = Path(args.work), Path(args.out)
    if args.replay:
        from adaptive_report import write_replay

        write_replay(replay_recorded(Path(args.replay), work / "replay"), out, args.replay)
        return
    rows: list[dict[str, Any]] = []
    sweep = [(n, b) for n in NOISES for b in BIASES] if args.grid else CROSS
    saved = out / "adaptive_judging.rows.jsonl"
    done = [json.loads(line) for line in saved.read_text().splitlines()] \
        if args.resume and saved.is_file() else []
    saved.write_text("".join(json.dumps(r) + "\n" for r in done))
    rows += done
    for noise, bias in sorted(sweep, key=lambda s: s != GOAL):  # the goal's setting first
        if any((r["noise"], r["bias"], r["prompts"]) == (noise, bias, args.prompts)
               for r in done):
            continue
        goal = (noise, bias) == GOAL
        found = setting(work, args.prompts, noise, bias, check_replay=goal,
                        variants=tuple(ADAPTIVE) if goal or args.all_variants else ("default",))
        rows += found
        with saved.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in found))
    if args.full_size:
        rows += setting(work, args.full_size, *GOAL, check_replay=False)
    from adaptive_report import write_report

    write_report(rows, out, vars(args))


if __name__ == "__main__":
    main()
