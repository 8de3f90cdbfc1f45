"""The run's invariants under random command sequences: a stateful, model-based property test
(issue 27 C).

Hypothesis' ``RuleBasedStateMachine`` drives random sequences of the real commands on one run
directory: ``generate``, ``judge``, ``meta-judge``, ``pairs``, ``train``, ``run`` and ``eft``,
each with and without ``--redo``, with record-shaping settings changed (``--set``), over more
iterations than the first, and killed (SIGKILL of the process group) at random points. After
every command, :mod:`tests.property.oracle` re-derives the invariants from the files alone
(never through metajudge's own checks): each file a successful command called current was made
by that iteration's M_t, under the file's recorded settings, from the current generation of each
input; no checkpoint or summary row is current while an input is stale; every
``dpo_pairs.jsonl`` row a checkpoint trained on is derivable from current records; no record is
lost or duplicated; the manifest's counts are the files'. A failing sequence shrinks to a short
list of commands, printed as a shell session (``RUN`` is the run directory).

The model is the instant backend naming its model by its weights
(:mod:`tests.property.weights_backend`) on ``llama3-mini``, the 6.4 M-parameter random Llama
that :mod:`metajudge.mini_llama` builds here. **Training is real**: ``train`` (and ``run``'s
training child, and ``eft``'s SFT) run the unchanged train path, TRL's DPO (SFT) through
``metajudge.training``, on that model, with ``training.global_batch_size`` 8 so that an
iteration's few pairs are one optimizer step. What provenance depends on is all there: the
stage's checks before training, the checkpoint written into ``checkpoint.tmp`` and renamed, its
marker with ``made_from`` and the weights' digest, and new weights per training on new pairs (so
each checkpoint is a new model identity for the next iteration's records). Only the model's
size is changed, which no provenance rule reads.

Commands run in this process through the CLI's ``main()`` (fast; the same code path), except
those the sequence kills, which run as ``python -m metajudge.cli`` in their own process group,
killed with SIGKILL a drawn fraction of a window after they first write to the run directory
(the instant backend then waits ``WEIGHTS_INSTANT_RECORD_DELAY_S`` per record, so the kill
lands between records, or during training).

Budget: ``PROPERTY_EXAMPLES`` sequences (default 3) of up to ``PROPERTY_STEPS`` commands
(default 10) over up to ``PROPERTY_ITERATIONS`` iterations (default 2); ``make test-property``
runs a longer budget.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule  # noqa: E402

from tests.property import oracle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"
RANKED = ROOT / "tests" / "data" / "oasst_ranked_later_turns.jsonl"
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", 3))
STEPS = int(os.environ.get("PROPERTY_STEPS", 10))
ITERATIONS = int(os.environ.get("PROPERTY_ITERATIONS", 2))
#: seconds per record of a command that is to be killed
RECORD_DELAY_S = "0.05"

BACKEND = ["backend.kind=tests.property.weights_backend:WeightsInstantBackend",
           "backend.model=llama3-mini", "runner.retry_delay_s=0",
           "training.max_length=512", "training.global_batch_size=8",
           "training.per_device_batch_size=8", "eft.max_length=1024",
           "eft.global_batch_size=8", "eft.per_device_batch_size=8", "eft.use_forced=true",
           "eft.judgments_per_reply=2", "training.report_to=[tensorboard]",
           f"iterations={ITERATIONS}"]
#: record-shaping settings each command may change (a refused one is a valid step too)
SETS = {
    "generate": [["generation.temperature=0.5"]],
    "judge": [["judge.judgments_per_response=2"], ["judge.judgments_per_response=3"],
              ["judge.temperature=0.5"]],
    "meta-judge": [["meta_judge.temperature=0.5"], ["meta_judge.hide_scores=true"]],
    "pairs": [["pairs.rho=[0.0,0.5]"], ["pairs.pair_types=[[actor],[actor]]"],
              ["pairs.pair_types=[[actor,judge],[actor,judge]]"]],
    "train": [["training.beta=0.2"], ["training.learning_rate=1e-4"]],
    "run": [["judge_health.stop_on_alarm=true", "judge_health.max_top_score_share=0.05"],
            ["judge_health.stop_on_alarm=false"], ["eft.checkpoint=EFT"],
            ["eft.checkpoint=null"], ["judge.judgments_per_response=2"]],
    "eft": [["eft.judgments_per_reply=3"]],
}
#: how long after its first write a killed command may run (its kill point is a fraction)
WINDOW_S = {"generate": 1.0, "judge": 2.5, "meta-judge": 2.0, "pairs": 0.5, "train": 25.0,
            "run": 40.0, "eft": 30.0}


@dataclass(frozen=True)
class Command:
    """One CLI command of a sequence; its repr is the command line."""

    stage: str
    iteration: int = 1
    redo: bool = False
    sets: tuple[str, ...] = ()
    ranked: str = "A"  # eft: the ranked file (B: the same ids, other texts)
    kill_at: float | None = None  # a fraction of WINDOW_S after the first write
    kill_write: int | None = None  # or: before its k-th write (tests.property.killpoint)

    def argv(self, base: Path) -> list[str]:
        run, eft = base / "run", base / "eft"
        sets = [x for s in self.sets for x in ("--set", s.replace("=EFT", f"={eft}"))]
        if self.stage == "init":
            return ["generate", "--config", str(TINY), "--out", str(run), "--limit", "3",
                    "-k", "3", "--no-progress"] + [x for s in BACKEND for x in ("--set", s)]
        if self.stage == "generate":
            head = ["generate", "--out", str(run), "--iteration", str(self.iteration)]
        elif self.stage == "run":
            head = ["run", str(run / "config.yaml"), "--out", str(run), "--iterations",
                    str(self.iteration)]
        elif self.stage == "eft":
            ranked = RANKED if self.ranked == "A" else base / "ranked_b.jsonl"
            head = ["eft", "--ranked", str(ranked), "--out", str(eft), "--config", str(TINY),
                    "--limit", "3"] + [x for s in BACKEND for x in ("--set", s)]
        else:
            head = [self.stage, str(run), "--iteration", str(self.iteration)]
        return head + (["--redo"] if self.redo else []) + ["--no-progress"] + sets

    def __repr__(self) -> str:
        words = " ".join(self.argv(Path("B"))).replace("B/run", "RUN").replace("B/eft", "EFT")
        words = words.replace(str(TINY), "configs/tiny.yaml").replace(str(RANKED), "RANKED")
        words = words.replace("B/ranked_b.jsonl", "RANKED_B")
        if self.stage in ("init", "eft"):
            words = words.replace(" --set " + " --set ".join(BACKEND), " $BACKEND")
        kill = "" if self.kill_at is None else (
            f"  # SIGKILL {self.kill_at * WINDOW_S[self.stage]:.1f} s after its first write")
        if self.kill_write is not None:
            kill = f"  # SIGKILL before its write #{self.kill_write}"
        return f"metajudge {words}{kill}"


def _commands() -> st.SearchStrategy[Command]:
    iterations = st.integers(1, ITERATIONS)
    kills = st.one_of(st.just({}), st.just({}), st.just({}),
                      st.floats(0.0, 1.0).map(lambda x: {"kill_at": round(x, 2)}),
                      st.integers(1, 16).map(lambda k: {"kill_write": k}))

    def stage(name: str) -> st.SearchStrategy[Command]:
        sets = st.one_of(st.just(()), st.sampled_from([tuple(s) for s in SETS[name]]))
        redo = st.just(False) if name == "run" else st.booleans()  # (run has no --redo)
        ranked = st.sampled_from(["A", "B"]) if name == "eft" else st.just("A")
        iteration = st.just(1) if name == "eft" else iterations
        return st.builds(lambda *a, kill: Command(*a, **kill), st.just(name), iteration, redo,
                         sets, ranked, kill=kills)

    # run first: the simplest sequence (hypothesis' first) is the loop, then resumed
    return st.one_of(*(stage(n) for n in ("run", "generate", "judge", "meta-judge", "pairs",
                                          "train", "eft")))


def _seed_revision() -> str:
    from metajudge.models import resolve_model  # where the seed's weights are, not a check

    folder = Path(resolve_model("llama3-mini").path)
    digest = oracle.weights_digest(folder)
    assert digest is not None
    return digest


class RunInvariants(RuleBasedStateMachine):
    """One run directory under a random sequence of commands."""

    seed: oracle.Seed

    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="metajudge-property-"))
        self.run = self.base / "run"
        self.done: list[str] = []
        rows = [json.loads(x) for x in RANKED.read_text().splitlines()]
        for row in rows:  # the same message ids, other texts (issue 27 B4)
            for reply in row["replies"]:
                reply["text"] = "(revised) " + reply["text"]
        (self.base / "ranked_b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        # the training child of `run` imports the backend's module too
        self.pythonpath = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + (
            [self.pythonpath] if self.pythonpath else []))

    # ------------------------------------------------------------------ running
    def _in_process(self, command: Command) -> tuple[int, str]:
        from metajudge.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(command.argv(self.base))
            except SystemExit as exc:  # argparse
                code = int(exc.code or 0)
            except Exception:
                self._fail([f"the command crashed instead of refusing:\n"
                            f"{traceback.format_exc()}"])
        return code, err.getvalue()

    def _killed(self, command: Command) -> tuple[int | None, str]:
        """Run as its own process group, killed with SIGKILL before its drawn write
        (:mod:`tests.property.killpoint`) or a drawn time after its first write. Returns
        (None, log) when it was killed, else (its exit code, log)."""
        env = {**os.environ, "WEIGHTS_INSTANT_RECORD_DELAY_S": RECORD_DELAY_S}
        log = self.base.parent / f"{self.base.name}-killed.log"
        before = _newest(self.base)
        entry = ["metajudge.cli"] if command.kill_write is None else [
            "tests.property.killpoint", str(command.kill_write), str(self.base), "--"]
        with log.open("w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", *entry, *command.argv(self.base)],
                                    stdout=fh, stderr=fh, env=env, cwd=ROOT,
                                    start_new_session=True)
        code: int | None
        try:
            if command.kill_write is not None:
                code = proc.wait(600)
                code = None if code == -signal.SIGKILL else code
            else:
                assert command.kill_at is not None
                deadline = time.monotonic() + 300
                while proc.poll() is None and _newest(self.base) <= before:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{command!r} wrote nothing in 300 s")
                    time.sleep(0.02)
                try:
                    code = proc.wait(command.kill_at * WINDOW_S[command.stage])
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    code = None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _wait_unlocked(self.run)
        return code, log.read_text()

    # -------------------------------------------------------------------- rules
    @initialize()
    def start(self) -> None:
        self.seed = oracle.Seed(_seed_revision())
        self._step(Command("init"))

    @rule(command=_commands())
    def step(self, command: Command) -> None:
        self._step(command)

    def _step(self, command: Command) -> None:
        before = oracle.Snapshot.take(self.run)
        self.done.append(repr(command))
        if command.kill_at is not None or command.kill_write is not None:
            code, err = self._killed(command)
        else:
            code, err = self._in_process(command)
        said = [x for x in err.splitlines() if x.startswith("metajudge: error:")]
        self.done[-1] += f"   # exit {'KILLED' if code is None else code}" + (
            f": {said[-1][17:][:160]}" if said and code else "")
        problems = oracle.integrity(self.run) + oracle.lost_records(before, self.run)
        if code == 0:
            problems += self._claims(command)
        alarm = re.search(r"iteration (\d+): judge-health alarm ([\w, ]+?) \(", err)
        if command.stage == "run" and alarm and code is not None:
            fired = {int(alarm.group(1)): [a.strip() for a in alarm.group(2).split(",")]}
            problems += oracle.summary_rows(self.run, fired, self.seed)
            problems += oracle.tracker_rows(self.run)
        if problems:
            self._fail(problems)

    def _claims(self, command: Command) -> list[str]:
        """What a successful command called current, checked against the files."""
        run, seed = self.run, self.seed
        if command.stage == "eft":
            ranked = RANKED if command.ranked == "A" else self.base / "ranked_b.jsonl"
            return oracle.eft_folder(self.base / "eft", ranked, seed)
        if command.stage in ("init", "generate", "judge", "meta-judge", "pairs", "train"):
            stage = "generate" if command.stage == "init" else command.stage
            t = command.iteration
            return oracle.chain(run, t, stage, seed) + oracle.manifest_counts(run, t, stage)
        problems = []  # run: every iteration up to --iterations is finished and current
        types = oracle.config(run).get("pairs", {}).get("pair_types") or [["actor", "judge"]]
        for t in range(1, command.iteration + 1):
            problems += oracle.chain(run, t, "train", seed)
            stages = ["generate", "judge"] + (
                ["meta-judge"] if "judge" in oracle.scheduled(types, t) else []) + [
                "pairs", "train"]
            for stage in stages:
                problems += oracle.manifest_counts(run, t, stage)
        return problems + oracle.summary_rows(run, {}, seed) + oracle.tracker_rows(run)

    def _fail(self, problems: list[str]) -> None:
        script = "\n".join(f"$ {line}" for line in self.done)
        raise AssertionError("invariants broken after this sequence (RUN: the run directory, "
                             "EFT: an eft folder, $BACKEND: the instant backend on llama3-mini "
                             f"settings):\n{script}\n\n" + "\n".join(f"- {p}" for p in problems))

    def teardown(self) -> None:
        if os.environ.get("PROPERTY_VERBOSE"):
            print("\n".join(["sequence:"] + [f"$ {line}" for line in self.done]),
                  file=sys.__stderr__)
        shutil.rmtree(self.base, ignore_errors=True)
        (self.base.parent / f"{self.base.name}-killed.log").unlink(missing_ok=True)
        if self.pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = self.pythonpath


def _newest(folder: Path) -> float:
    """The latest modification time of anything under a folder."""
    newest = 0.0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            newest = max(newest, path.stat().st_mtime)
    return newest


def _wait_unlocked(run: Path, timeout_s: float = 30.0) -> None:
    """Wait until no process holds the run's lock (a killed command's children exit with it)."""
    import fcntl

    lock = run / ".lock"
    if not lock.exists():
        return
    deadline = time.monotonic() + timeout_s
    with lock.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{lock} still held {timeout_s} s after a kill") from None
                time.sleep(0.1)


# Hypothesis stops shrinking after MAX_SHRINKING_SECONDS (300 s) in all, and one sequence of
# real commands takes minutes here: with that limit a failure was printed as drawn, unshrunk
# (review of issue 27 C). The property test's shrinking gets PROPERTY_SHRINK_S (default 3600);
# hypothesis reads this module global each time it starts shrinking.
from hypothesis.internal.conjecture import engine as _engine  # noqa: E402

_engine.MAX_SHRINKING_SECONDS = int(os.environ.get("PROPERTY_SHRINK_S", 3600))

RunInvariants.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
    suppress_health_check=list(HealthCheck), derandomize=False,
    print_blob=True)


#: the whole machine is one pytest test: its time limit (pyproject's is 900 s a test) grows with
#: the budget, a minute per command
TestRunInvariants = pytest.mark.timeout(max(900, 60 * EXAMPLES * STEPS)
                                       + _engine.MAX_SHRINKING_SECONDS)(RunInvariants.TestCase)
