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


# ------------------------------- B2: a stage's outputs become current together
@pytest.mark.parametrize("stop_at", ["dpo_pairs", "commit"])
def test_an_interrupted_pairs_redo_leaves_nothing_that_looks_current(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        stop_at: str) -> None:
    from metajudge import provenance
    from metajudge.stages.pairs import run_pairs

    run = tmp_path / "run"
    _start(run)
    _stages(run, 1)
    _train(run, 1, b"M_2")
    old_dpo = (run / "iter_01" / "dpo_pairs.jsonl").read_text()
    for stage in ("judge", "meta-judge"):  # other judgments: the pairs must be remade
        assert main([stage, str(run), "--no-progress", "--redo",
                     "--set", "judge.judgments_per_response=4"]) == 0

    real_write = Store.write_all

    def killed_at_dpo_pairs(self, file, records, iteration=None):  # type: ignore[no-untyped-def]
        if file.name == "dpo_pairs":
            raise KeyboardInterrupt  # a kill while the third file is written
        return real_write(self, file, records, iteration)

    def killed_before_commit(self):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # a kill after the three files, before they are recorded

    store = Store.open(run)
    with monkeypatch.context() as patch:
        if stop_at == "dpo_pairs":
            patch.setattr(Store, "write_all", killed_at_dpo_pairs)
        else:
            patch.setattr(provenance.Making, "commit", killed_before_commit)
        with pytest.raises(KeyboardInterrupt):
            run_pairs(store, 1, redo=True)
    store.close()
    it = run / "iter_01"
    # --redo moved every output of the stage aside, the old dpo_pairs.jsonl with them
    moved = list((it / "replaced").glob("pairs-*"))
    assert len(moved) == 1 and (moved[0] / "dpo_pairs.jsonl").read_text() == old_dpo
    assert {p.name for p in moved[0].iterdir()} >= {
        "pairs.jsonl", "pair_decisions.jsonl", "dpo_pairs.jsonl", "pairs.settings.json"}
    capsys.readouterr()
    # neither training nor the loop takes what the interrupted stage left as current
    assert main(["train", str(run), "--no-progress"]) == 2
    assert "pairs" in capsys.readouterr().err
    assert main(["run", TINY, "--out", str(run), "--iterations", "1", "--no-progress", *WEIGHTS,
                 "--set", "prompts.per_iteration=2",
                 "--set", "generation.samples_per_prompt=2"]) == 2
    captured = capsys.readouterr()
    assert "is finished" not in captured.err + captured.out
    # the pairs, made again, are current; the checkpoint (of the old pairs) is not
    assert main(["pairs", str(run), "--no-progress"]) == 0
    assert main(["train", str(run), "--no-progress"]) == 2
    assert "trained from another dpo_pairs" in capsys.readouterr().err


def test_training_refuses_dpo_pairs_changed_after_the_pairs_stage(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    _start(run)
    _stages(run, 1)
    dpo = run / "iter_01" / "dpo_pairs.jsonl"
    dpo.write_text("".join(dpo.read_text().splitlines(keepends=True)[1:]))  # a row less
    capsys.readouterr()
    assert main(["train", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "dpo_pairs.jsonl" in err and "not what the last pairs stage made" in err


# ----------------------------- B8: two redos in one second keep both moved-aside copies
def test_two_redos_in_the_same_second_keep_both_replaced_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import metajudge.store

    run = tmp_path / "run"
    _start(run)
    assert main(["judge", str(run), "--no-progress"]) == 0
    first = (run / "iter_01" / "judgments.jsonl").read_text()
    monkeypatch.setattr(metajudge.store.time, "strftime", lambda fmt: "20260101-120000")
    assert main(["judge", str(run), "--no-progress", "--redo",
                 "--set", "judge.judgments_per_response=2"]) == 0
    second = (run / "iter_01" / "judgments.jsonl").read_text()
    assert main(["judge", str(run), "--no-progress", "--redo"]) == 0  # the same second
    replaced = sorted((run / "iter_01" / "replaced").iterdir())
    assert [p.name for p in replaced] == ["judgments-20260101-120000",
                                          "judgments-20260101-120000-2"]
    assert [(p / "judgments.jsonl").read_text() for p in replaced] == [first, second]
    assert not list((run / "iter_01" / "replaced").glob("*/*/judgments.jsonl"))


# ---------------------------------------- B6: after a redo, the costs are the new file's
def test_after_a_redo_the_manifest_and_summary_count_the_new_file_only(tmp_path: Path) -> None:
    from metajudge.stages.summary import run_table

    run = tmp_path / "run"
    _start(run)
    assert main(["judge", str(run), "--no-progress"]) == 0
    once = json.loads((run / "manifest.json").read_text())["stages"]["iter_01/judge"]
    assert main(["judge", str(run), "--no-progress", "--redo"]) == 0
    entry = json.loads((run / "manifest.json").read_text())["stages"]["iter_01/judge"]
    judged = _lines(run / "iter_01" / "judgments.jsonl")
    assert entry["generated_tokens"] == sum(j["completion_tokens"] for j in judged) \
        == once["generated_tokens"]
    assert entry["backend_calls"] == once["backend_calls"] and entry["completed"] == len(judged)
    assert run_table(run).loc[1, "judge_generated_tokens"] == entry["generated_tokens"]
    assert main(["judge", str(run), "--no-progress"]) == 0  # a resume of the same making
    resumed = json.loads((run / "manifest.json").read_text())["stages"]["iter_01/judge"]
    assert resumed["passes"] == 2 and resumed["generated_tokens"] == entry["generated_tokens"]


# ----------------------- B3: the summary's alarm flags are the ones the loop checked
def test_an_alarm_that_stops_the_loop_is_flagged_in_the_summary(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pandas as pd

    from metajudge.tracking import numeric_rows

    run = tmp_path / "run"
    _start(run)  # saved with the default thresholds
    capsys.readouterr()
    assert main(["run", TINY, "--out", str(run), "--iterations", "1", "--no-progress", *WEIGHTS,
                 "--set", "prompts.per_iteration=2", "--set", "generation.samples_per_prompt=2",
                 "--set", "judge_health.max_top_score_share=0.05",
                 "--set", "judge_health.stop_on_alarm=true"]) == 2
    assert "judge-health alarm score_collapse" in capsys.readouterr().err
    table = pd.read_csv(run / "summary.csv", index_col="iteration")
    assert bool(table.loc[1, "alarm_score_collapse"]) and table.loc[1, "alarms"] == \
        "score_collapse"
    # the trackers are written from the same table
    assert numeric_rows(table)[1]["alarm_score_collapse"] == 1.0


# ------------------------------------- B5: actor-only pairs read no meta-judge file
def test_actor_only_pairs_read_no_meta_judge_file(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metajudge.stages.summary import run_table

    run = tmp_path / "run"
    _start(run)
    _stages(run, 1)  # actor and judge pairs, from N = 3 judgments per response
    assert main(["judge", str(run), "--no-progress", "--redo",
                 "--set", "judge.judgments_per_response=2"]) == 0  # the meta-judgments are stale
    actor_only = ["--set", "pairs.pair_types=[[actor],[actor]]"]
    assert main(["pairs", str(run), "--no-progress", "--redo", *actor_only]) == 0, \
        capsys.readouterr().err
    it = run / "iter_01"
    assert {p["pair_type"] for p in _lines(it / "pairs.jsonl")} == {"actor"}
    assert {d["pair_type"] for d in _lines(it / "pair_decisions.jsonl")} == {"actor"}
    judged = {j["id"] for j in _lines(it / "judgments.jsonl")}
    assert all(p["chosen_id"] in {r["id"] for r in _lines(it / "responses.jsonl")}
               for p in _lines(it / "pairs.jsonl")) and judged
    assert run_table(run).loc[1, "judge_pairs"] == 0
    # with the same N, too, no judge pair of the old meta-judgments lands in the pairs
    assert main(["judge", str(run), "--no-progress", "--redo"]) == 0
    assert main(["pairs", str(run), "--no-progress", "--redo", *actor_only]) == 0
    assert {p["pair_type"] for p in _lines(it / "pairs.jsonl")} == {"actor"}


# --------------- B7: one rule: a judgment whose verdict is in its text may be chosen
def test_a_judgment_that_wrote_its_score_then_ran_on_is_chosen_trimmed(tmp_path: Path) -> None:
    from metajudge.config import load_config
    from metajudge.records import (
        BackendFingerprint,
        Judgment,
        MetaJudgment,
        MetaSelection,
        Prompt,
        Provenance,
        Response,
        SamplingParams,
    )
    from metajudge.stages.pairs import run_pairs
    from metajudge.store import (
        JUDGMENTS,
        META_JUDGMENTS,
        META_SELECTION,
        PAIR_DECISIONS,
        PAIRS,
        PROMPTS,
        RESPONSES,
    )

    made = Provenance(backend=BackendFingerprint(kind="test", model="m"),
                      params=SamplingParams(), seed=0, sample_index=0)
    # j0 wrote its score, then ran on to max_tokens; j1 was cut off and its verdict completed;
    # j2's score was forced. The meta-judge prefers j0 over j1 over j2 in both orders.
    texts = ["Accurate and clear.\nScore: 5\nThe response could also mention", "Mostly right",
             "Unclear."]
    sources, finish = ["parsed", "completed", "forced"], ["length", "length", "stop"]
    config = load_config(TINY, ["pairs.judge_max_chosen_chars=[null]"])
    store = Store.open(tmp_path / "run", config)
    store.write_all(PROMPTS, [Prompt(id="p", instruction="Name a colour.")], 1)
    store.write_all(RESPONSES, [Response(
        id="p#0", prompt_id="p", instruction="Name a colour.", text="Blue.",
        finish_reason="stop", prompt_tokens=1, completion_tokens=1, provenance=made)], 1)
    store.write_all(JUDGMENTS, [Judgment(
        id=f"p#0@j{n}", response_id="p#0", prompt_id="p", iteration=1, index=n,
        text=texts[n], score=[5.0, 3.0, 1.0][n], score_source=sources[n],  # type: ignore[arg-type]
        completed_text="Mostly right\nScore: 3" if n == 1 else None,
        finish_reason=finish[n], prompt_tokens=1, completion_tokens=1,  # type: ignore[arg-type]
        provenance=made) for n in range(3)], 1)
    store.write_all(META_SELECTION, [MetaSelection(
        id="p", iteration=1, response_id="p#0", variance=2.7, scored_judgments=3,
        reason="largest score variance")], 1)
    store.write_all(META_JUDGMENTS, [MetaJudgment(
        id=f"p#0@m{a}-{b}", response_id="p#0", prompt_id="p", iteration=1, first=a,
        second=b, winner="first" if a < b else "second", winner_source="parsed",
        hide_scores=False, text="", prompt_tokens=1, completion_tokens=1, provenance=made)
        for a in range(3) for b in range(3) if a != b], 1)
    run_pairs(store, 1)
    pair = next(p for p in store.read(PAIRS, 1) if p.pair_type == "judge")
    assert pair.chosen_id == "p#0@j0" and pair.rejected_id == "p#0@j2"
    assert pair.chosen == "Accurate and clear.\nScore: 5"  # trimmed at its verdict line
    decision = next(d for d in store.read(PAIR_DECISIONS, 1) if d.pair_type == "judge")
    assert decision.chosen_source == "parsed"
    assert decision.reason == ("pair; 1 of 3 judgments without their verdict in their text "
                               "(forced or failed) left out of chosen")
    store.close()


# ---------------------- B4: EFT's judgments are of the --ranked file's texts, not its ids
def test_eft_judgments_are_refused_once_the_ranked_texts_change(tmp_path: Path) -> None:
    from instant_backend import InstantBackend

    from metajudge.config import load_config
    from metajudge.stages.eft import load_ranked, run_eft_judgments, select_prompts

    ranked = tmp_path / "ranked.jsonl"
    ranked.write_text((DATA / "oasst_ranked_later_turns.jsonl").read_text())
    config = load_config(TINY, ["backend.kind=instant_backend:InstantBackend",
                                "runner.retry_delay_s=0"])
    store = Store.open(tmp_path / "eft", config)
    backend = InstantBackend(config.backend)
    rows = select_prompts(load_ranked(ranked), 2).rows
    first = run_eft_judgments(store, backend, rows, progress=False)
    assert first.completed == first.requested > 0
    assert run_eft_judgments(store, backend, rows, progress=False).reused == first.requested
    # the same message ids with other texts
    edited = [json.loads(x) for x in ranked.read_text().splitlines()]
    for row in edited:
        for reply in row["replies"]:
            reply["text"] = "Edited: " + reply["text"]
    ranked.write_text("".join(json.dumps(r) + "\n" for r in edited))
    rows = select_prompts(load_ranked(ranked), 2).rows
    with pytest.raises(ConfigMismatchError, match="ranked_sha256"):
        run_eft_judgments(store, backend, rows, progress=False)
    again = run_eft_judgments(store, backend, rows, progress=False, redo=True)
    assert again.reused == 0 and again.completed == first.requested
    store.close()


# ------ (found here, unnamed) a meta-judge redo moves the selection aside with its records
def test_a_meta_judge_redo_moves_its_selection_aside_with_its_records(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _start(run)
    _stages(run, 1)
    it = run / "iter_01"
    selection = (it / "meta_selection.jsonl").read_text()
    assert main(["meta-judge", str(run), "--no-progress", "--redo"]) == 0
    moved = list((it / "replaced").glob("meta_judgments-*"))
    assert len(moved) == 1 and (moved[0] / "meta_selection.jsonl").read_text() == selection
    assert (it / "meta_selection.jsonl").read_text() == selection  # made again, the same
