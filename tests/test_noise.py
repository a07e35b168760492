"""The noise check: the share of the scores' variance that their standard errors explain, and its advice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dmo_search.noise import MIN_TRIALS, NO_SIGNAL_FACTOR, NOISE_LIMITED_SHARE, NoiseCheck, noise_check


def _pairs(values: np.ndarray, se: float) -> list[tuple[float | None, float | None]]:
    return [(float(v), se) for v in values]


def test_says_nothing_before_enough_trials_and_skips_pairs_without_an_error() -> None:
    values = np.linspace(0.4, 0.6, MIN_TRIALS - 1)
    assert noise_check(_pairs(values, 0.01)) is None
    unusable: list[tuple[float | None, float | None]] = [(0.5, None), (None, 0.01), (0.5, 0.0), (math.nan, 0.01)]
    assert noise_check(_pairs(values, 0.01) + unusable) is None
    check = noise_check([*_pairs(values, 0.01), (0.7, 0.03)])
    assert check is not None and check.n_trials == MIN_TRIALS
    assert check.se == pytest.approx(math.sqrt(((MIN_TRIALS - 1) * 0.01**2 + 0.03**2) / MIN_TRIALS))
    assert check.sd == pytest.approx(float(np.std([*values, 0.7], ddof=1)))


@pytest.mark.parametrize(("signal_sd", "noise_sd"), [(0.05, 0.01), (0.01, 0.01), (0.005, 0.02)])
def test_share_estimates_the_noise_fraction_of_simulated_scores(signal_sd: float, noise_sd: float) -> None:
    rng = np.random.default_rng(0)
    true_scores = 0.5 + signal_sd * rng.standard_normal(2000)
    observed = true_scores + noise_sd * rng.standard_normal(2000)
    check = noise_check(_pairs(observed, noise_sd))
    assert check is not None
    expected = noise_sd**2 / (signal_sd**2 + noise_sd**2)
    assert check.share == pytest.approx(expected, abs=0.05)
    assert check.limited is (expected >= NOISE_LIMITED_SHARE)


def test_a_clear_signal_is_reported_without_advice() -> None:
    check = NoiseCheck(n_trials=20, se=0.019, sd=0.0945, subset_size=100)
    assert not check.limited and check.suggested_subset_size() is None
    assert check.share == pytest.approx(0.019**2 / 0.0945**2)
    text = check.describe()
    assert "noise explains ~4%" in text and "subset_size" not in text


def test_a_noise_limited_study_is_told_how_many_examples_would_do() -> None:
    # Scores vary with sd 0.0125 and their noise sd is 0.01: the signal's sd is 0.0075, and a noise
    # sd of half that (0.00375) needs (0.01 / 0.00375)^2 = 7.1x the examples.
    check = NoiseCheck(n_trials=30, se=0.01, sd=0.0125, subset_size=100)
    assert check.limited and check.share == pytest.approx(0.64)
    assert check.suggested_subset_size() == 712
    text = check.describe()
    assert "more trials will not tell them apart" in text and "objective.subset_size 100 -> about 712" in text
    assert check.to_dict()["suggested_subset_size"] == 712 and check.to_dict()["message"] == text


def test_advice_without_a_visible_signal_or_without_a_subset() -> None:
    # the scores vary less than their noise alone would make them: no signal to size the advice by, so a
    # first step of 4x the examples (the least a noise-limited study with a signal is ever told)
    flat = NoiseCheck(n_trials=10, se=0.02, sd=0.015, subset_size=50)
    assert flat.share == 1.0 and not flat.signal_seen
    assert flat.suggested_factor() == NO_SIGNAL_FACTOR == 4 and flat.suggested_subset_size() == 200
    text = flat.describe()
    assert "the scores show no difference beyond their noise yet, so more trials will not tell them apart" in text
    assert "objective.subset_size 50 -> at least 200, in a new study" in text and text.endswith("then check again")
    assert flat.to_dict()["signal_seen"] is False and flat.to_dict()["suggested_subset_size"] == 200
    flat_unknown = NoiseCheck(n_trials=10, se=0.02, sd=0.015, subset_size=None)
    assert "at least 4.0x as many, then check again" in flat_unknown.describe()
    # just above the noise, the formula's factor joins the no-signal one from above
    edge = NoiseCheck(n_trials=10, se=0.02, sd=0.02 * 1.414, subset_size=50)
    assert edge.signal_seen and edge.limited and edge.suggested_factor() == pytest.approx(4, rel=0.01)
    unknown = NoiseCheck(n_trials=10, se=0.01, sd=0.0125, subset_size=None)
    assert unknown.limited and unknown.suggested_subset_size() is None
    assert unknown.suggested_factor() == pytest.approx(64 / 9)
    assert "more examples (the standard error falls as 1/sqrt(examples)): about 7.1x as many" in unknown.describe()
    constant = NoiseCheck(n_trials=10, se=0.01, sd=0.0, subset_size=100)
    assert constant.share == 1.0 and constant.limited
