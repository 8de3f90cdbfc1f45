"""The paper's numbers to draw beside a run's own (SPEC §11; Wu et al. 2024, Table 1 and 2).

Iteration 0 is the seed model (Llama-3-8B-Instruct); ``SFT on EFT`` is the paper's baseline of
supervised fine-tuning on judge (EFT) data, drawn as a separate marker at iteration 0.
"""

from __future__ import annotations

import pandas as pd


def reference_curves() -> pd.DataFrame:
    """One row per (method, iteration): LC win rate, win rate, mean length (chars), Arena-Hard."""
    rows = [
        ("Seed (Llama-3-8B-Instruct)", 0, 22.92, 22.57, 1899, 20.6),
        ("SFT on EFT", 0, 25.47, 25.10, 1943, 24.2),
        ("Meta-Rewarding", 0, 22.92, 22.57, 1899, 20.6),
        ("Meta-Rewarding", 1, 27.85, 27.62, 1949, 25.1),
        ("Meta-Rewarding", 2, 32.66, 33.29, 2001, 27.4),
        ("Meta-Rewarding", 3, 35.45, 37.24, 2064, 27.6),
        ("Meta-Rewarding", 4, 39.44, 39.45, 2003, 29.1),
        ("Self-Rewarding + LC", 0, 22.92, None, None, None),
        ("Self-Rewarding + LC", 1, 26.93, None, None, None),
        ("Self-Rewarding + LC", 2, 30.38, None, None, None),
        ("Self-Rewarding + LC", 3, 34.87, None, None, None),
        ("Self-Rewarding + LC", 4, 35.49, None, None, None),
    ]
    return pd.DataFrame(rows, columns=["method", "iteration", "length_controlled_winrate",
                                       "win_rate", "avg_length", "arena_hard_score"])
