"""Is a study noise-limited? The scores' reported standard errors against their spread.

Each trial's score is measured on a validation subset and the worker records its bootstrap standard
error (``value_se``). Over the mixtures a study tried, the variance of the scores is the variance of
the true scores plus the noise variance, so ``se^2 / var(values)`` estimates the share of the
observed variation that is noise. When the noise explains half of it or more, the mixtures differ by
about as much as their noise: more trials will not tell them apart, a larger validation subset will
(the standard error falls as ``1 / sqrt(subset_size)``). ``benchmarks/sampler_efficiency.py`` shows
such landscapes: with a noise sd as large as the landscape's spread, no sampler's regret falls with
more trials.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["MIN_TRIALS", "NOISE_LIMITED_SHARE", "NO_SIGNAL_FACTOR", "NoiseCheck", "noise_check", "study_noise"]

NOISE_LIMITED_SHARE = 0.5
"""A study whose noise explains at least this share of its scores' variance is noise-limited."""

MIN_TRIALS = 8
"""Completed trials with a standard error needed before the check says anything: the variance of
fewer scores is too uncertain (its relative sd is ``sqrt(2 / (n - 1))``, 0.53 at 8)."""

NO_SIGNAL_FACTOR = 4.0
"""The advice when the scores' sd is no larger than their noise's: four times the examples (half the noise
sd). A noise-limited study with a signal is always told at least this much (its share is >= 0.5, so the
signal's variance is at most the noise's, and the factor is >= 1 / 0.5^2)."""

# The advice aims at a noise sd of half the signal's sd (a noise share of 20%).
_TARGET_NOISE_TO_SIGNAL = 0.5


@dataclass(frozen=True)
class NoiseCheck:
    """The noise of a study's scores against their spread.

    Attributes:
        n_trials: completed trials that report a standard error.
        se: root mean square of their standard errors (the noise sd of one score).
        sd: standard deviation of their values.
        subset_size: the study's ``objective.subset_size`` (examples per domain behind each score), or None
            when unknown (a study not made from a config) or the whole validation sets.
    """

    n_trials: int
    se: float
    sd: float
    subset_size: int | None = None

    @property
    def share(self) -> float:
        """Estimated share of the scores' variance that is noise, in [0, 1]."""
        if self.sd <= 0:
            return 1.0
        return min(self.se**2 / self.sd**2, 1.0)

    @property
    def limited(self) -> bool:
        """True when the noise explains at least :data:`NOISE_LIMITED_SHARE` of the variation."""
        return self.share >= NOISE_LIMITED_SHARE

    @property
    def signal_seen(self) -> bool:
        """True when the scores vary more than their noise alone would make them (``sd > se``)."""
        return self.sd > self.se

    def suggested_factor(self) -> float | None:
        """How many times more examples per score would bring the noise sd to half the signal's sd, when the
        study is noise-limited; else None. With no signal above the noise yet, :data:`NO_SIGNAL_FACTOR`
        (the least the formula ever asks of a noise-limited study): a first step, to check again after."""
        if not self.limited:
            return None
        if not self.signal_seen:
            return NO_SIGNAL_FACTOR
        signal_var = self.sd**2 - self.se**2
        return float((self.se / (_TARGET_NOISE_TO_SIGNAL * math.sqrt(signal_var))) ** 2)

    def suggested_subset_size(self) -> int | None:
        """``subset_size`` times :meth:`suggested_factor`, when both are known; else None."""
        factor = self.suggested_factor()
        if factor is None or self.subset_size is None:
            return None
        return math.ceil(self.subset_size * factor)

    def describe(self) -> str:
        """One or two lines for ``status`` and ``best``: the share, and what to do when limited."""
        line = (
            f"noise: standard error {self.se:.4f} (rms over {self.n_trials} trials) against a spread of "
            f"{self.sd:.4f} (sd of their scores): noise explains ~{100 * self.share:.0f}% of it"
        )
        factor = self.suggested_factor()
        if factor is None:
            return line
        more = "score each mixture on more examples (the standard error falls as 1/sqrt(examples))"
        about, then = ("about", "") if self.signal_seen else ("at least", ", then check again")
        if self.subset_size is not None:
            fix = (
                f"{more}: objective.subset_size {self.subset_size} -> {about} {self.suggested_subset_size()}, "
                f"in a new study (the subset is part of what a study measures){then}"
            )
        else:
            fix = f"{more}: {about} {factor:.1f}x as many{then}"
        differ = (
            "the mixtures tried differ by about as much as their noise"
            if self.signal_seen
            else "the scores show no difference beyond their noise yet"
        )
        return f"{line}\n  {differ}, so more trials will not tell them apart; {fix}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (with the derived share, verdict, suggestion and :meth:`describe`'s text)."""
        return {
            "n_trials": self.n_trials,
            "se": self.se,
            "sd": self.sd,
            "share": self.share,
            "limited": self.limited,
            "signal_seen": self.signal_seen,
            "subset_size": self.subset_size,
            "suggested_factor": self.suggested_factor(),
            "suggested_subset_size": self.suggested_subset_size(),
            "message": self.describe(),
        }


def noise_check(
    values_and_ses: Iterable[tuple[float | None, float | None]], subset_size: int | None = None
) -> NoiseCheck | None:
    """Check the completed trials' ``(value, value_se)`` pairs; pairs with a missing or non-finite part, or
    a standard error of zero, are skipped. None until :data:`MIN_TRIALS` pairs remain."""
    pairs = [
        (v, se)
        for v, se in values_and_ses
        if v is not None and se is not None and math.isfinite(v) and math.isfinite(se) and se > 0
    ]
    if len(pairs) < MIN_TRIALS:
        return None
    values = [v for v, _ in pairs]
    se = math.sqrt(statistics.fmean(s * s for _, s in pairs))
    return NoiseCheck(n_trials=len(pairs), se=se, sd=statistics.stdev(values), subset_size=subset_size)


class _Record(Protocol):
    @property
    def state(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def value_se(self) -> float | None: ...


def study_noise(records: Iterable[_Record], subset_size: int | None) -> NoiseCheck | None:
    """:func:`noise_check` on a study's completed trials (:class:`dmo_search.study.TrialRecord`)."""
    return noise_check(((r.value, r.value_se) for r in records if r.state == "COMPLETE"), subset_size)
