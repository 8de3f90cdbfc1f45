"""Preference pairs: actor pairs with length control, judge pairs from a position-weighted Elo
fit over meta-judge battles, and their export as TRL datasets.

The two pure functions are public API for notebooks and other tools:

- :func:`select_actor_pair` (``metajudge.pairs.actor``)
- :func:`rate_judgments` (``metajudge.pairs.judge``)
"""

from metajudge.pairs.actor import select_actor_pair
from metajudge.pairs.judge import rate_judgments

__all__ = ["rate_judgments", "select_actor_pair"]
