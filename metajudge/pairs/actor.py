"""Actor pairs with length control (SPEC §4, Wu et al. 2024).

For one prompt with response scores S and lengths L (characters), ρ ∈ [0, 1]:
chosen = the shortest response scoring in [(1−ρ)·S_max + ρ·S_min, S_max];
rejected = the longest response scoring in [S_min, (1−ρ)·S_min + ρ·S_max].
ρ = 0 is plain best-versus-worst. Ties in length go to the better-scored response for chosen and
the worse-scored one for rejected, then to the earlier index.

>>> select_actor_pair([4.0, 5.0, 4.8, 1.0], [900, 2000, 700, 300], rho=0.0)
(1, 3)
>>> select_actor_pair([4.0, 5.0, 4.8, 1.0], [900, 2000, 700, 300], rho=0.1)
(2, 3)
>>> select_actor_pair([3.0, 3.0], [10, 20], rho=0.0) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: tolerance for comparing mean scores against the thresholds
EPS = 1e-9


class ActorPairDecision(NamedTuple):
    """The outcome for one prompt: indices of chosen and rejected, or None with the reason."""

    pair: tuple[int, int] | None
    reason: str


def decide_actor_pair(
    scores: Sequence[float | None],
    lengths: Sequence[int],
    rho: float,
    max_chosen_length: int | None = None,
) -> ActorPairDecision:
    """Apply the length-controlled rule and say why a prompt does or does not yield a pair."""
    if len(scores) != len(lengths):
        raise ValueError("scores and lengths differ in length")
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [0, 1], got {rho}")
    scored = [i for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return ActorPairDecision(None, "fewer than two scored responses")
    values = {i: float(scores[i]) for i in scored}  # type: ignore[arg-type]
    s_max, s_min = max(values.values()), min(values.values())
    if s_max - s_min <= EPS:
        return ActorPairDecision(None, "all scores equal")
    high = (1 - rho) * s_max + rho * s_min
    low = (1 - rho) * s_min + rho * s_max
    chosen = min((i for i in scored if values[i] >= high - EPS),
                 key=lambda i: (lengths[i], -values[i], i))
    rejected = max((i for i in scored if values[i] <= low + EPS),
                   key=lambda i: (lengths[i], -values[i], -i))
    if chosen == rejected:
        return ActorPairDecision(None, "chosen and rejected are the same response")
    if max_chosen_length is not None and lengths[chosen] > max_chosen_length:
        return ActorPairDecision(
            None, f"chosen response longer than {max_chosen_length} characters")
    return ActorPairDecision((chosen, rejected), "pair")


def select_actor_pair(
    scores: Sequence[float | None], lengths: Sequence[int], rho: float
) -> tuple[int, int] | None:
    """(chosen, rejected) indices for one prompt by the length-controlled rule, or None."""
    return decide_actor_pair(scores, lengths, rho).pair
