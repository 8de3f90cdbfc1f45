"""Judge health per iteration (SPEC §10): is the judge collapsing onto one score, is the
meta-judge deciding by position, is the judge losing its verdict format?

NeMo-Aligner's Meta-Rewarding notes that with too many judge pairs the judge "starts to output
identical scores for every response (always a 5)". These pure functions measure one iteration
and raise the three alarms, so a run shows the collapse as it starts:

* ``score_collapse``: one score value takes more than ``max_top_score_share`` of the scored
  judgments (scores parsed, completed or forced);
* ``first_position``: the meta-judge's share of decisive verdicts for the first-shown judgment
  leaves ``first_position_band``;
* ``parse_drop``: the share of judgments whose own text gave a score (``parsed``) falls by more
  than ``parse_rate_drop`` from the previous iteration.

>>> row = health_columns([1, 1, 1, 5], ["parsed", "forced", "completed", "parsed"])
>>> row["score_top_share"], row["score_entropy"], row["share_parsed"]
(0.75, 0.8113, 0.5)
>>> fired = alarms({**row, "meta_first_share": 0.95}, {"share_parsed": 0.8}, Thresholds())
>>> sorted(fired)
['first_position', 'parse_drop']
>>> alarm_columns(fired)["alarms"]
'first_position;parse_drop'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

#: where a judgment's score came from (records.ValueSource), in report order
SOURCES = ("parsed", "completed", "forced", "failed")
#: the alarms, in the order the ``alarms`` column lists them
ALARMS = ("score_collapse", "first_position", "parse_drop")


class Thresholds(NamedTuple):
    """The alarm thresholds (config ``judge_health``; the defaults are SPEC §10's)."""

    max_top_score_share: float = 0.9
    first_position_band: tuple[float, float] = (0.2, 0.8)
    parse_rate_drop: float = 0.05


def _finite(values: Iterable[float | None]) -> list[float]:
    return [round(float(v), 6) for v in values
            if v is not None and not (isinstance(v, float) and math.isnan(v))]


def score_top_share(scores: Iterable[float | None]) -> float:
    """The share of the most common score value among the scored judgments (NaN: none scored).

    >>> score_top_share([5, 5, 5, 4, None])
    0.75
    """
    values = _finite(scores)
    if not values:
        return math.nan
    return Counter(values).most_common(1)[0][1] / len(values)


def score_entropy(scores: Iterable[float | None]) -> float:
    """The Shannon entropy in bits (rounded to 4 decimals) of the scored judgments' score
    values: 0 when every score is the same, log2(6) ≈ 2.585 for integer scores spread evenly
    over 0–5 (NaN: none scored).

    >>> score_entropy([0, 1, 2, 3, 4, 5])
    2.585
    >>> score_entropy([3, 3, 3])
    0.0
    """
    values = _finite(scores)
    if not values:
        return math.nan
    total = len(values)
    bits = -sum(n / total * math.log2(n / total) for n in Counter(values).values())
    return round(bits + 0.0, 4)


def source_shares(sources: Iterable[str]) -> dict[str, float]:
    """``share_<source>`` for each of parsed, completed, forced and failed (NaN: no judgment).

    >>> source_shares(["parsed", "forced", "forced", "failed"])["share_forced"]
    0.5
    """
    counts = Counter(sources)
    total = sum(counts.values())
    unknown = set(counts) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown score sources {sorted(unknown)}; expected {list(SOURCES)}")
    return {f"share_{s}": counts[s] / total if total else math.nan for s in SOURCES}


def health_columns(scores: Iterable[float | None], sources: Iterable[str]) -> dict[str, float]:
    """One iteration's judge-health columns from its judgments' scores and score sources."""
    values = list(scores)
    return {"score_top_share": score_top_share(values), "score_entropy": score_entropy(values),
            **source_shares(sources)}


def _number(row: Mapping[str, Any] | None, key: str) -> float | None:
    value = None if row is None else row.get(key)
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def alarms(row: Mapping[str, Any], previous: Mapping[str, Any] | None,
           thresholds: Thresholds) -> dict[str, str]:
    """The alarms one iteration raises, each with its reason; empty when healthy. ``row`` holds
    its ``score_top_share``, ``meta_first_share`` and ``share_parsed``; ``previous`` the
    previous iteration's ``share_parsed`` (None for the first). A missing value (no scored
    judgment, no meta-judge verdict) raises nothing.

    >>> alarms({"score_top_share": 0.5, "meta_first_share": 0.5, "share_parsed": 0.6},
    ...        {"share_parsed": 0.62}, Thresholds())
    {}
    >>> alarms({"score_top_share": 0.96}, None, Thresholds())["score_collapse"]
    'one score takes 0.96 of the scored judgments (more than 0.9)'
    """
    fired: dict[str, str] = {}
    top = _number(row, "score_top_share")
    if top is not None and top > thresholds.max_top_score_share + 1e-12:
        fired["score_collapse"] = (f"one score takes {top:.2f} of the scored judgments (more "
                                   f"than {thresholds.max_top_score_share:g})")
    first = _number(row, "meta_first_share")
    low, high = thresholds.first_position_band
    if first is not None and not low - 1e-12 <= first <= high + 1e-12:
        fired["first_position"] = (f"the meta-judge gives {first:.2f} of its verdicts to the "
                                   f"first-shown judgment (outside [{low:g}, {high:g}])")
    now, before = _number(row, "share_parsed"), _number(previous, "share_parsed")
    if now is not None and before is not None and \
            before - now > thresholds.parse_rate_drop + 1e-12:
        fired["parse_drop"] = (f"the parsed share fell from {before:.2f} to {now:.2f} (by more "
                               f"than {thresholds.parse_rate_drop:g})")
    return fired


def alarm_columns(fired: Mapping[str, str]) -> dict[str, Any]:
    """``alarm_<name>`` flags and ``alarms`` (the fired names joined by ';', empty when none)."""
    return {**{f"alarm_{name}": name in fired for name in ALARMS},
            "alarms": ";".join(name for name in ALARMS if name in fired)}


__all__ = ["ALARMS", "SOURCES", "Thresholds", "alarm_columns", "alarms", "health_columns",
           "score_entropy", "score_top_share", "source_shares"]
