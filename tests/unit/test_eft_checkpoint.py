"""The EFT checkpoint is kept only while it was trained from the examples, the base model and
the SFT settings of now: `metajudge eft --limit 3` then `--limit 8` remakes eft_sft.jsonl, and
the checkpoint trained on the first examples must not be reused for the second."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from metajudge.config import load_config
from metajudge.training.checkpoint import CHECKPOINT, MARKER, file_digest
from metajudge.training.sft import reusable_checkpoint, sft_made_from

SEED = ["backend.model=org/seed-model", "backend.revision=v1.0"]


def _examples(folder: Path, n: int) -> Path:
    path = folder / "eft_sft.jsonl"
    path.write_text("".join(json.dumps({"id": f"e{k}", "score": 4}) + "\n" for k in range(n)))
    return path


def _checkpoint(folder: Path, made_from: dict | None) -> dict:
    target = folder / CHECKPOINT
    target.mkdir(parents=True)
    meta = {"stage": "eft", "examples": 6, "steps": 3, "final_metrics": {},
            **({"made_from": made_from} if made_from is not None else {})}
    (target / MARKER).write_text(json.dumps(meta))
    return meta


def test_made_from_names_the_examples_the_model_and_the_shaping_settings(tmp_path: Path
                                                                         ) -> None:
    config = load_config(None, SEED)
    examples = _examples(tmp_path, 6)
    made = sft_made_from(config.backend.model, examples, config)
    assert made["eft_sft.jsonl"] == file_digest(examples)
    assert made["model"] == "org/seed-model@v1.0"
    assert made["eft.learning_rate"] == config.eft.learning_rate
    _examples(tmp_path, 20)
    remade = sft_made_from(config.backend.model, examples, config)
    assert remade["eft_sft.jsonl"] != made["eft_sft.jsonl"]
    for change, differs in (("eft.epochs=3", True), ("training.mixed_precision=no", True),
                            ("backend.revision=v2.0", True), ("seed=7", True),
                            ("eft.per_device_batch_size=1", False)):  # memory, not weights
        other = load_config(None, [*SEED, change])
        again = sft_made_from(other.backend.model, examples, other)
        assert (again != sft_made_from(config.backend.model, examples, config)) == differs, change


def test_a_checkpoint_from_other_examples_is_moved_aside_and_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(None, SEED)
    examples = _examples(tmp_path, 6)
    before = sft_made_from(config.backend.model, examples, config)
    meta = _checkpoint(tmp_path, before)
    assert reusable_checkpoint(tmp_path, before) == meta  # the same examples: reused
    _examples(tmp_path, 20)  # a rerun with a larger --limit
    now = sft_made_from(config.backend.model, examples, config)
    with caplog.at_level(logging.WARNING, logger="metajudge.training.sft"):
        assert reusable_checkpoint(tmp_path, now) is None
    assert not (tmp_path / CHECKPOINT).exists()
    aside = list((tmp_path / "replaced").iterdir())
    assert len(aside) == 1 and json.loads((aside[0] / MARKER).read_text()) == meta
    assert "another eft_sft.jsonl than now" in caplog.text and "moved aside" in caplog.text


def test_a_checkpoint_made_before_made_from_was_recorded_is_kept(tmp_path: Path) -> None:
    config = load_config(None, SEED)
    meta = _checkpoint(tmp_path, None)
    now = sft_made_from(config.backend.model, _examples(tmp_path, 20), config)
    assert reusable_checkpoint(tmp_path, now) == meta
    assert (tmp_path / CHECKPOINT / MARKER).is_file() and not (tmp_path / "replaced").exists()


def test_two_redos_in_the_same_second_keep_both_moved_aside_checkpoints(tmp_path: Path) -> None:
    """B8's rule for the EFT checkpoint: each moved-aside copy gets its own name in replaced/
    (named by the second, the second one was moved *into* the first's folder)."""
    config = load_config(None, SEED)
    examples = _examples(tmp_path, 6)
    metas = []
    for n in (6, 20, 30):
        _examples(tmp_path, n)
        made = sft_made_from(config.backend.model, examples, config)
        if metas:
            assert reusable_checkpoint(tmp_path, made) is None
        metas.append(_checkpoint(tmp_path, made))
    aside = sorted((tmp_path / "replaced").iterdir())
    assert len(aside) == 2
    assert sorted(json.loads((a / MARKER).read_text())["made_from"]["eft_sft.jsonl"]
                  for a in aside) == sorted(m["made_from"]["eft_sft.jsonl"] for m in metas[:2])
