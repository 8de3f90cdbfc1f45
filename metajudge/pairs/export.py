"""Preference pairs as TRL conversational preference datasets.

Each row has ``prompt`` (the user turn as a list of messages), ``chosen`` and ``rejected`` (one
assistant message each), as TRL's ``DPOTrainer`` expects, plus provenance columns: ``pair_type``,
``id``, ``iteration``, ``prompt_id``, ``chosen_id``, ``rejected_id``, ``chosen_score``,
``rejected_score``.
"""

from __future__ import annotations

from metajudge.records import DPORow, Message, PreferencePair


def to_trl_row(pair: PreferencePair) -> DPORow:
    """One TRL conversational preference row with provenance columns."""
    return DPORow(
        prompt=pair.prompt,
        chosen=(Message(role="assistant", content=pair.chosen),),
        rejected=(Message(role="assistant", content=pair.rejected),),
        pair_type=pair.pair_type, id=pair.id, iteration=pair.iteration,
        prompt_id=pair.prompt_id, chosen_id=pair.chosen_id, rejected_id=pair.rejected_id,
        chosen_score=pair.chosen_score, rejected_score=pair.rejected_score)

