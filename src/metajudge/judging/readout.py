"""Reading scores and choices from a label distribution (SPEC §3).

The *probability-weighted score* is the expected score under the model's next-token distribution
at the position where the judgment writes its score, renormalised over the allowed score tokens:
one label-scoring request per judgment, continuing the judgment up to its last ``Score:``
(:func:`score_prefix`). The *forced read-out* appends ``\\nScore: `` (or ``\\nWinner:
Judgment``) to a judgment without a parseable answer and reads the same distribution for the
next token.
"""

from __future__ import annotations

from collections.abc import Sequence

from metajudge.judging.parse import score_number_offset

SCORE_LABELS = ("0", "1", "2", "3", "4", "5")
CHOICE_LABELS = ("A", "B")
SCORE_PREFILL = "\nScore: "
# no trailing space: tokenizers usually merge " A" into one token
WINNER_PREFILL = "\nWinner: Judgment"


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


def score_prefix(text: str) -> str | None:
    """The judgment up to where its last score's number starts (None when the text has no
    ``Score:`` with a number). The whitespace before the number stays: most tokenizers of
    current models (Llama 3, SmolLM2) write it as its own token, so the number's distribution is
    read after it; backends whose tokenizer merges " 4" into one token read before it.

    >>> score_prefix("Relevant and clear.\\nScore: 4")
    'Relevant and clear.\\nScore: '
    >>> score_prefix("Score: **3** overall")
    'Score: **'
    >>> score_prefix("no score here") is None
    True
    """
    offset = score_number_offset(text)
    return None if offset is None else text[:offset]
