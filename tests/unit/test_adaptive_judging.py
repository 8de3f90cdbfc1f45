"""Adaptive judging (issue 28, SPEC §5a): the rules against hand-worked cases, and the stages on
the instant backend, which answers every request by its id, so the same (response, k) and the
same (first, second) get the same answer in every run: a replay of the full procedure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metajudge.config import load_config
from metajudge.judging.adaptive import (
    JudgeRule,
    MetaRule,
    actor_sensitive,
    fit_with_errors,
    judge_asks,
    meta_asks,
    ring,
)
from metajudge.stages.generate import run_generate
from metajudge.stages.judge import run_judge
from metajudge.stages.meta_judge import run_meta_judge
from metajudge.stages.pairs import run_pairs
from metajudge.store import (
    AUDIT,
    JUDGMENTS,
    META_JUDGMENTS,
    PAIR_DECISIONS,
    PAIRS,
    PROMPTS,
    Store,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = ["backend.kind=instant_backend:InstantBackend", "prompts.per_iteration=8",
        "generation.samples_per_prompt=5", "judge.judgments_per_response=6",
        "runner.retry_delay_s=0", "judge.forced_readout=true",
        "meta_judge.forced_readout=true"]
ADAPTIVE = ["judge.adaptive=true", "meta_judge.adaptive=true"]


# ------------------------------------------------------------------ the rules, by hand


def test_the_actor_interval_is_the_n_judgment_means_and_closes_at_n() -> None:
    # s = 0.5 (floor); n = 3 of N = 11: half-width z·s·√((N − n)/(N·n)) = 0.5·√(8/33) = 0.2462
    # means 4.0 and 3.8: moving 3.8 up by 0.2462 overtakes 4.0, so both are sensitive
    scores: list[list[float]] = [[4, 4, 4], [4, 4, 3.4], [1, 1, 1]]
    assert actor_sensitive(scores, [10, 10, 10], 0.0, None, 11, 1.0, 0.5) == [0, 1]
    # 3.7 is 0.3 away: out of reach of 0.2462
    assert actor_sensitive([[4, 4, 4], [4, 4, 3.1], [1, 1, 1]], [10, 10, 10], 0.0, None, 11,
                           1.0, 0.5) == []
    # at n = N the mean is the full procedure's: nothing is left to learn, however close
    full: list[list[float]] = [[4.0] * 11, [3.99] * 11, [1.0] * 11]
    assert actor_sensitive(full, [10, 10, 10], 0.0, None, 11, 5.0, 0.5) == []
    # the indifference zone: a swap that changes the gap by less than the tolerance is not asked
    assert actor_sensitive(scores, [10, 10, 10], 0.0, None, 11, 1.0, 0.5, 0.3) == []


def test_judge_rounds_initial_then_selected_to_n_and_never_past_n() -> None:
    rule = JudgeRule(max_judgments=5, initial=3, z=100.0)
    assert [a.count for a in judge_asks([[], [], []], [1, 2, 3], 0.0, None, rule, 0)] == [3] * 3
    state = [[5, 5, 5], [1, 3, 5], [2, 2, 2]]      # response 1 varies most: it goes to N
    asks = judge_asks(state, [1, 2, 3], 0.0, None, rule, 0)
    assert {(a.target, a.count, a.rule) for a in asks} == {
        (1, 2, "selected"), (0, 1, "actor"), (2, 1, "actor")}
    done = [[5] * 5, [1, 3, 5, 4, 4], [2] * 5]
    assert judge_asks(done, [1, 2, 3], 0.0, None, rule, 0) == []


def test_fisher_covariance_of_two_judgments_by_hand() -> None:
    # both orders, each won by the first shown, ω = (½, ½): ratings 0, p = ½; two comparisons
    # of 0 with 1 give information 2·¼ = ½ on ε0 − ε1; with the prior 1:
    # I = [[1.5, −.5], [−.5, 1.5]], det 2, I⁻¹ = [[.75, .25], [.25, .75]],
    # var(ε0 − ε1) = .75 + .75 − 2·.25 = 1 (the data's ½ plus the prior's ½ on the difference)
    ratings, cov = fit_with_errors([0, 1], {(0, 1): "first", (1, 0): "first"}, (0.5, 0.5), 1.0)
    assert ratings == pytest.approx([0.0, 0.0], abs=1e-9)
    assert cov[0, 0] + cov[1, 1] - 2 * cov[0, 1] == pytest.approx(1.0, rel=1e-9)


def test_with_consistent_only_the_race_fits_the_pairs_statistic() -> None:
    # meta_judge.consistent_only: the pairs fit only pairs whose two orders agree; the race's
    # fit (prior = the pairs' ridge) must give the same ratings on the same verdicts
    import pandas as pd

    from metajudge.pairs.judge import RIDGE, rate_judgments

    verdicts = {(0, 1): "first", (1, 0): "second",   # 0 beats 1 in both orders: kept
                (1, 2): "first", (2, 1): "first",    # split by position: left out
                (0, 2): "second", (2, 0): "first",   # 2 beats 0 in both orders: kept
                (2, 3): "first", (3, 2): None}       # one order without verdict: left out
    omega = (0.4, 0.6)
    frame = pd.DataFrame([(a, b, w) for (a, b), w in verdicts.items()],
                         columns=["first", "second", "winner"])
    for consistent in (False, True):
        race, _ = fit_with_errors([0, 1, 2, 3], verdicts, omega, RIDGE, consistent)
        pairs = rate_judgments(frame, omega, consistent_only=consistent)
        assert race == pytest.approx(pairs.to_numpy(), abs=1e-6), consistent
    # and the rule carries the setting from the config, which the stage records
    from metajudge.stages.adaptive import meta_rule, meta_settings

    config = load_config(ROOT / "configs" / "tiny.yaml",
                         BASE + ADAPTIVE + ["meta_judge.consistent_only=true"])
    assert meta_rule(config).consistent_only
    assert meta_settings(config)["adaptive"]["consistent_only"] is True


def test_the_ring_covers_every_judgment_in_both_orders() -> None:
    pairs = ring(list(range(7)), 3)
    assert len(pairs) == 14 and all((b, a) in pairs for a, b in pairs)
    assert {j for p in pairs for j in p} == set(range(7))


def test_an_unbounded_race_asks_every_ordered_pair_once_and_then_stops() -> None:
    judgments = list(range(6))
    verdicts: dict[tuple[int, int], str | None] = {}
    for _ in range(100):
        asks = meta_asks(judgments, judgments, verdicts, (0.4, 0.6), MetaRule(z=1e9), 0)
        if not asks:
            break
        for ask in asks:
            assert ask.target not in verdicts  # never twice
            a, b = ask.target  # type: ignore[misc]
            verdicts[(a, b)] = "first" if (a * 7 + b) % 3 else "second"
    assert set(verdicts) == {(a, b) for a in judgments for b in judgments if a != b}


# ------------------------------------------------------------------ the stages


def _run(out: Path, extra: list[str], prompts: list | None = None, fail_first: int = 0
         ) -> Store:
    config = load_config(ROOT / "configs" / "tiny.yaml", BASE + extra)
    store = Store.open(out, config)
    from instant_backend import InstantBackend

    backend = InstantBackend(config.backend, fail_first=fail_first)
    if prompts is not None:
        store.write_all(PROMPTS, prompts, 1)
    run_generate(store, backend, 1, progress=False)
    run_judge(store, backend, 1, progress=False)
    run_meta_judge(store, backend, 1, progress=False)
    run_pairs(store, 1)
    return store


def _pairs(store: Store, kind: str | None = None) -> dict[str, tuple[str, str]]:
    return {p.id: (p.chosen_id, p.rejected_id) for p in store.iter_records(PAIRS, 1)
            if kind is None or p.pair_type == kind}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Store]]:
    root = tmp_path_factory.mktemp("adaptive")
    made = {"full": _run(root / "full", []),
            "adaptive": _run(root / "adaptive", ADAPTIVE),
            "audit": _run(root / "audit", ADAPTIVE + ["judge.audit_share=0.5",
                                                       "meta_judge.audit_share=0.5"])}
    yield made
    for store in made.values():
        store.close()


def test_adaptive_stages_request_no_more_than_the_full_procedure(runs: dict[str, Store]
                                                                 ) -> None:
    full, adaptive = runs["full"], runs["adaptive"]
    for file in (JUDGMENTS, META_JUDGMENTS):
        assert 0 < full.count(file, 1) and adaptive.count(file, 1) <= full.count(file, 1)
    assert adaptive.count(JUDGMENTS, 1) < full.count(JUDGMENTS, 1)
    # every record says why it was asked for; the full run's say nothing
    for record in adaptive.iter_records(JUDGMENTS, 1):
        assert record.round is not None and record.rule in ("initial", "selected", "actor")
    for record in adaptive.iter_records(META_JUDGMENTS, 1):
        assert record.round is not None and record.rule in ("ring", "best", "worst")
    assert {r.rule for r in full.iter_records(JUDGMENTS, 1)} == {None}
    # each decision says how many requests it took, and they add up to the stage's
    decisions = adaptive.read(PAIR_DECISIONS, 1)
    assert sum(d.requests for d in decisions if d.pair_type == "actor") == \
        adaptive.count(JUDGMENTS, 1)
    assert sum(d.requests for d in decisions if d.pair_type == "judge") == \
        adaptive.count(META_JUDGMENTS, 1)
    assert {d.requests for d in full.read(PAIR_DECISIONS, 1) if d.pair_type == "actor"} == {
        5 * 6}


def test_the_audit_changes_no_pair_and_its_full_pairs_are_a_full_run_s(
        runs: dict[str, Store], tmp_path: Path) -> None:
    adaptive, audit = runs["adaptive"], runs["audit"]
    assert _pairs(audit) == _pairs(adaptive)  # the audit's requests are read by no decision
    rows = audit.read(AUDIT, 1)
    assert 0 < len(rows) < 8
    sample = {r.id for r in rows}
    # a full run on the audited prompts alone, with the same prompt records
    prompts = [p for p in audit.iter_records(PROMPTS, 1) if p.id in sample]
    alone = _run(tmp_path / "alone", [], prompts)
    try:
        expected = _pairs(alone)
        for row in rows:
            assert row.actor_full == expected.get(f"actor:{row.id}")
            judge = next((v for k, v in expected.items()
                          if k.startswith(f"judge:{row.id}#")), None)
            assert row.judge_full == judge
            assert row.adaptive_requests <= row.full_requests
    finally:
        alone.close()
    from metajudge.stages.summary import store_table

    table = store_table(audit)
    for column in ("audit_prompts", "audit_actor_retention", "audit_judge_retention",
                   "audit_same_actor_pairs", "audit_same_judge_pairs", "audit_token_share"):
        assert column in table.columns, column
    assert 0 < table.loc[1, "audit_token_share"] < 1
    assert table.loc[1, "audit_prompts"] == len(rows)


def test_an_unbounded_rule_gives_the_full_procedure_s_pairs(runs: dict[str, Store],
                                                           tmp_path: Path) -> None:
    # z → ∞: every response is judged N times, every ordered pair compared, in rounds
    full = runs["full"]
    judge = _run(tmp_path / "judge", ["judge.adaptive=true", "judge.adaptive_z=1e9",
                                      "judge.adaptive_tolerance=0"])
    meta = _run(tmp_path / "meta", ["meta_judge.adaptive=true", "meta_judge.adaptive_z=1e9"])
    try:
        assert judge.count(JUDGMENTS, 1) == full.count(JUDGMENTS, 1)
        assert _pairs(judge, "actor") == _pairs(full, "actor")
        assert meta.count(META_JUDGMENTS, 1) == full.count(META_JUDGMENTS, 1)
        assert max(r.round for r in meta.iter_records(META_JUDGMENTS, 1)) > 0
        assert _pairs(meta) == _pairs(full)
    finally:
        judge.close()
        meta.close()


def test_retried_requests_finish_their_round_before_the_next_is_planned(
        runs: dict[str, Store], tmp_path: Path) -> None:
    # every third request fails once (retryable): its round's retry pass makes it, and the
    # next round is planned from the finished round, so the decisions do not change
    store = _run(tmp_path / "retried", ADAPTIVE, fail_first=3)
    try:
        assert store.count(JUDGMENTS.failures, 1) > 0
        assert _pairs(store) == _pairs(runs["adaptive"])
    finally:
        store.close()


def test_a_change_of_the_adaptive_rule_is_refused_by_name(runs: dict[str, Store]) -> None:
    from instant_backend import InstantBackend

    from metajudge.store import ConfigMismatchError

    root = runs["adaptive"].root
    for stage, key, value, name in (
            (run_judge, "judge.adaptive_z", "0.7", "adaptive.z: 1.2 -> 0.7"),
            (run_meta_judge, "meta_judge.adaptive_z", "0.9", "adaptive.z: 0.8 -> 0.9"),
            (run_judge, "pairs.rho", "[0.2, 0.3]", "adaptive.rho: 0.0 -> 0.2")):
        config = load_config(ROOT / "configs" / "tiny.yaml", BASE + ADAPTIVE + [f"{key}={value}"])
        store = Store(root, config)
        with pytest.raises(ConfigMismatchError, match=name.replace(".", r"\.")):
            stage(store, InstantBackend(config.backend), 1, progress=False)


def _cli(out: Path, command: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
    sets = [x for item in BASE + ADAPTIVE + ["runner.chunk_size=2"] for x in ("--set", item)]
    base = [sys.executable, "-m", "metajudge.cli", command]
    if command == "generate":
        base += ["--config", str(ROOT / "configs" / "tiny.yaml"), "--out", str(out), *sets]
    else:
        base += [str(out)]
    return subprocess.Popen(base + ["--no-progress", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _rounds(path: Path) -> set[int]:
    if not path.is_file():
        return set()
    return {json.loads(x)["round"] for x in path.read_text().splitlines() if x.endswith("}")}


def test_a_killed_adaptive_stage_resumes_to_the_same_pairs(runs: dict[str, Store],
                                                           tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    assert _cli(out, "generate", env=env).wait(timeout=120) == 0
    slow = env | {"INSTANT_DELAY_S": "0.05"}
    for stage, file in (("judge", "judgments"), ("meta-judge", "meta_judgments")):
        proc = _cli(out, stage, env=slow)
        path = out / "iter_01" / f"{file}.jsonl"
        deadline = time.monotonic() + 120
        while not _rounds(path) - {0}:  # killed in the middle of round 1 or later
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done = _cli(out, stage, env=env)
        assert done.wait(timeout=120) == 0, done.stderr.read()  # type: ignore[union-attr]
        ids = [json.loads(x)["id"] for x in path.read_text().splitlines()]
        assert len(ids) == len(set(ids))
    assert _cli(out, "pairs", env=env).wait(timeout=120) == 0
    store = Store.open(out, lock=False)
    assert _pairs(store) == _pairs(runs["adaptive"])
    assert store.count(JUDGMENTS, 1) == runs["adaptive"].count(JUDGMENTS, 1)


def test_a_later_round_s_leftover_failures_do_not_stall_the_resume(
        runs: dict[str, Store], tmp_path: Path) -> None:
    # review-28: with no retry pass, a round's retryable failures are left to the next run;
    # the replay of round 0 used to see those of round 1 and stop before reaching it, so no
    # rerun ever made them (the stage stalled for good). Same backend: a retry succeeds.
    from instant_backend import InstantBackend

    config = load_config(ROOT / "configs" / "tiny.yaml",
                         BASE + ADAPTIVE + ["runner.retry_passes=0"])
    store = Store.open(tmp_path / "stalled", config)
    backend = InstantBackend(config.backend, fail_first=3)
    try:
        for stage in (run_generate, run_judge, run_meta_judge):
            for _ in range(12):
                if not stage(store, backend, 1, progress=False).failed_retryable:
                    break
            else:
                pytest.fail(f"{stage.__name__} never finished")
        run_pairs(store, 1)
        assert store.count(JUDGMENTS.failures, 1) > 0
        assert store.count(JUDGMENTS, 1) == runs["adaptive"].count(JUDGMENTS, 1)
        assert _pairs(store) == _pairs(runs["adaptive"])
    finally:
        store.close()


def test_every_audit_row_prices_the_whole_full_procedure(tmp_path: Path) -> None:
    store = _run(tmp_path / "uneven", ADAPTIVE + ["judge.audit_share=0.3",
                                                  "meta_judge.audit_share=0.9"])
    try:
        rows = store.read(AUDIT, 1)
        assert rows
        # the full procedure: 5 responses × 6 judgments, and 6·5 ordered comparisons
        # (the instant backend scores every judgment)
        assert {r.full_requests for r in rows} == {5 * 6 + 6 * 5}
    finally:
        store.close()


def test_the_audit_s_failures_are_not_counted_as_the_decision_s_requests(
        tmp_path: Path) -> None:
    from instant_backend import InstantBackend, _hash

    from metajudge.records import Failure, FailureKind

    class ForGood(InstantBackend):
        """Every fifth judge / meta-judge request fails for good."""

        def generate(self, requests: Any, on_result: Any = None) -> list:
            out: list[Any] = []
            for index, request in enumerate(requests):
                result = (Failure(request_id=request.id, kind=FailureKind.SERVER_ERROR,
                                  message="fails for good", retryable=False)
                          if "@" in request.id and _hash(request.id + "x") % 5 == 0
                          else super().generate([request])[0])
                out.append(result)
                if on_result is not None:
                    on_result(index, result)
            return out

    made = {}
    for name, extra in (("plain", []), ("audit", ["judge.audit_share=0.5",
                                                  "meta_judge.audit_share=0.5"])):
        config = load_config(ROOT / "configs" / "tiny.yaml", BASE + ADAPTIVE + extra)
        store = Store.open(tmp_path / name, config)
        backend = ForGood(config.backend)
        try:
            for stage in (run_generate, run_judge, run_meta_judge):
                stage(store, backend, 1, progress=False)
            run_pairs(store, 1)
            made[name] = ({d.id: d.requests for d in store.read(PAIR_DECISIONS, 1)},
                          _pairs(store))
        finally:
            store.close()
    assert made["plain"][1] == made["audit"][1]
    assert made["plain"][0] == made["audit"][0]


def test_the_audit_leaves_the_judge_health_figures_alone(runs: dict[str, Store]) -> None:
    from metajudge.stages.meta_judge import first_position_share
    from metajudge.stages.summary import store_table

    plain, audit = store_table(runs["adaptive"]), store_table(runs["audit"])
    assert audit.loc[1, "meta_first_share"] == plain.loc[1, "meta_first_share"]
    for column in ("judgments", "judge_score_mean", "share_parsed", "score_top_share",
                   "meta_judgments", "meta_position_consistency"):
        assert audit.loc[1, column] == plain.loc[1, column], column
    # the audit did make records: they are left out, not missing
    assert runs["audit"].count(JUDGMENTS, 1) > runs["adaptive"].count(JUDGMENTS, 1)
    assert first_position_share(runs["audit"], 1) == first_position_share(runs["adaptive"], 1)


def test_calibrating_on_a_run_with_an_unjudged_iteration_measures_the_judged_ones(
        runs: dict[str, Store], tmp_path: Path) -> None:
    # review-28: an iteration whose responses exist but whose judge stage has not run yet
    # (a run in progress) used to add its full-procedure requests and none made, halving
    # the measured share
    import shutil

    from metajudge.costs import _measured_share

    source = runs["adaptive"].root
    share = _measured_share(source, "judge")
    assert share == pytest.approx(runs["adaptive"].count(JUDGMENTS, 1) / (8 * 5 * 6))
    copy = tmp_path / "in-progress"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("*.lock"))
    (copy / "iter_02").mkdir()
    for name in ("prompts.jsonl", "responses.jsonl"):
        shutil.copy(source / "iter_01" / name, copy / "iter_02" / name)
    assert _measured_share(copy, "judge") == pytest.approx(share)
    assert _measured_share(copy, "meta-judge") == pytest.approx(
        _measured_share(source, "meta-judge"))
