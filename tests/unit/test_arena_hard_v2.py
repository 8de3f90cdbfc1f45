"""Arena-Hard v2.0 (issue 29): prompts, verdict patterns, token and markdown counts against the
official code (copied unchanged in tests/data/arena_hard_auto_v2.0), the carried o3-mini
answers, refusal of creative writing without its baseline, and null games in the files."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from metajudge.config import BackendConfig
from metajudge.evaluation import arena_hard_v2_prompts as prompts
from metajudge.evaluation.arena_hard import conv_metadata, count_tokens
from metajudge.evaluation.arena_hard_v2 import (
    BaselineMissing,
    official_score,
    resolve_baselines,
    score_arena_hard_v2,
    select_questions,
)
from metajudge.evaluation.benchmarks import arena_hard_v2_o3_mini, arena_hard_v2_questions
from metajudge.evaluation.config import ArenaHardV2Settings, EvalConfig
from metajudge.evaluation.records import ArenaHardV2Game, EvalOutput
from metajudge.records import BackendFingerprint, Provenance, SamplingParams
from metajudge.store import Store, evaluation_file

TOOL = Path(__file__).resolve().parents[1] / "data" / "arena_hard_auto_v2.0"
#: the project's shared data, where this checkout has it (tests never need it)
SHARED = next((p / "shared" / "data" / "arena_hard_v2.0" for p in Path(__file__).resolve().parents
               if (p / "shared" / "data" / "arena_hard_v2.0").is_dir()), Path("/nonexistent"))
PROVENANCE = Provenance(backend=BackendFingerprint(kind="test", model="judge-model"),
                        params=SamplingParams(), seed=0, sample_index=0)


def _module(path: Path):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_judge_prompts_and_patterns_are_the_tools() -> None:
    settings = _module(TOOL / "utils" / "judge_utils.py").JUDGE_SETTINGS
    for category in ("hard_prompt", "coding", "math", "creative_writing"):
        assert prompts.SYSTEM_PROMPTS[category] == settings[category]["system_prompt"]
    config = yaml.safe_load((TOOL / "config" / "arena-hard-v2.0.yaml").read_text())
    assert prompts.PROMPT_TEMPLATE == config["prompt_template"]
    assert list(prompts.REGEX_PATTERNS) == config["regex_patterns"]
    # the hard prompts' judge answers first; creative writing's does not
    assert "generating your own answer" in prompts.SYSTEM_PROMPTS["hard_prompt"]
    assert "generating your own answer" not in prompts.SYSTEM_PROMPTS["creative_writing"]


def test_verdicts_read_as_the_tools_get_score() -> None:
    source = (TOOL / "gen_judgment.py").read_text()
    function = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "get_score")
    namespace: dict = {}
    exec(compile(ast.Module([function], []), "gen_judgment.py", "exec"), namespace)
    patterns = yaml.safe_load((TOOL / "config" / "arena-hard-v2.0.yaml").read_text())[
        "regex_patterns"]
    texts = ["My final verdict is [[A>B]].", "[[a>>b]] then [[B>A]]", "only [A=B] here",
             "[[B]] is better", "no label", "[[A>B]] and [A>>B]", "[[A>>>B]]", "[[B<<A]]"]
    for text in texts:
        theirs = namespace["get_score"](text, patterns)
        ours, error = official_score(text)
        if theirs in prompts.SCORED_LABELS:
            assert ours == theirs and error is None
        else:  # what show_result.py could not score is no verdict here
            assert ours is None and error is not None


def test_o200k_counts_and_markdown_are_add_markdown_infos() -> None:
    tool = _module(TOOL / "utils" / "add_markdown_info.py")
    pattern = __import__("re").compile("```([^`]*)```")
    rows = arena_hard_v2_o3_mini()
    agree = 0
    for row in rows:
        answer = row["messages"][-1]["content"]["answer"]
        ours = conv_metadata(answer, "o200k_base")
        theirs = tool.count_markdown_elements(tool.remove_pattern(answer, pattern), suffix="")
        assert {k: v for k, v in ours.items() if k != "token_len"} == theirs
        assert list(ours) == list(row["metadata"])  # the tool's key order
        agree += count_tokens(answer, "o200k_base") == row["metadata"]["token_len"]
    assert len(rows) == 750 and agree == 750


def test_carried_answers_and_questions_are_the_shared_copies() -> None:
    if not SHARED.is_dir():
        pytest.skip("the shared Arena-Hard v2.0 data is not on this machine")
    with gzip.open(SHARED / "model_answer" / "o3-mini-2025-01-31.jsonl.gz", "rt") as fh:
        assert [json.loads(line) for line in fh] == list(arena_hard_v2_o3_mini())
    shared = [json.loads(line) for line in (SHARED / "question.jsonl").open()]
    assert [(r["uid"], r["category"], r["subcategory"], r["prompt"]) for r in shared] == [
        (q.uid, q.category, q.subcategory, q.prompt) for q in arena_hard_v2_questions()]


def test_questions_per_subcategory() -> None:
    questions = arena_hard_v2_questions()
    counts = {s: sum(q.subcategory == s for q in questions) for s in ("coding", "math",
                                                                       "creative_writing")}
    assert counts == {"coding": 253, "math": 247, "creative_writing": 250}
    picked = select_questions(("hard_prompt", "creative_writing"), 2)
    assert [q.subcategory for q in picked] == ["coding"] * 2 + ["math"] * 2 + [
        "creative_writing"] * 2


def test_creative_writing_without_its_baseline_is_refused_by_name(tmp_path: Path) -> None:
    questions = select_questions(("hard_prompt", "creative_writing"), 1)
    with pytest.raises(BaselineMissing, match=r"gemini-2\.0-flash-001.*model_answer/"
                       r"gemini-2\.0-flash-001\.jsonl.*--baseline-answers"):
        resolve_baselines(ArenaHardV2Settings(), questions)
    # hard prompts alone need nothing more; another baseline when asked for, by name
    hard = [q for q in questions if q.category == "hard_prompt"]
    assert list(resolve_baselines(ArenaHardV2Settings(), hard)) == ["hard_prompt"]
    assert resolve_baselines(ArenaHardV2Settings(), hard)["hard_prompt"][0] == (
        "o3-mini-2025-01-31")
    other = ArenaHardV2Settings(creative_writing_baseline="o3-mini-2025-01-31")
    assert resolve_baselines(other, questions)["creative_writing"][0] == "o3-mini-2025-01-31"
    # a user's file of the official baseline is taken (its rows, its model name)
    cw = [q for q in questions if q.category == "creative_writing"][0]
    answers = tmp_path / "gemini-2.0-flash-001.jsonl"
    answers.write_text(json.dumps({"uid": cw.uid, "model": "gemini-2.0-flash-001", "messages": [
        {"role": "user", "content": cw.prompt},
        {"role": "assistant", "content": {"answer": "# A poem\n\n**Bold** lines."}}]}) + "\n")
    given = resolve_baselines(ArenaHardV2Settings(baseline_answers=(str(answers),)), questions)
    name, rows = given["creative_writing"]
    assert name == "gemini-2.0-flash-001"
    assert rows[cw.uid]["metadata"] == conv_metadata("# A poem\n\n**Bold** lines.",
                                                     "o200k_base")
    answers.write_text('{"uid": "x", "model": "m"}\n')
    with pytest.raises(ValueError, match=r"gemini-2\.0-flash-001\.jsonl, line 1"):
        resolve_baselines(ArenaHardV2Settings(baseline_answers=(str(answers),)), questions)


def _game(uid: str, number: int, verdict: str | None, category: str, subcategory: str,
          forced: str | None = None) -> ArenaHardV2Game:
    return ArenaHardV2Game(
        id=f"{uid}@{number}", item_id=uid, model="mine", baseline="o3-mini-2025-01-31",
        model_position="B" if number == 1 else "A", verdict=verdict,
        verdict_source="parsed" if verdict else "failed", judgment="text",
        prompt_tokens=1, completion_tokens=1, provenance=PROVENANCE, category=category,
        subcategory=subcategory, forced_verdict=forced,
        forced_probs=(0.7, 0.3) if forced else None)


def test_missing_games_and_answers_are_null_games(tmp_path: Path) -> None:
    config = EvalConfig(harness="arena-hard", name="mine", model=BackendConfig(), version="2.0",
                        arena_hard_v2=ArenaHardV2Settings(
                            creative_writing_baseline="o3-mini-2025-01-31"))
    store = Store.open(tmp_path / "mine", config)
    questions = select_questions(("hard_prompt", "creative_writing"), 2)
    answered = questions[:5]  # the second creative-writing question has no answer
    store.write_all(evaluation_file("outputs"), [EvalOutput(
        id=q.uid, instruction=q.prompt, output=f"## Answer {k}\n\n- **point**\n" + "w " * k,
        generator="mine", finish_reason="stop", prompt_tokens=1, completion_tokens=1,
        provenance=PROVENANCE) for k, q in enumerate(answered)])
    games = []
    for k, q in enumerate(answered):
        games += [_game(q.uid, 1, ["A>B", "B>A", "A=B", "B>>A", None][k], q.category,
                        q.subcategory, forced="B>A" if k == 4 else None)]
        if k != 1:  # the first math question's game 2 was never judged
            games.append(_game(q.uid, 2, ["A>B", "B>A", "A>>B", "B>A", "A>B"][k], q.category,
                               q.subcategory))
    store.write_all(evaluation_file("v2_games"), games)
    metrics = score_arena_hard_v2(store, limit=2, bootstrap_rounds=10)
    store.close()
    root = tmp_path / "mine" / "data" / "arena-hard-v2.0"
    rows = [json.loads(x) for x in (root / "model_judgment" / "judge-model" /
                                    "mine.jsonl").read_text().splitlines()]
    assert [r["uid"] for r in rows] == [q.uid for q in questions]
    assert [[g and g["score"] for g in r["games"]] for r in rows] == [
        ["A>B", "A>B"], ["B>A", None], ["A=B", "A>>B"], ["B>>A", "B>A"], [None, "A>B"],
        [None, None]]
    # a read-out stays beside the tool's null score; a substitute baseline renames the category
    assert rows[4]["games"][0]["forced_verdict"] == "B>A"
    assert rows[4]["category"] == "creative_writing@o3-mini-2025-01-31"
    assert rows[0]["category"] == "hard_prompt" and rows[0]["baseline"] == "o3-mini-2025-01-31"
    answers = [json.loads(x) for x in (root / "model_answer" / "mine.jsonl").read_text()
               .splitlines()]
    assert len(answers) == 5 and answers[0]["messages"][-1]["content"]["answer"].startswith("##")
    hard = metrics["categories"]["hard_prompt"]  # type: ignore[index]
    assert (hard["null_judgments"], hard["missing_games"], hard["games"]) == (1, 1, 7)
    # coding: A>B in game 1 (the baseline's win: 0) and game 2 (the model's: 1); B>A twice
    assert metrics["categories"]["coding"]["mean"] == pytest.approx(50.0)  # type: ignore[index]
    cw = metrics["categories"]["creative_writing"]  # type: ignore[index]
    assert cw["official_baseline"] is False and "not the official" in cw["note"]
    assert (cw["null_judgments"], cw["missing_games"], cw["forced_readouts"]) == (2, 2, 1)
    # the tool's numbers have no creative-writing battle; with the read-out (B>A in game 1:
    # the model's win) and game 2's A>B (the model's win), one question's two rows
    assert cw["score"] is None and cw["battle_rows_with_readouts"] == 2
    assert cw["score_with_readouts"] == pytest.approx(100.0)


def test_the_report_reads_v2_metrics_by_category() -> None:
    from metajudge.report.tables import HARNESS_FIELDS, _field

    metrics = {"categories": {"hard_prompt": {"score": 31.5, "baseline": "o3-mini-2025-01-31"}}}
    fields = HARNESS_FIELDS["arena_hard_v2"]
    row = {ours: _field(metrics, theirs) for theirs, ours in fields.items()}
    assert row["arena_hard_v2_hard_score"] == 31.5
    assert row["arena_hard_v2_hard_baseline"] == "o3-mini-2025-01-31"
    assert row["arena_hard_v2_creative_score"] is None
