"""Provenance, round 3 (issue 27 B): nothing stale reaches training, a summary or a checkpoint.

The run's records are made by the instant backend naming its model by its weights
(``InstantWeightsBackend``), as the real backends do. A checkpoint is written here as training
writes one (its weights, then the marker naming what it was trained from): provenance reads no
more of it than its weights' digest and the marker, so a real DPO (minutes) would test nothing
more here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metajudge.cli import main
from metajudge.store import ConfigMismatchError, Store

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TINY = str(ROOT / "configs" / "tiny.yaml")
WEIGHTS = ["--set", "backend.kind=instant_backend:InstantWeightsBackend",
           "--set", "runner.retry_delay_s=0"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _start(run: Path, *extra: str) -> None:
    assert main(["generate", "--config", TINY, "--out", str(run), "--limit", "2", "-k", "2",
                 "--no-progress", *WEIGHTS, *extra]) == 0


def _stages(run: Path, iteration: int, *extra: str) -> None:
    if iteration > 1:
        assert main(["generate", "--out", str(run), "--iteration", str(iteration),
                     "--no-progress", *extra]) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--iteration", str(iteration), "--no-progress",
                     *extra]) == 0, stage


def _train(run: Path, iteration: int, weights: bytes) -> str:
    """A finished checkpoint of ``iteration``, written as training writes one."""
    from metajudge.stages.train import made_from
    from metajudge.training.dpo import weights_digest

    store = Store.open(run, lock=False)
    recorded = made_from(store, iteration)  # what it is trained from: read before training
    folder = run / f"iter_{iteration:02d}" / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(weights)
    digest = weights_digest(folder)
    (folder / "metajudge.json").write_text(json.dumps({
        "weights_sha256": digest, "made_from": recorded, "pairs": 1, "steps": 1,
        "seconds": 0.0, "final_metrics": {}}))
    return digest


# ------------------------------------ B1: M_t is an input of every file M_t made
def test_records_of_an_m_t_retrained_since_are_stale_up_to_training(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metajudge.stages.train import iteration_model

    run = tmp_path / "run"
    _start(run)
    _stages(run, 1)
    _train(run, 1, b"M_2")
    _stages(run, 2)
    old_m2 = _lines(run / "iter_02" / "responses.jsonl")[0]["provenance"]["backend"]
    _train(run, 2, b"M_3")
    # iteration 1 is retrained (`train --iteration 1 --redo`): M_2 is another model now
    (run / "iter_01" / "checkpoint").rename(run / "iter_01" / "old-checkpoint")
    new = _train(run, 1, b"another M_2")
    assert old_m2["revision"] != new
    capsys.readouterr()

    # every stage of iteration 2, and its training, refuses the old M_2's records, naming the
    # command that remakes the first stale file
    for command in (["pairs", str(run), "--iteration", "2"],
                    ["train", str(run), "--iteration", "2", "--redo"],
                    ["run", TINY, "--out", str(run), "--iterations", "2", *WEIGHTS,
                     "--set", "prompts.per_iteration=2",
                     "--set", "generation.samples_per_prompt=2"]):
        assert main([*command, "--no-progress"]) == 2, command
        err = capsys.readouterr().err
        assert "made by an earlier M_2" in err, err
        assert f"metajudge generate {run} --iteration 2 --redo" in err, err
    assert (run / "iter_02" / "checkpoint").is_dir()  # the refused redo moved nothing aside
    assert not (run / "iter_02" / "trainer").exists()
    # M_3 is not handed out: it was trained on the old M_2's pairs
    store = Store.open(run, lock=False)
    with pytest.raises(ConfigMismatchError, match="made by an earlier M_2"):
        iteration_model(store, 3)

    # remade in turn, iteration 2's files are current; then only its checkpoint is stale
    assert main(["generate", "--out", str(run), "--iteration", "2", "--no-progress",
                 "--redo"]) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--iteration", "2", "--no-progress", "--redo"]) == 0
    assert {r["provenance"]["backend"]["revision"]
            for r in _lines(run / "iter_02" / "judgments.jsonl")} == {new}
    with pytest.raises(ConfigMismatchError, match="--iteration 2 --redo` trains it again"):
        iteration_model(store, 3)
