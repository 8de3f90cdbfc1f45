"""Style features of an answer, as Arena-Hard's style control counts them (SPEC §9).

Markdown is counted outside code blocks: headers (``#`` … ``######`` at a line start), list items
(``1.`` or ``-``/``*``/``+`` at a line start, indented or not) and bold spans (``**…**``,
``__…__``). arena-hard-auto's ``add_markdown_info.py`` removes code by deleting the *contents* of
each ```` ```…``` ```` block (its regex captures what lies between the fences) and counts what
is left; :func:`markdown_counts` does the same, so counts match its metadata.

>>> counts = markdown_counts("# Title\\n\\n- **a**\\n- b\\n```\\n# not a header\\n```")
>>> counts["header_count"], counts["list_count"], counts["bold_count"]
(1, 2, 1)
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pandas as pd

CODE_BLOCK = re.compile(r"```([^`]*)```")
HEADERS = {f"h{level}": re.compile(rf"^#{{{level}}}\s", re.MULTILINE) for level in range(1, 7)}
LISTS = {
    "list_ordered": re.compile(r"^\s*\d+\.\s", re.MULTILINE),
    "list_unordered": re.compile(r"^\s*[-*+]\s", re.MULTILINE),
}
BOLD = {
    "bold_star": re.compile(r"\*\*[^*\n]+\*\*"),
    "bold_underscore": re.compile(r"__[^_\n]+__"),
}


def without_code(text: str) -> str:
    """The text with the contents of its fenced code blocks removed (fences stay)."""
    for block in CODE_BLOCK.findall(text):
        text = text.replace(block, "")
    return text


def markdown_counts(text: str) -> dict[str, int]:
    """Header, list and bold counts (totals and sub-counts) outside code blocks."""
    prose = without_code(text)
    counts = {name: len(pattern.findall(prose))
              for group in (HEADERS, LISTS, BOLD) for name, pattern in group.items()}
    counts["header_count"] = sum(counts[name] for name in HEADERS)
    counts["list_count"] = sum(counts[name] for name in LISTS)
    counts["bold_count"] = sum(counts[name] for name in BOLD)
    return counts


def answer_style(
    answers: pd.Series, count_tokens: Callable[[str], int] | None = None,
) -> pd.DataFrame:
    """One row of style features per answer: ``answer_chars``, the markdown counts and, given a
    tokenizer's counting function, ``token_len`` (Arena-Hard used tiktoken's gpt-3.5-turbo
    encoding; any tokenizer gives a usable length feature)."""
    rows = [markdown_counts(str(text)) for text in answers]
    frame = pd.DataFrame(rows, index=answers.index)
    frame.insert(0, "answer_chars", answers.astype(str).str.len())
    if count_tokens is not None:
        frame.insert(0, "token_len", [count_tokens(str(text)) for text in answers])
    return frame


def battle_style_columns(battles: pd.DataFrame, style: pd.DataFrame) -> pd.DataFrame:
    """Add ``<feature>_a``/``<feature>_b`` columns to battles from a style table indexed by
    (model, question_id); battles need ``question_id``."""
    out = battles.copy()
    for side in "ab":
        keys = pd.MultiIndex.from_arrays([battles[f"model_{side}"], battles["question_id"]])
        picked = style.reindex(keys)
        for column in ("token_len", "header_count", "list_count", "bold_count"):
            if column in style.columns:
                out[f"{column}_{side}"] = picked[column].to_numpy()
    return out
