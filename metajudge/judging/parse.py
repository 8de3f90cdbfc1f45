"""Parsers for judge outputs. Pure functions; the *last* match decides; failures are values.

Scores (judge template, ``Score: <points>``):

>>> parse_score("The response is relevant (Score: 1 so far) ... Final.\\nScore: 4")
ParsedScore(value=4.0, error=None)
>>> parse_score("Score: 4/5")
ParsedScore(value=4.0, error=None)
>>> parse_score("**Score: 3**")
ParsedScore(value=3.0, error=None)
>>> parse_score("Score: **3**")
ParsedScore(value=3.0, error=None)
>>> parse_score("Score: 4.5")
ParsedScore(value=4.5, error=None)
>>> parse_score("Score: 7")
ParsedScore(value=None, error='out of range: 7 not in [0, 5]')
>>> parse_score("I would give it four points.")
ParsedScore(value=None, error='no Score: line')
>>> parse_score("Score: 2\\nOn reflection... Score: excellent")
ParsedScore(value=None, error='last Score: has no number')
>>> parse_score("Score: 8/10")
ParsedScore(value=None, error='score given out of 10, not out of 5')

Meta-judge winners (``Winner: Judgment A|B``):

>>> parse_winner("Judgment A is vague. Winner: Judgment A ... no wait.\\nWinner: Judgment B")
ParsedChoice(value='B', error=None)
>>> parse_winner("**Winner:** Judgment a")
ParsedChoice(value='A', error=None)
>>> parse_winner("Both are fine.")
ParsedChoice(value=None, error='no Winner: line')

MT-Bench ratings, as FastChat parses them (the *first* ``[[x]]``, else the first ``[x]``; no
rating is FastChat's −1):

>>> parse_rating("Rating: [[8]]. On reflection [[3]]")
ParsedScore(value=8.0, error=None)
>>> parse_rating("I give it [7.5] out of 10")
ParsedScore(value=7.5, error=None)
>>> parse_rating("A solid answer.")
ParsedScore(value=None, error='no [[rating]]')

Pairwise verdicts (``[[A>>B]]`` ... ``[[B>>A]]``):

>>> parse_verdict("A is better [[A>B]] but on reflection [[B>>A]]")
ParsedChoice(value='B>>A', error=None)
>>> parse_verdict("My verdict: tie.")
ParsedChoice(value=None, error='no [[verdict]] label')
"""

from __future__ import annotations

import re
from typing import NamedTuple

SCORE_MIN, SCORE_MAX = 0.0, 5.0

_SCORE_LABEL = re.compile(r"score\s*\**\s*[:：]", re.IGNORECASE)
_SCORE_VALUE = re.compile(
    r"[\s*_`\"']*(?P<num>[+-]?\d+(?:\.\d+)?)(?:\s*(?:/|out of)\s*(?P<den>\d+))?", re.IGNORECASE
)
_WINNER = re.compile(r"winner\s*\**\s*[:：]\s*\**\s*(?:judgment|judgement)?\s*\**\s*([AB])\b",
                     re.IGNORECASE)
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")
_VERDICT = re.compile(r"\[\[\s*(A>>B|A>B|A=B|B>A|B>>A)\s*\]\]")
VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")


class ParsedScore(NamedTuple):
    value: float | None
    error: str | None


class ParsedChoice(NamedTuple):
    value: str | None
    error: str | None


def parse_score(text: str) -> ParsedScore:
    """The number after the last ``Score:`` label, if it is a score in [0, 5]."""
    labels = list(_SCORE_LABEL.finditer(text))
    if not labels:
        return ParsedScore(None, "no Score: line")
    match = _SCORE_VALUE.match(text, labels[-1].end())
    if match is None:
        return ParsedScore(None, "last Score: has no number")
    den = match.group("den")
    if den is not None and int(den) != 5:
        return ParsedScore(None, f"score given out of {den}, not out of 5")
    value = float(match.group("num"))
    if not SCORE_MIN <= value <= SCORE_MAX:
        return ParsedScore(None, f"out of range: {match.group('num')} not in [0, 5]")
    return ParsedScore(value, None)


def score_number_offset(text: str) -> int | None:
    """Character offset where the last ``Score:`` label's number starts (None without one)."""
    labels = list(_SCORE_LABEL.finditer(text))
    if not labels:
        return None
    match = _SCORE_VALUE.match(text, labels[-1].end())
    return match.start("num") if match else None


def through_verdict_line(text: str) -> str:
    """A judgment's text up to the end of the line of its verdict (the last ``Score:`` label
    and its number): what it would be had it stopped there. A text without one is returned
    as it is.

    >>> through_verdict_line("Clear and correct.\\nScore: 4\\nThe response also")
    'Clear and correct.\\nScore: 4'
    """
    start = score_number_offset(text)
    if start is None:
        return text
    end = text.find("\n", start)
    return text if end < 0 else text[:end]


def parse_winner(text: str) -> ParsedChoice:
    """``'A'`` or ``'B'`` from the last ``Winner: Judgment X`` line."""
    matches = _WINNER.findall(text)
    if not matches:
        return ParsedChoice(None, "no Winner: line")
    return ParsedChoice(matches[-1].upper(), None)


def parse_rating(text: str) -> ParsedScore:
    """An MT-Bench rating the way FastChat's ``run_judge_single`` reads it: the first
    ``[[number]]``, else the first ``[number]``. FastChat does not bound it; neither does this."""
    match = _RATING.search(text) or _RATING_BACKUP.search(text)
    if match is None:
        return ParsedScore(None, "no [[rating]]")
    return ParsedScore(float(match.group(1)), None)


def parse_verdict(text: str) -> ParsedChoice:
    """The last Arena-Hard verdict label, without brackets (``'A>>B'`` ... ``'B>>A'``)."""
    matches = _VERDICT.findall(text)
    if not matches:
        return ParsedChoice(None, "no [[verdict]] label")
    return ParsedChoice(matches[-1], None)
