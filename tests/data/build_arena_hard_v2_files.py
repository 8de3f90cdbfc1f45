"""Build tests/data/arena_hard_v2_files: Arena-Hard v2.0 files as the harness writes them
(``metajudge.evaluation.arena_hard_v2.score_arena_hard_v2``), for the official ``show_result.py``
to read in tests/unit/test_arena_hard_v2_official.py.

The first 15 coding and 15 math questions, the carried o3-mini answers as the baseline, and
synthetic model answers and verdicts drawn from a seeded generator: answers of varied length,
headers, lists and bold text, verdicts from all five labels or none (a game without a verdict,
as the embedded model mostly leaves them: its judgments rarely reach a label). Only the answers
and verdicts are made up; the files, their metadata (o200k token counts, markdown counts) and
the judgment rows are the harness's own.

    PYTHONPATH=. .venv/bin/python tests/data/build_arena_hard_v2_files.py
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

from metajudge.config import BackendConfig
from metajudge.evaluation.arena_hard_v2 import score_arena_hard_v2, select_questions
from metajudge.evaluation.config import EvalConfig
from metajudge.evaluation.records import ArenaHardV2Game, EvalOutput
from metajudge.records import BackendFingerprint, Provenance, SamplingParams
from metajudge.store import Store, evaluation_file

OUT = Path(__file__).parent / "arena_hard_v2_files"
PROVENANCE = Provenance(backend=BackendFingerprint(kind="synthetic", model="judge-model"),
                        params=SamplingParams(), seed=0, sample_index=0)
LABELS = ["A>>B", "A>B", "A=B", "B>A", "B>>A", None]


def main(per_subcategory: int = 15, seed: int = 1) -> None:
    rng = random.Random(seed)
    questions = select_questions(("hard_prompt",), per_subcategory)
    with tempfile.TemporaryDirectory() as tmp:
        config = EvalConfig(harness="arena-hard", name="synthetic-model", model=BackendConfig(),
                            version="2.0")
        store = Store.open(Path(tmp) / "run", config)
        store.write_all(evaluation_file("outputs"), [EvalOutput(
            id=q.uid, instruction=q.prompt,
            output=("## Heading\n" * rng.randint(0, 3) + "- **bold** item\n" * rng.randint(0, 4)
                    + "word " * rng.randint(5, 300)),
            generator="synthetic-model", finish_reason="stop", prompt_tokens=1,
            completion_tokens=1, provenance=PROVENANCE) for q in questions])
        store.write_all(evaluation_file("v2_games"), [ArenaHardV2Game(
            id=f"{q.uid}@{n}", item_id=q.uid, model="synthetic-model",
            baseline="o3-mini-2025-01-31", model_position="B" if n == 1 else "A",
            verdict=(verdict := rng.choice(LABELS)),
            verdict_source="parsed" if verdict else "failed",
            judgment=f"Synthetic judgment. [[{verdict}]]" if verdict else "Synthetic.",
            prompt_tokens=1, completion_tokens=1, provenance=PROVENANCE, category=q.category,
            subcategory=q.subcategory) for q in questions for n in (1, 2)])
        score_arena_hard_v2(store, categories=("hard_prompt",), limit=per_subcategory,
                            bootstrap_rounds=10)
        store.close()
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(Path(tmp) / "run" / "data", OUT / "data")
    # the prompts repeat the o3-mini answers: left out to keep the fixture small (the tool
    # reads only uid, category, model and the games' scores)
    for path in (OUT / "data").rglob("model_judgment/*/*.jsonl"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            for game in row["games"]:
                if game is not None:
                    game.pop("prompt")
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


if __name__ == "__main__":
    main()
