"""Provenance and resume, round 2 (issue 22): a redo makes what was built on it refuse, each
checkpoint is its own model, EFT waits for its judgments, a refused resume saves nothing, a
refused open keeps no lock, pairs record their variant, and a corrupt line is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metajudge.cli import main
from metajudge.config import ServeOptions, load_config
from metajudge.jsonl import InputError
from metajudge.stages.generate import run_generate
from metajudge.stages.judge import run_judge
from metajudge.stages.meta_judge import run_meta_judge
from metajudge.store import (
    JUDGMENTS,
    PROMPTS,
    RESPONSES,
    ConfigMismatchError,
    LockedError,
    Store,
)
from tests.fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TINY = str(ROOT / "configs" / "tiny.yaml")
SETS = ["--set", "backend.kind=instant_backend:InstantBackend", "--set", "runner.retry_delay_s=0"]


def _generate(run: Path, *extra: str) -> list[str]:
    return ["generate", "--config", TINY, "--out", str(run), "--limit", "2", "-k", "2",
            "--no-progress", *SETS, *extra]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


# ----------------------------------------------------------------- item 1: a redo cascades
def test_a_redo_makes_every_stage_built_on_the_old_records_refuse_them(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert main(_generate(run, "--redo")) == 0  # new responses
    capsys.readouterr()

    # judgments of the old texts are not reused: the judge refuses them by name
    assert main(["judge", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "judgments.jsonl" in err and "responses.jsonl" in err and "--redo" in err
    # and so does every stage after it, even before the judge is redone
    for stage in ("meta-judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 2, stage
        assert "responses.jsonl" in capsys.readouterr().err
    assert main(["judge", str(run), "--no-progress", "--redo"]) == 0
    assert "0 reused" in capsys.readouterr().out
    # meta-judgments (and their selection) of the old judgments, and pairs made from them
    assert main(["meta-judge", str(run), "--no-progress"]) == 2
    assert "judgments.jsonl" in capsys.readouterr().err
    assert main(["pairs", str(run), "--no-progress"]) == 2
    assert "meta_judgments.jsonl" in capsys.readouterr().err
    assert main(["meta-judge", str(run), "--no-progress", "--redo"]) == 0
    assert main(["pairs", str(run), "--no-progress"]) == 2  # pairs of the old records
    assert "pairs.jsonl" in capsys.readouterr().err
    assert main(["pairs", str(run), "--no-progress", "--redo"]) == 0
    # now every stage takes its records as they are
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 0, capsys.readouterr().err
    it = run / "iter_01"
    judged = {j["id"] for j in _lines(it / "judgments.jsonl")}
    assert {p["chosen_id"] for p in _lines(it / "pairs.jsonl")
            if p["pair_type"] == "judge"} <= judged
    assert list((it / "replaced").glob("judgments-*/judgments.jsonl"))


def test_generations_are_kept_on_resume_and_renewed_by_a_redo(instant_run) -> None:  # type: ignore[no-untyped-def]
    store, backend = instant_run
    run_generate(store, backend, 1, progress=False)
    first = store.generation(RESPONSES, 1)
    run_judge(store, backend, 1, progress=False)
    size = store.path(RESPONSES, 1).stat().st_size
    assert first and store.settings(JUDGMENTS, 1)["inputs"] == {
        "responses": f"{first}@{size}", "model": "smollm2-135m-instruct@b179c9523d0e6a0f"}
    run_generate(store, backend, 1, progress=False)  # a resume: the same records
    assert store.generation(RESPONSES, 1) == first
    run_judge(store, backend, 1, progress=False)
    run_generate(store, backend, 1, progress=False, redo=True)
    assert store.generation(RESPONSES, 1) not in (None, first)
    with pytest.raises(ConfigMismatchError, match="responses.jsonl"):
        run_meta_judge(store, backend, 1, progress=False)  # judgments of the old texts


def test_a_run_made_before_generations_resumes_as_it_was(instant_run) -> None:  # type: ignore[no-untyped-def]
    store, backend = instant_run
    run_generate(store, backend, 1, progress=False)
    run_judge(store, backend, 1, progress=False)

    def as_an_older_metajudge_wrote_them() -> None:
        for name, old in (("responses", {}), ("judgments", {"responses": "0123456789abcdef"})):
            path = store.iteration_dir(1) / f"{name}.settings.json"
            data = json.loads(path.read_text())
            del data["generation"], data["inputs"]
            path.write_text(json.dumps({**data, **old}))

    as_an_older_metajudge_wrote_them()
    run_generate(store, backend, 1, progress=False)
    assert run_judge(store, backend, 1, progress=False).reused == 36
    assert store.generation(RESPONSES, 1) is None  # still the same making of the file
    as_an_older_metajudge_wrote_them()
    run_generate(store, backend, 1, progress=False, redo=True)  # a redo is still seen
    with pytest.raises(ConfigMismatchError, match="responses.jsonl"):
        run_judge(store, backend, 1, progress=False)


def test_a_stage_resumed_after_a_later_one_read_it_makes_that_one_stale(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # the meta-judge's selection made from judgments with failures left is not kept once the
    # judge, resumed, adds the missing ones: the judgments file grew since
    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    monkeypatch.setenv("INSTANT_FAIL_FIRST", "2")
    assert main(["judge", str(run), "--no-progress", "--set", "runner.retry_passes=0"]) == 0
    monkeypatch.delenv("INSTANT_FAIL_FIRST")
    assert main(["meta-judge", str(run), "--no-progress"]) == 0
    assert main(["judge", str(run), "--no-progress"]) == 0  # the failed ones, again
    capsys.readouterr()
    assert main(["meta-judge", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "judgments.jsonl" in err and "grown" in err and "--redo" in err
    assert main(["meta-judge", str(run), "--no-progress", "--redo"]) == 0


def test_training_refuses_pairs_of_records_remade_since(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert main(["judge", str(run), "--no-progress", "--redo"]) == 0
    capsys.readouterr()
    # dpo_pairs.jsonl is as it was, but made from judgments the run no longer holds
    assert main(["train", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "meta_judgments.jsonl" in err and "stale" in err  # the first stale file up the chain
    assert not (run / "iter_01" / "trainer").exists()  # refused before training started


# -------------------------------------------- item 2: each checkpoint is its own model
def _checkpoint(folder: Path, weights: bytes) -> str:
    from metajudge.training.dpo import weights_digest

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    digest = weights_digest(folder)
    (folder / "metajudge.json").write_text(json.dumps({"weights_sha256": digest}))
    return digest


def test_with_a_pinned_revision_each_checkpoint_is_its_own_model(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metajudge.models import resolve_model

    run = tmp_path / "run"
    with FaultServer() as server:
        sets = ["--set", "backend.kind=openai", "--set", f"backend.openai.base_url={server.url}",
                "--set", "backend.model=org/seed-model", "--set", "backend.revision=v1.0",
                "--set", "backend.openai.logprobs=false", "--set", "runner.retry_delay_s=0"]
        assert main(["generate", "--config", TINY, "--out", str(run), "--limit", "1", "-k", "1",
                     "--no-progress", *sets]) == 0
        first = _checkpoint(run / "iter_01" / "checkpoint", b"weights of M_2")
        assert main(["generate", "--out", str(run), "--iteration", "2", "--no-progress"]) == 0
        seed = _lines(run / "iter_01" / "responses.jsonl")[0]["provenance"]["backend"]
        m2 = _lines(run / "iter_02" / "responses.jsonl")[0]["provenance"]["backend"]
        assert seed["revision"] == "v1.0"  # the seed's pinned revision is the seed's
        assert m2["revision"] == first  # M_2 is its own weights
        # iteration 1 is retrained: M_2 is another model, and its records are refused
        second = _checkpoint(run / "iter_01" / "checkpoint", b"other weights of M_2")
        assert second != first
        capsys.readouterr()
        assert main(["generate", "--out", str(run), "--iteration", "2", "--no-progress"]) == 2
        assert "another backend" in capsys.readouterr().err
    assert resolve_model(str(run / "iter_01" / "checkpoint"), "v1.0").revision == second


# ------------------------------------------------- item 3: EFT waits for its judgments
def test_eft_stops_while_judgments_still_fail(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSTANT_FAIL_FIRST", "2")  # every 2nd request fails its first try
    out = tmp_path / "eft"
    args = ["eft", "--ranked", str(DATA / "oasst_ranked_later_turns.jsonl"), "--out", str(out),
            "--config", TINY, "--limit", "2", "--no-progress", *SETS,
            "--set", "runner.retry_passes=0", "--set", "eft.use_forced=true"]
    assert main(args) == 2
    assert "still fail" in capsys.readouterr().err
    assert not (out / "eft_decisions.jsonl").exists() and not (out / "checkpoint").exists()
    assert not (out / "eft_sft.jsonl").exists()


# ------------------------------------ item 4: a refused resume leaves config.yaml alone
def test_a_loop_refused_by_a_later_stage_saves_no_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    assert main(["judge", str(run), "--no-progress"]) == 0
    saved = (run / "config.yaml").read_text()
    capsys.readouterr()
    # the loop's generate takes the new judge setting (it is not one of its own); judge refuses
    assert main(["run", TINY, "--out", str(run), "--iterations", "1", "--no-progress", *SETS,
                 "--set", "prompts.per_iteration=2", "--set", "generation.samples_per_prompt=2",
                 "--set", "judge.temperature=0.0"]) == 2
    assert "params.temperature" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == saved
    assert main(["judge", str(run), "--no-progress"]) == 0  # the next plain resume works
    assert "0 new" in capsys.readouterr().out


def test_a_loop_stopped_by_failures_saves_no_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # not only a refusal: a stage that stops on failures leaves the later stages' settings
    # unchecked, so they are not saved either
    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    assert main(["judge", str(run), "--no-progress"]) == 0
    saved = (run / "config.yaml").read_text()
    (run / "iter_01" / "responses.jsonl").write_text(
        (run / "iter_01" / "responses.jsonl").read_text().splitlines(keepends=True)[0])
    monkeypatch.setenv("INSTANT_FAIL_FIRST", "1")  # every request fails its first try
    assert main(["run", TINY, "--out", str(run), "--iterations", "1", "--no-progress", *SETS,
                 "--set", "prompts.per_iteration=2", "--set", "generation.samples_per_prompt=2",
                 "--set", "runner.retry_passes=0", "--set", "judge.temperature=0.0"]) == 2
    assert "still fail" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == saved


# ------------------------------------------------ item 7: a refused open keeps no lock
def test_a_refused_open_releases_the_lock_while_its_error_lives(tmp_path: Path) -> None:
    config = load_config(TINY)
    Store.open(tmp_path / "run", config).close()
    other = config.model_copy(update={"seed": 1})
    with pytest.raises(ConfigMismatchError) as refused:
        Store.open(tmp_path / "run", other)
    assert refused.value.__traceback__ is not None  # the traceback (and its frames) live on
    try:
        store = Store.open(tmp_path / "run", config)
    except LockedError as exc:  # pragma: no cover - the defect
        pytest.fail(f"the refused open kept the lock: {exc}")
    store.close()


# ----------------------------------- item 10: pairs record their variant and check it
def test_pairs_record_consistent_only_and_refuse_a_changed_setting(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    for stage in ("judge", "meta-judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 0
    it = run / "iter_01"
    judge_pairs = [p for p in _lines(it / "pairs.jsonl") if p["pair_type"] == "judge"]
    assert judge_pairs and {p["consistent_only"] for p in judge_pairs} == {False}
    assert json.loads((it / "pairs.settings.json").read_text())["consistent_only"] is False
    capsys.readouterr()
    consistent = ["--set", "meta_judge.consistent_only=true"]
    assert main(["pairs", str(run), "--no-progress", *consistent]) == 2
    assert "consistent_only: False -> True" in capsys.readouterr().err
    assert main(["pairs", str(run), "--no-progress", "--redo", *consistent]) == 0
    assert {p["consistent_only"] for p in _lines(it / "pairs.jsonl")
            if p["pair_type"] == "judge"} <= {True}
    assert {p["consistent_only"] for p in _lines(it / "pairs.jsonl")
            if p["pair_type"] == "actor"} == {None}


# ------------------------------------ item 11: a corrupt line is named by file and line
@pytest.mark.parametrize("line,bad,field", [(1, "not json", None), (3, "{oops", None),
                                             (2, '{"prompt_id": "x"}', "id")])
def test_a_corrupt_stage_line_is_named_by_file_line_and_field(
        tmp_path: Path, capsys: pytest.CaptureFixture, line: int, bad: str,
        field: str | None) -> None:
    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    path = run / "iter_01" / "responses.jsonl"
    rows = path.read_text().splitlines()
    rows[line - 1] = bad
    path.write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert main(_generate(run)) == 2  # line 1: the fingerprint check; others: the ids
    err = capsys.readouterr().err
    assert f"responses.jsonl, line {line}" in err, err
    if field:
        assert f"field '{field}'" in err


def test_a_corrupt_training_line_is_named_by_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from metajudge.training.dpo import METRICS, read_metrics

    run = tmp_path / "run"
    assert main(_generate(run)) == 0
    (run / "iter_01" / "dpo_pairs.jsonl").write_text('{"prompt": []}\n{"prompt": [\n')
    capsys.readouterr()
    assert main(["train", str(run), "--no-progress"]) == 2
    assert "dpo_pairs.jsonl, line" in capsys.readouterr().err
    (run / "iter_01" / METRICS).write_text('{"loss": 0.5}\n{"loss": \n')
    with pytest.raises(InputError, match=r"train_metrics.jsonl, line 2"):
        read_metrics(run / "iter_01")


# -------------------------------------------------------------------- item 12
def test_first_position_share_reaches_the_manifest(instant_run) -> None:  # type: ignore[no-untyped-def]
    store, backend = instant_run
    run_generate(store, backend, 1, progress=False)
    run_judge(store, backend, 1, progress=False)
    summary = run_meta_judge(store, backend, 1, progress=False)
    entry = store.manifest()["stages"]["iter_01/meta-judge"]
    assert "first_position_share" in summary.extra
    assert entry["extra"]["first_position_share"] == summary.extra["first_position_share"]


def test_a_resume_with_nothing_left_to_do_starts_no_server(tmp_path: Path) -> None:
    from metajudge.backends.serving import ServerError
    from metajudge.loop import run_stages
    from metajudge.stages.pairs import run_pairs

    with FaultServer() as server:
        config = load_config(TINY, [
            "backend.kind=openai", f"backend.openai.base_url={server.url}",
            "backend.model=org/echo-model", "backend.openai.logprobs=false",
            "prompts.per_iteration=2", "generation.samples_per_prompt=2",
            "runner.retry_delay_s=0"])
        store = Store.open(tmp_path / "run", config)
        run_stages(store, 1, progress=False)
        run_pairs(store, 1)
    # training crashed; the resume's servers are M_t's, started by metajudge (here: a command
    # that can never serve, so starting one at all is an error)
    store.config = config.model_copy(update={"backend": config.backend.model_copy(update={
        "serve": ServeOptions(engine="custom", startup_timeout_s=60,
                              command="{python} -c 'import sys; sys.exit(3)'")})})
    run_stages(store, 1, progress=False)  # every record is there: nothing is started
    assert not (store.iteration_dir(1) / "servers").exists()
    judged = store.path(JUDGMENTS, 1)
    judged.write_text("".join(f"{x}\n" for x in judged.read_text().splitlines()[:-1]))
    with pytest.raises(ServerError, match="exited"):  # a judgment is missing: servers start
        run_stages(store, 1, progress=False)
    store.close()



def test_a_killed_rewrite_leaves_no_part_of_its_file_behind(instant_run) -> None:  # type: ignore[no-untyped-def]
    # write_all writes a temporary file, then moves it into place: what a killed rewrite left
    # in the temporary file is never appended to
    store, backend = instant_run
    run_generate(store, backend, 1, progress=False)
    prompts = store.path(PROMPTS, 1)
    tmp = prompts.with_name(prompts.name + ".tmp")
    tmp.write_bytes(b'{"id": "half a line of a killed rewr')
    rows = store.read(PROMPTS, 1)
    store.write_all(PROMPTS, rows, 1)
    assert store.read(PROMPTS, 1) == rows and not tmp.exists()


def test_actor_only_pairs_are_not_made_stale_by_a_later_meta_judge(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(_generate(run, "--set", "pairs.pair_types=[[actor]]")) == 0
    for stage in ("judge", "pairs"):
        assert main([stage, str(run), "--no-progress"]) == 0, capsys.readouterr().err
    assert main(["meta-judge", str(run), "--no-progress"]) == 0  # to look at battles
    assert main(["pairs", str(run), "--no-progress"]) == 0, capsys.readouterr().err
