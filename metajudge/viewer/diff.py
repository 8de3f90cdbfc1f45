"""Word-level differences between a pair's chosen and rejected texts, for the side-by-side view.

Each text is cut into words with the whitespace after them kept, so the segments joined give the
text back exactly; :class:`difflib.SequenceMatcher` (no junk heuristic) matches the two word
lists, and each side becomes a list of ``[same, text]`` segments: ``same`` is true where the
words are in both texts, false where they are this side's alone. Texts longer than
``MAX_WORDS`` words are compared on their first ``MAX_WORDS`` words only (the rest is one
segment marked ``null``: not compared), which bounds the quadratic matcher's time.

    sides("the cat sat", "the dog sat")
    # ([[True, "the "], [False, "cat "], [True, "sat"]],
    #  [[True, "the "], [False, "dog "], [True, "sat"]])
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

MAX_WORDS = 3000
_WORD = re.compile(r"\S+\s*|\s+")

Segment = list[bool | None | str]


def words(text: str) -> list[str]:
    """The text as words, each with the whitespace after it (leading whitespace alone)."""
    return _WORD.findall(text)


def _merge(segments: list[Segment], same: bool | None, text: str) -> None:
    if not text:
        return
    if segments and segments[-1][0] is same:
        segments[-1][1] = str(segments[-1][1]) + text
    else:
        segments.append([same, text])


def sides(chosen: str, rejected: str) -> tuple[list[Segment], list[Segment]]:
    """The two texts as ``[same, text]`` segments (see the module's docstring)."""
    a, b = words(chosen or ""), words(rejected or "")
    head_a, head_b = a[:MAX_WORDS], b[:MAX_WORDS]
    # compare words without their trailing whitespace: a line break is not a difference
    matcher = SequenceMatcher(None, [w.rstrip() for w in head_a], [w.rstrip() for w in head_b],
                              autojunk=False)
    left: list[Segment] = []
    right: list[Segment] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        same = tag == "equal"
        _merge(left, same, "".join(head_a[i1:i2]))
        _merge(right, same, "".join(head_b[j1:j2]))
    _merge(left, None, "".join(a[MAX_WORDS:]))
    _merge(right, None, "".join(b[MAX_WORDS:]))
    return left, right
