"""Reading scores and choices from token log-probabilities (SPEC §3).

The *probability-weighted score* is the expected score under the model's next-token distribution
at the position where the score is written, renormalised over the allowed score tokens. The
*forced read-out* appends ``\\nScore: `` (or ``\\nWinner: Judgment ``) to a judgment that has no
parseable answer and reads the same distribution for the next token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from metajudge.judging.parse import score_number_offset
from metajudge.records import Completion, TokenLogprob, TopLogprob

SCORE_LABELS = ("0", "1", "2", "3", "4", "5")
CHOICE_LABELS = ("A", "B")
SCORE_PREFILL = "\nScore: "
# no trailing space: tokenizers usually merge " A" into one token
WINNER_PREFILL = "\nWinner: Judgment"
#: alternatives requested per step when a read-out is wanted
TOP_K = 20


def label_distribution(top: Sequence[TopLogprob], labels: Sequence[str]
                       ) -> tuple[float, ...] | None:
    """P(label) for each label from one step's alternatives (tokens compared without surrounding
    whitespace), renormalised; None when no alternative is a label.

    >>> label_distribution([TopLogprob(token=" 4", logprob=math.log(0.6)),
    ...                     TopLogprob(token="5", logprob=math.log(0.2)),
    ...                     TopLogprob(token="The", logprob=math.log(0.2))], SCORE_LABELS)
    (0.0, 0.0, 0.0, 0.0, 0.75, 0.25)
    """
    mass = dict.fromkeys(labels, 0.0)
    for alt in top:
        key = alt.token.strip()
        if key in mass:
            mass[key] += math.exp(alt.logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return tuple(round(mass[label] / total, 12) for label in labels)


def expected_score(distribution: Sequence[float]) -> float:
    """The mean score under a distribution over 0..5.

    >>> expected_score((0, 0, 0, 0, 0.75, 0.25))
    4.25
    """
    return float(sum(p * int(label) for p, label in zip(distribution, SCORE_LABELS,
                                                       strict=True)))


def most_probable_score(distribution: Sequence[float]) -> float:
    """The forced read-out's score: the most probable of 0..5, the lower one on a tie.

    >>> most_probable_score((0, 0.4, 0, 0, 0.4, 0.2))
    1.0
    """
    best = max(range(len(distribution)), key=lambda k: (distribution[k], -k))
    return float(SCORE_LABELS[best])


def score_step(logprobs: Sequence[TokenLogprob]) -> TokenLogprob | None:
    """The generated step whose token starts the number after the last ``Score:``."""
    text = "".join(step.token for step in logprobs)
    offset = score_number_offset(text)
    if offset is None:
        return None
    position = 0
    for step in logprobs:
        end = position + len(step.token)
        if end > offset:
            return step if step.token.strip() else None
        position = end
    return None


def probability_weighted_score(completion: Completion) -> tuple[float, tuple[float, ...]] | None:
    """(expected score, P(0..5)) at the written score's position, or None when the completion
    has no logprobs, no score, or no score token among the alternatives there."""
    if not completion.logprobs:
        return None
    step = score_step(completion.logprobs)
    if step is None:
        return None
    dist = label_distribution(step.top, SCORE_LABELS)
    if dist is None:
        return None
    return expected_score(dist), dist


def first_step_distribution(completion: Completion, labels: Sequence[str]
                            ) -> tuple[float, ...] | None:
    """The label distribution of a forced read-out's single generated step."""
    if not completion.logprobs:
        return None
    return label_distribution(completion.logprobs[0].top, labels)
