"""The bundled benchmark data: AlpacaEval's 805 instructions with the gpt4_1106_preview reference
outputs, Arena-Hard v0.1's 500 questions with the gpt-4-0314 answers, Arena-Hard v2.0's 750
questions with the o3-mini-2025-01-31 answers (the hard prompts' baseline), and the Open Assistant
first-turn prompts with human-ranked replies. Provenance and licences:
``metajudge/data/PROVENANCE.md``."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

ALPACA_EVAL_BASELINE = "gpt4_1106_preview"
ARENA_HARD_BASELINE = "gpt-4-0314"
#: Arena-Hard v2.0's official baseline per category (arena-hard-auto's ``JUDGE_SETTINGS``)
ARENA_HARD_V2_BASELINES = {"hard_prompt": "o3-mini-2025-01-31",
                           "creative_writing": "gemini-2.0-flash-001"}


@dataclass(frozen=True)
class AlpacaEvalItem:
    index: int            # position among the 805 (AlpacaEval's instruction-difficulty key)
    instruction: str
    dataset: str
    reference: str        # the gpt4_1106_preview output


@dataclass(frozen=True)
class ArenaHardQuestion:
    uid: str
    category: str
    cluster: str
    prompt: str
    baseline_answer: str  # gpt-4-0314


@dataclass(frozen=True)
class ArenaHardV2Question:
    uid: str
    category: str         # hard_prompt or creative_writing
    subcategory: str      # coding, math (hard prompts) or creative_writing
    prompt: str


@dataclass(frozen=True)
class RankedReply:
    message_id: str
    text: str
    rank: int             # 0 = best among the prompt's replies


@dataclass(frozen=True)
class RankedPrompt:
    prompt_id: str
    prompt: str
    replies: tuple[RankedReply, ...]


def _rows(name: str) -> list[dict]:
    data = (resources.files("metajudge") / "data" / "benchmarks" / name).read_bytes()
    # split on newlines only: answers may hold U+2028 and other characters splitlines() breaks at
    return [json.loads(line) for line in gzip.decompress(data).decode("utf-8").split("\n")
            if line.strip()]


@cache
def alpaca_eval_items() -> tuple[AlpacaEvalItem, ...]:
    return tuple(AlpacaEvalItem(row["id"], row["instruction"], row["dataset"], row["output"])
                 for row in _rows("alpaca_eval_805.jsonl.gz"))


@cache
def arena_hard_baseline() -> tuple[dict, ...]:
    """The gpt-4-0314 answers in arena-hard-auto v0.1's layout, with the tool's own
    ``token_len`` (cl100k) and style metadata (``conv_metadata``)."""
    return tuple(_rows("arena_hard_v0.1_gpt-4-0314_answers.jsonl.gz"))


@cache
def arena_hard_questions() -> tuple[ArenaHardQuestion, ...]:
    answers = {row["question_id"]: row["choices"][0]["turns"][0]["content"]
               for row in arena_hard_baseline()}
    return tuple(ArenaHardQuestion(row["uid"], row["category"], row["cluster"], row["prompt"],
                                   answers[row["uid"]])
                 for row in _rows("arena_hard_v0.1_questions.jsonl.gz"))


@cache
def arena_hard_v2_questions() -> tuple[ArenaHardV2Question, ...]:
    """The 750 questions in the tool's order (coding, math, then creative writing)."""
    return tuple(ArenaHardV2Question(row["uid"], row["category"], row["subcategory"],
                                     row["prompt"])
                 for row in _rows("arena_hard_v2.0_questions.jsonl.gz"))


@cache
def arena_hard_v2_o3_mini() -> tuple[dict, ...]:
    """o3-mini-2025-01-31's answers to all 750 v2.0 questions in the tool's layout (``uid,
    ans_id, model, messages, tstamp, metadata``), with the tool's o200k ``token_len``."""
    return tuple(_rows("arena_hard_v2.0_o3-mini-2025-01-31_answers.jsonl.gz"))


@cache
def oasst_ranked_prompts() -> tuple[RankedPrompt, ...]:
    return tuple(RankedPrompt(row["prompt_id"], row["prompt"], tuple(
        RankedReply(r["message_id"], r["text"], r["rank"]) for r in row["replies"]))
        for row in _rows("oasst1_en_val_first_turn_ranked.jsonl.gz"))
