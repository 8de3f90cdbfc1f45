"""Review of issue 27 B (provenance round 3): a kill while ``--redo`` moves a stage's files aside
must leave nothing that a later command takes as current.

``Store.move_aside`` moves the files one by one; a SIGKILL can land between any two moves. Each
test kills the redo (a ``KeyboardInterrupt`` raised by the move, as a kill stops the process
there) before every move in turn, then runs what a user would run next.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from metajudge import provenance
from metajudge.cli import main
from metajudge.store import PAIRS, ConfigMismatchError, Store

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.yaml")
WEIGHTS = ["--set", "backend.kind=instant_backend:InstantWeightsBackend",
           "--set", "runner.retry_delay_s=0"]


class Killed(BaseException):
    """Stands for the SIGKILL: nothing after it runs."""


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main(["generate", "--config", TINY, "--out", str(run), "--limit", "2", "-k", "2",
                 "--no-progress", *WEIGHTS]) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--iteration", "1", "--no-progress"]) == 0, stage
    return run


@contextlib.contextmanager
def _maybe_killed() -> Iterator[None]:
    """The command, killed at the chosen move (or finished, when it moves fewer files)."""
    try:
        yield
    except Killed:
        pass


def _kill_at_move(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """The k-th ``shutil.move`` of ``Store.move_aside`` never happens: the process dies there."""
    import metajudge.store as store_module

    real, seen = shutil.move, [0]

    def move(source, target):  # type: ignore[no-untyped-def]
        if seen[0] == k:
            raise Killed
        seen[0] += 1
        return real(source, target)

    monkeypatch.setattr(store_module.shutil, "move", move)


@pytest.mark.parametrize("k", range(5))
def test_a_pairs_redo_killed_while_moving_aside_leaves_no_pairs_for_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    run = _run(tmp_path)
    old = (run / "iter_01" / "dpo_pairs.jsonl").read_bytes()
    with monkeypatch.context() as patch:
        _kill_at_move(patch, k)
        with _maybe_killed():
            main(["pairs", str(run), "--iteration", "1", "--redo", "--no-progress"])
    dpo = run / "iter_01" / "dpo_pairs.jsonl"
    whole = all((run / "iter_01" / name).is_file() for name in (
        "pairs.jsonl", "pair_decisions.jsonl", "pairs.settings.json"))
    if dpo.is_file() and dpo.read_bytes() == old and not whole:
        # the old rows are still where training reads them, the rest of their making is not
        store = Store.open(run, lock=False)
        with pytest.raises(ConfigMismatchError):  # training's check (check_checkpoint)
            provenance.require_made(store, PAIRS, 1)


@pytest.mark.parametrize("k", range(4))
def test_a_meta_judge_redo_killed_while_moving_aside_leaves_no_selection_to_reuse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    run = _run(tmp_path)
    selection = run / "iter_01" / "meta_selection.jsonl"
    with monkeypatch.context() as patch:
        _kill_at_move(patch, k)
        with _maybe_killed():
            main(["meta-judge", str(run), "--iteration", "1", "--redo", "--no-progress"])
    old = os.stat(selection).st_ino if selection.is_file() else None
    code = main(["meta-judge", str(run), "--iteration", "1", "--no-progress"])
    if code == 0 and old is not None:
        # a new making of the meta-judgments must not start from the old making's selection
        assert os.stat(selection).st_ino != old or _resumed_old_making(run), \
            f"killed at move {k}: the new meta-judge making reused the old selection"


def _resumed_old_making(run: Path) -> bool:
    """Whether the plain rerun resumed the old making (its records were never moved)."""
    return not any((run / "iter_01" / "replaced").glob("meta_judgments-*/meta_judgments.jsonl"))


def test_a_checkpoint_moved_aside_by_train_redo_leaves_no_training_row_in_the_summary(
        tmp_path: Path) -> None:
    """``train --iteration 1 --redo`` moves the checkpoint aside, then is killed while training:
    the iteration has no checkpoint, and its summary row must not show the moved one's training
    (shown on a real run: dpo_pairs 4, dpo_steps 2, dpo_loss 0.693, train_seconds 314)."""
    from metajudge.stages.summary import run_table
    from metajudge.stages.train import check_checkpoint
    from tests.unit.test_provenance_issue27 import _train

    run = _run(tmp_path)
    _train(run, 1, b"M_2")
    # a finished checkpoint: `train` records its training in the manifest without training
    assert main(["train", str(run), "--iteration", "1", "--no-progress"]) == 0
    assert run_table(run).loc[1, "dpo_steps"] == 1
    store = Store.open(run)
    check_checkpoint(store, 1, redo=True)  # what `train --redo` does first; then it is killed
    store.close()
    assert not (run / "iter_01" / "checkpoint").exists()
    row = run_table(run).loc[1]
    assert row["dpo_steps"] == 0 and row["dpo_pairs"] == 0 and row["train_seconds"] == 0


def test_an_alarm_that_stops_the_loop_is_the_runs_for_the_report_too(tmp_path: Path) -> None:
    """The loop stopped on score_collapse with thresholds given on the resuming command:
    summary.csv flags it (B3), and so must every later reading of the run (``metajudge
    report``'s table and digest, ``analyze bias``), which read the saved config: it said
    "alarms: none" for the iteration the loop had just stopped on."""
    from metajudge.stages.summary import run_table

    run = tmp_path / "run"
    assert main(["generate", "--config", TINY, "--out", str(run), "--limit", "2", "-k", "2",
                 "--no-progress", *WEIGHTS]) == 0
    assert main(["run", TINY, "--out", str(run), "--iterations", "1", "--no-progress", *WEIGHTS,
                 "--set", "prompts.per_iteration=2", "--set", "generation.samples_per_prompt=2",
                 "--set", "judge_health.max_top_score_share=0.05",
                 "--set", "judge_health.stop_on_alarm=true"]) == 2
    assert run_table(run).loc[1, "alarms"] == "score_collapse"


def test_an_actor_only_iteration_shows_no_stale_meta_judgments_in_its_summary(
        tmp_path: Path) -> None:
    """B5 read no stale meta-judge file in the pairs; the summary still did: after ``judge
    --redo`` with another N and ``pairs --redo`` of an actor-only iteration, the iteration's
    row showed the old meta-judgments' columns (meta_first_share 0.4167, matched against the
    new judgments' indices), which also feed the first_position alarm (stop_on_alarm)."""
    from metajudge.stages.summary import run_table

    run = _run(tmp_path)
    assert main(["judge", str(run), "--iteration", "1", "--redo", "--no-progress",
                 "--set", "judge.judgments_per_response=2"]) == 0
    assert main(["pairs", str(run), "--iteration", "1", "--redo", "--no-progress",
                 "--set", "pairs.pair_types=[[actor],[actor]]"]) == 0
    row = run_table(run).loc[1]
    assert row["meta_judgments"] == 0
    share = row.get("meta_first_share", float("nan"))
    assert share != share  # NaN (or no column): no current meta-judgment


def test_a_redo_killed_before_its_costs_were_recorded_shows_no_old_costs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B6 counts a new making's costs from its first recorded pass; until then (a ``judge
    --redo`` killed before its pass was recorded) the manifest entry is the discarded file's,
    and the summary showed its costs beside the new file's records (2988 tokens for a file of
    8 judgments that took 1992)."""
    from metajudge.stages.summary import run_table

    run = _run(tmp_path)
    old = run_table(run).loc[1, "judge_generated_tokens"]
    with monkeypatch.context() as patch:
        real = Store.record_stage

        def killed(self, key, summary, **kwargs):  # type: ignore[no-untyped-def]
            if key.endswith("/judge"):
                raise Killed
            return real(self, key, summary, **kwargs)

        patch.setattr(Store, "record_stage", killed)
        with _maybe_killed():
            main(["judge", str(run), "--iteration", "1", "--redo", "--no-progress",
                  "--set", "judge.judgments_per_response=2"])
    row = run_table(run).loc[1]
    assert row["judgments"] == 8
    assert row["judge_generated_tokens"] != old  # not the discarded making's
