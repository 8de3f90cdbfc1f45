"""Verdict completion on the embedded model (issue 23): a judgment cut at ``max_tokens`` gets
``\\nScore: `` and the label the model's own sampler draws appended (its read-out distribution at
the request's temperature and top-p, seeded by the request), is recorded ``completed`` and may be
a judge pair's chosen text; with completion off everything is as before (``forced`` with the top
label, never chosen)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metajudge.config import load_config
from metajudge.judging.parse import parse_score, parse_winner
from metajudge.judging.readout import (
    SCORE_LABELS,
    SCORE_PREFILL,
    most_probable_score,
    sampled_label,
)
from metajudge.judging.scorers import ReadoutPolicy, RubricJudge
from metajudge.records import (
    Judgment,
    LabelScores,
    MetaJudgment,
    MetaSelection,
    Prompt,
    Provenance,
    Response,
    SamplingParams,
    ScoreRequest,
)
from metajudge.stages.judge import judge_template, run_judge
from metajudge.stages.meta_judge import run_meta_judge
from metajudge.stages.pairs import run_pairs
from metajudge.store import (
    JUDGMENTS,
    META_JUDGMENTS,
    META_SELECTION,
    PAIR_DECISIONS,
    PAIRS,
    PROMPTS,
    RESPONSES,
    Store,
)

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION = "What is the capital of France?"
ANSWERS = ("The capital of France is Paris.", "France's capital is Lyon, I think.")
#: 6 tokens: far too few for a justification and a Score: line, so every judgment is cut
SETTINGS = ["judge.judgments_per_response=2", "judge.max_tokens=6", "meta_judge.max_tokens=4",
            "pairs.judge_max_chosen_chars=[null]"]


def _store(root: Path, backend, complete: bool) -> Store:  # type: ignore[no-untyped-def]
    flag = str(complete).lower()
    config = load_config(ROOT / "configs" / "tiny.yaml", SETTINGS + [
        f"judge.complete_verdict={flag}", f"meta_judge.complete_verdict={flag}"])
    store = Store.open(root, config)
    store.write_all(PROMPTS, [Prompt(id="p", instruction=INSTRUCTION)], 1)
    provenance = Provenance(backend=backend.fingerprint, params=SamplingParams(), seed=0,
                            sample_index=0)
    store.write_all(RESPONSES, [Response(
        id=f"p#{k}", prompt_id="p", instruction=INSTRUCTION, text=text, finish_reason="stop",
        prompt_tokens=1, completion_tokens=1, provenance=provenance.model_copy(
            update={"sample_index": k})) for k, text in enumerate(ANSWERS)], 1)
    run_judge(store, backend, 1, progress=False)
    return store


def _prefer(store: Store, winner: Judgment, backend) -> None:  # type: ignore[no-untyped-def]
    """Hand-made meta-judge verdicts for response p#0: ``winner`` beats the other judgment in
    both orders."""
    provenance = Provenance(backend=backend.fingerprint, params=SamplingParams(), seed=0,
                            sample_index=0)
    other = 1 - winner.index
    store.write_all(META_SELECTION, [MetaSelection(
        id="p", iteration=1, response_id="p#0", variance=1.0, scored_judgments=2,
        reason="largest score variance")], 1)
    store.write_all(META_JUDGMENTS, [MetaJudgment(
        id=f"p#0@m{a}-{b}", response_id="p#0", prompt_id="p", iteration=1, first=a, second=b,
        winner="first" if a == winner.index else "second", winner_source="parsed",
        hide_scores=False, text="", prompt_tokens=1, completion_tokens=1,
        provenance=provenance) for a, b in ((winner.index, other), (other, winner.index))], 1)


@pytest.mark.timeout(600)
def test_cut_judgment_is_completed_with_the_models_own_label_and_may_be_chosen(
        tmp_path: Path, transformers_backend) -> None:  # type: ignore[no-untyped-def]
    on = _store(tmp_path / "on", transformers_backend, complete=True)
    off = _store(tmp_path / "off", transformers_backend, complete=False)
    judged_on, judged_off = on.read(JUDGMENTS, 1), off.read(JUDGMENTS, 1)
    assert len(judged_on) == len(judged_off) == 4
    judge = RubricJudge(judge_template(on), ReadoutPolicy(), transformers_backend.capabilities)
    for j in judged_on:
        assert j.finish_reason == "length" and parse_score(j.text).value is None
        assert j.score_source == "completed"
        assert j.completed_text == j.text + SCORE_PREFILL + f"{j.score:g}"
        assert parse_score(j.completed_text).value == j.score
        # the appended label is the one the model's sampler draws after "\nScore: "
        read = transformers_backend.score_labels([ScoreRequest(
            id=j.id, messages=judge.messages(INSTRUCTION, ANSWERS[int(j.response_id[-1])]),
            prefill=j.text + SCORE_PREFILL, labels=SCORE_LABELS)])[0]
        assert isinstance(read, LabelScores) and read.probs is not None
        params = j.provenance.params
        assert j.score == float(SCORE_LABELS[sampled_label(
            read.probs, params.temperature, params.top_p, j.provenance.seed)])
        assert j.score_probs == pytest.approx(read.probs, abs=1e-3)
    # completion off: the same generations and read-outs, recorded as before
    for j, before in zip(judged_on, judged_off, strict=True):
        assert (before.text, before.finish_reason) == (j.text, j.finish_reason)
        assert j.score_probs is not None and before.score_probs == j.score_probs
        assert before.score == most_probable_score(j.score_probs)  # the top label, as before
        assert before.score_source == "forced" and before.completed_text is None
    assert "complete_verdict" not in off.settings(JUDGMENTS, 1)
    assert on.settings(JUDGMENTS, 1)["complete_verdict"] is True

    # the meta-judge's cut verdicts are completed the same way ("Winner: Judgment A|B")
    run_meta_judge(on, transformers_backend, 1, progress=False)
    metas = on.read(META_JUDGMENTS, 1)
    assert metas and all(m.winner_source in ("parsed", "completed") for m in metas)
    for m in metas:
        if m.winner_source == "completed":
            assert m.completed_text is not None and m.completed_text.startswith(m.text)
            assert parse_winner(m.completed_text).value == {"first": "A",
                                                           "second": "B"}[m.winner]

    # a completed judgment may be chosen; its completed text is what DPO sees
    for store in (on, off):
        top = next(j for j in store.read(JUDGMENTS, 1) if j.id == "p#0@j0")
        _prefer(store, top, transformers_backend)
        run_pairs(store, 1)
    pair = next(p for p in on.read(PAIRS, 1) if p.pair_type == "judge")
    chosen = next(j for j in judged_on if j.id == pair.chosen_id)
    assert chosen.id == "p#0@j0" and pair.chosen == chosen.completed_text
    decision = next(d for d in on.read(PAIR_DECISIONS, 1) if d.pair_type == "judge")
    assert decision.chosen_source == "completed" and "chosen verdict completed" in decision.reason
    assert not [p for p in off.read(PAIRS, 1) if p.pair_type == "judge"]
    decision = next(d for d in off.read(PAIR_DECISIONS, 1) if d.pair_type == "judge")
    assert decision.reason.startswith("no judgment with its verdict in its text")
    assert decision.chosen_source is None
    on.close()
    off.close()
