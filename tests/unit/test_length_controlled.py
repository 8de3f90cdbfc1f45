"""LC win rate against AlpacaEval's published numbers and alpaca-eval 0.6.6's own recomputation.

Fixtures (tests/data, see PROVENANCE.md): six models' annotations (preference and output lengths)
from tatsu-lab/alpaca_eval and, per model, the leaderboard row and the values alpaca-eval 0.6.6
with scikit-learn 1.9.1 computes (``lc_reproduction.csv``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metajudge.analysis import C_GRID, length_controlled_winrate
from metajudge.analysis.length_controlled import _design, _training_rows
from metajudge.analysis.liblinear import _StdMT19937, fit_l1_logistic_liblinear

DATA = Path(__file__).parents[1] / "data"
ANNOTATIONS = pd.read_csv(DATA / "alpaca_eval_annotations.csv.gz")
EXPECTED = pd.read_csv(DATA / "alpaca_eval_expected.csv").set_index("model")
MODELS = [m for m in EXPECTED.index if m != "gpt4_1106_preview"]


def annotations(model: str) -> pd.DataFrame:
    return ANNOTATIONS[ANNOTATIONS["model"] == model].reset_index(drop=True)


@pytest.mark.parametrize("model", MODELS)
def test_leaderboard_value_at_the_matching_C(model: str) -> None:
    row = EXPECTED.loc[model]
    result = length_controlled_winrate(annotations(model), C=row.leaderboard_matching_C)
    assert result.length_controlled_winrate == pytest.approx(row.leaderboard_lc, abs=1e-6)
    if not np.isnan(row.leaderboard_lc_se):  # older leaderboard rows have no LC standard error
        assert result.lc_standard_error == pytest.approx(row.leaderboard_lc_se, abs=1e-6)
    assert result.win_rate == pytest.approx(row.win_rate, abs=1e-9)
    assert result.standard_error == pytest.approx(row.standard_error, abs=1e-9)
    assert result.n_total == row.n_total
    if len(annotations(model)) == 805:  # the leaderboard's avg_length is over model_outputs.json
        assert result.avg_length == row.avg_length
    coefficients = [row.coef_tanh_len, row.coef_instr_difficulty, row.coef_model_bias]
    assert list(result.coefficients.values()) == pytest.approx(coefficients, abs=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_cross_validated_C_agrees_with_alpaca_eval_066(model: str) -> None:
    row = EXPECTED.loc[model]
    result = length_controlled_winrate(annotations(model))
    assert result.cv_C == pytest.approx(row.cv_chosen_C) and result.C == result.cv_C
    assert result.length_controlled_winrate == pytest.approx(
        row.recomputed_lc_ae066_sklearn191, abs=1e-6)
    assert result.lc_standard_error == pytest.approx(row.recomputed_lc_se, abs=1e-6)


def test_models_whose_cv_choice_differs_from_the_leaderboard_are_in_the_fixture() -> None:
    differs = EXPECTED.dropna(subset=["leaderboard_matching_C"])
    differs = differs[~np.isclose(differs.cv_chosen_C, differs.leaderboard_matching_C)]
    assert len(differs) >= 2  # so the two tests above check distinct C choices


def test_baseline_against_itself_is_exactly_fifty() -> None:
    result = length_controlled_winrate(annotations("gpt4_1106_preview"))
    assert result.length_controlled_winrate == 50.0 and result.win_rate == 50.0


def test_output_texts_and_precomputed_lengths_give_the_same_result() -> None:
    lengths = annotations("phi-2")
    texts = pd.DataFrame({"output_1": ["x" * n for n in lengths["len_1"]],
                          "output_2": ["y" * n for n in lengths["len_2"]],
                          "preference": lengths["preference"]})
    a = length_controlled_winrate(lengths, C=C_GRID[5])
    b = length_controlled_winrate(texts, C=C_GRID[5])
    assert a == b


def test_rows_without_preference_drop_out_of_the_fit_but_not_of_the_lc_mean() -> None:
    frame = annotations("phi-2")
    holed = frame.assign(preference=frame["preference"].where(frame.index % 7 != 0))
    result = length_controlled_winrate(holed, C=C_GRID[5])
    assert result.n_total == int(holed["preference"].notna().sum())
    assert 0 < result.length_controlled_winrate < 100


def test_liblinear_transcription_matches_scikit_learn_coefficients() -> None:
    for model in MODELS:
        row = EXPECTED.loc[model]
        X, y, w = _training_rows(_design(annotations(model)))
        theta = fit_l1_logistic_liblinear(X, y, w, row.leaderboard_matching_C)
        assert theta == pytest.approx(
            [row.coef_tanh_len, row.coef_instr_difficulty, row.coef_model_bias], abs=1e-9)


def test_std_mt19937_stream() -> None:
    # std::mt19937 with its default seed 5489: first outputs; the C++ standard fixes the
    # 10000th as 4123659995
    stream = _StdMT19937(5489)
    first = [stream.next32() for _ in range(10000)]
    assert first[:3] == [3499211612, 581869302, 3890346734]
    assert first[-1] == 4123659995
    bounded = _StdMT19937(1)
    assert all(0 <= bounded.bounded(3) < 3 for _ in range(100))


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    frame = annotations("OpenHermes-2.5-Mistral-7B")
    a = length_controlled_winrate(frame, bootstrap_rounds=30, seed=3)
    b = length_controlled_winrate(frame, bootstrap_rounds=30, seed=3)
    assert (a.lc_lower, a.lc_upper) == (b.lc_lower, b.lc_upper)
    assert a.lc_lower < a.length_controlled_winrate < a.lc_upper
    # parameter uncertainty makes the interval wider than ±1.96 AlpacaEval standard errors
    assert a.lc_upper - a.lc_lower > 2 * 1.96 * a.lc_standard_error


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"output_1": ["a"], "output_2": ["b"], "preference": [3.0]}),
     "row 0: preference 3.0 is not in \\[1, 2\\]"),
    (pd.DataFrame({"output_1": ["a"], "output_2": ["b"]}), "'preference' column"),
    (pd.DataFrame({"preference": [1.0]}), "'output_1'"),
])
def test_bad_annotations_are_named(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        length_controlled_winrate(frame)
