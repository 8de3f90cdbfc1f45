"""The replay backend (benchmarks/replay_backend.py) and the synthetic judge
(benchmarks/synthetic_judge.py) of issue 28's benchmark: a replay answers with the recorded
run's samples, so the full procedure replayed gives the full run's pairs; a request that is not
the recorded one fails instead of borrowing its answer."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from instant_backend import InstantBackend
from replay_backend import ReplayBackend
from synthetic_judge import JudgeModel, SyntheticJudge

from metajudge.config import load_config
from metajudge.records import (
    Completion,
    Failure,
    GenerationRequest,
    LabelScores,
    Message,
    ScoreRequest,
)
from metajudge.stages.generate import run_generate
from metajudge.stages.judge import run_judge
from metajudge.stages.meta_judge import run_meta_judge
from metajudge.stages.pairs import run_pairs
from metajudge.store import JUDGMENTS, META_JUDGMENTS, PAIR_DECISIONS, PAIRS, RESPONSES, Store
from metajudge.templates import load_template

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
#: the instant backend with every read-out on, so label scores are replayed too
SETTINGS = ["prompts.per_iteration=4", "generation.samples_per_prompt=3",
            "judge.judgments_per_response=4", "runner.retry_delay_s=0",
            "judge.forced_readout=true", "judge.probability_weighted=true",
            "meta_judge.forced_readout=true"]


def full_run(root: Path, backend_kind: str, model: str = "instant-model") -> Store:
    config = load_config(CONFIG, [*SETTINGS, f"backend.kind={backend_kind}",
                                  f"backend.model={model}"])
    return Store.open(root, config)


def stages(store: Store, backend) -> None:  # type: ignore[no-untyped-def]
    for stage in (run_generate, run_judge, run_meta_judge):
        assert stage(store, backend, 1, progress=False).failed == 0
    run_pairs(store, 1)


def records(store: Store, file) -> list[dict]:  # type: ignore[no-untyped-def]
    """A stage file's records without the backend that made them."""
    out = []
    for record in store.iter_records(file, 1):
        data = record.model_dump(mode="json")
        data.get("provenance", {}).pop("backend", None)
        out.append(data)
    return out


@pytest.fixture
def recorded(tmp_path: Path) -> Store:
    store = full_run(tmp_path / "full", "instant_backend:InstantBackend")
    stages(store, InstantBackend(store.config.backend))
    return store


def test_replaying_the_full_procedure_gives_the_full_runs_records_and_pairs(
        recorded: Store, tmp_path: Path) -> None:
    replay = full_run(tmp_path / "replay", "replay_backend:ReplayBackend")
    with ReplayBackend([recorded.root]) as backend:
        assert backend.capabilities.label_scores  # the recording's read-outs ran
        stages(replay, backend)
        counts = backend.stats()["replay"]
    requests = sum(recorded.count(f, 1) for f in (RESPONSES, JUDGMENTS, META_JUDGMENTS))
    assert counts["replayed"] == requests and counts["labels_replayed"] == recorded.count(
        JUDGMENTS, 1)  # one probability-weighted read-out per judgment
    assert counts["missing"] == counts["mismatched"] == counts["fallback"] == 0
    for file in (RESPONSES, JUDGMENTS, META_JUDGMENTS, PAIRS, PAIR_DECISIONS):
        assert records(replay, file) == records(recorded, file), file.name
    assert any(j["score_probs"] for j in records(replay, JUDGMENTS))


def test_replay_answers_each_request_with_its_recorded_sample(recorded: Store) -> None:
    judgment = recorded.first(JUDGMENTS, 1)
    response = next(r for r in recorded.iter_records(RESPONSES, 1)
                    if r.id == judgment.response_id)
    template = load_template("judge")
    prompt = template.render(instruction=response.instruction, response=response.text)
    request = GenerationRequest(id=judgment.id, messages=(Message(role="user", content=prompt),),
                                sample_index=judgment.index)
    with ReplayBackend([recorded.root]) as backend:
        [answer] = backend.generate([request])
        assert isinstance(answer, Completion)
        assert (answer.text, answer.completion_tokens) == (judgment.text,
                                                           judgment.completion_tokens)
        [labels] = backend.score_labels([ScoreRequest(
            id=judgment.id, messages=request.messages, prefill="Score: ",
            labels=tuple("012345"))])
        assert isinstance(labels, LabelScores) and labels.probs == judgment.score_probs
        # the same id with another response, or another sample index, is not the recording's
        other = prompt.replace(response.text, response.text[:-1])
        wrong = [request.model_copy(update={"messages": (Message(role="user", content=other),)}),
                 request.model_copy(update={"sample_index": judgment.index + 1}),
                 request.model_copy(update={"id": "nobody#0@j0"})]
        results = backend.generate(wrong)
        assert all(isinstance(r, Failure) and not r.retryable for r in results)
        assert "another response" in results[0].message
        assert "sample index" in results[1].message
        assert "not in the recording" in results[2].message
        assert backend.stats()["replay"]["mismatched"] == 2


def test_unrecorded_requests_go_to_the_fallback(recorded: Store) -> None:
    fallback = InstantBackend(name="fallback")
    request = GenerationRequest(id="unseen#0", messages=(Message(role="user", content="Hi?"),))
    with ReplayBackend([recorded.root], fallback=fallback) as backend:
        [answer] = backend.generate([request])
        assert isinstance(answer, Completion)
        assert answer.text == fallback.generate([request])[0].text
        assert backend.stats()["replay"]["fallback"] == 1


def test_the_synthetic_judge_follows_its_stated_model(tmp_path: Path) -> None:
    assert JudgeModel.parse("synthetic/noise=1.5,judge_seed=2") == JudgeModel(noise=1.5,
                                                                             judge_seed=2)
    assert JudgeModel.parse(JudgeModel(bias=2.6).name()) == JudgeModel(bias=2.6)
    with pytest.raises(ValueError, match="unknown parameter 'nois'"):
        JudgeModel.parse("synthetic/nois=1")
    store = full_run(tmp_path / "synthetic", "synthetic_judge:SyntheticJudge",
                     JudgeModel(noise=0.0, bias=3.0, judge_fail=0.0, meta_fail=0.0).name())
    backend = SyntheticJudge(store.config.backend)
    stages(store, backend)
    judge = SyntheticJudge(model=JudgeModel())
    by_id = {r.id: r for r in store.iter_records(RESPONSES, 1)}
    for judgment in store.iter_records(JUDGMENTS, 1):
        response = by_id[judgment.response_id]
        # noise 0: every score is the latent quality rounded and clipped
        q = judge.quality(response.instruction, response.text)
        assert judgment.score == min(5, max(0, round(q)))
        assert judgment.score_source == "parsed"
    winners = [m.winner for m in store.iter_records(META_JUDGMENTS, 1)]
    # equal scores and a bias of 3 logits: the first-shown judgment wins about σ(3) = 0.95
    assert sum(w == "first" for w in winners) / len(winners) > 1 / (1 + math.exp(-2))
    # the same request gives the same answer; another judge seed, another sample
    request = GenerationRequest(id="x", seed=7, messages=(
        Message(role="user", content=load_template("judge").render(
            instruction="Why?", response="Because the sky scatters blue light.")),))
    again = SyntheticJudge(model=JudgeModel(noise=1.0)).generate([request])[0]
    assert again.text == SyntheticJudge(model=JudgeModel(noise=1.0)).generate([request])[0].text
    assert again.text != SyntheticJudge(model=JudgeModel(noise=1.0, judge_seed=1)).generate(
        [request])[0].text


def test_adaptive_judging_on_a_replay_asks_only_for_the_full_runs_samples(
        recorded: Store, tmp_path: Path) -> None:
    """Adaptive judging replayed: every request it makes that the full run made is answered
    with the full run's sample (same id, same prompt: none mismatched), so it is compared with
    the full procedure on the same samples, and it asks for no more than the full procedure."""
    config = load_config(CONFIG, [*SETTINGS, "backend.kind=replay_backend:ReplayBackend",
                                  "backend.model=instant-model", "judge.adaptive=true",
                                  "judge.adaptive_initial=2", "meta_judge.adaptive=true"])
    store = Store.open(tmp_path / "adaptive", config)
    # the adaptive meta-judge selects on the first judgments, so it may compare a response the
    # full run did not select: those comparisons only are made by the recorded model itself
    with ReplayBackend([recorded.root],
                       fallback=InstantBackend(recorded.config.backend)) as backend:
        stages(store, backend)
        counts = backend.stats()["replay"]
    assert counts["missing"] == counts["mismatched"] == 0
    selected = {m.response_id for m in recorded.iter_records(META_JUDGMENTS, 1)}
    assert counts["fallback"] == sum(m.response_id not in selected
                                     for m in store.iter_records(META_JUDGMENTS, 1))
    assert store.count(JUDGMENTS, 1) <= recorded.count(JUDGMENTS, 1)
    assert store.count(META_JUDGMENTS, 1) <= recorded.count(META_JUDGMENTS, 1)
    full = {r.id: (r.text, r.score) for r in recorded.iter_records(JUDGMENTS, 1)}
    assert all(full[j.id] == (j.text, j.score) for j in store.iter_records(JUDGMENTS, 1))
