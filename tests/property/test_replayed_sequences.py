"""Fixed command sequences replayed on the property test's state machine
(:mod:`tests.property.test_run_invariants`), so that the default suite checks the shortest known
sequence of each issue-27 B defect the random search has to be lucky to draw (review of issue
27 C: the CI budget draws ``judge --redo`` after a judge pass only sometimes). Each sequence is
the one the state machine printed or its shortest form; the same oracle judges every step, and
each failed on the code before its fix (B6 was shown by reverting 91839bd, B2 by the
proptest branch before the provenance fixes were merged)."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from tests.property.test_run_invariants import Command, RunInvariants  # noqa: E402


def _replay(commands: list[Command]) -> None:
    machine = RunInvariants()
    try:
        machine.start()
        for command in commands:
            machine.step(command)
    finally:
        machine.teardown()


def test_b6_a_redone_judge_stage_counts_only_its_own_records() -> None:
    """$ metajudge generate ... (init); judge RUN; judge RUN --redo: the manifest counted 54
    judgments made where judgments.jsonl held 27."""
    _replay([Command("judge"), Command("judge", redo=True)])


@pytest.mark.parametrize("write", [8, 9, 10])
def test_b2_a_pairs_redo_killed_between_its_files_leaves_nothing_for_training(
        write: int) -> None:
    """$ ...; judge; meta-judge; pairs; pairs --redo (SIGKILL before write #k); train RUN: train
    exited 0 on the old dpo_pairs.jsonl while pairs.jsonl held no pair."""
    _replay([Command("judge"), Command("meta-judge"), Command("pairs"),
             Command("pairs", redo=True, kill_write=write), Command("train")])
