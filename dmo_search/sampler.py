"""Simplex-native Bayesian optimisation: an Optuna sampler with BoTorch inside.

The sampler models the objective as a function of the mixture weights ``w`` (a point of the
simplex), not of the cube parameters ``u_*`` that encode them in a trial (see
:mod:`dmo_search.simplex`), and optimises its acquisition function on the simplex itself: bounds
``[0, 1]`` and the equality constraint ``sum w = 1`` (BoTorch's ``optimize_acqf`` with SLSQP), so
faces and vertices (exact zeros) are proposals like any other.

How one proposal is made
------------------------
1. The study is read from its storage: completed trials give ``(w, y)``, PRUNED trials of a
   single-objective study give ``(w, y)`` with ``y`` their last reported value (multi-fidelity: a score
   on a nested random sample of the same examples, unbiased but noisier; left out, the GP keeps
   proposing mixtures the pruner rejects), RUNNING and WAITING trials give pending mixtures, FAIL
   trials are left out of the model. Nothing else is kept
   between calls, so any process that opens the study proposes the same next point.
2. Until ``n_startup_trials`` trials are complete, the next point of the initial design is proposed:
   the centre, then (``"space-filling"``) the point of a fixed pool of uniform draws on the simplex
   that, added to the mixtures the study already holds, brings them closest in energy distance to the
   uniform distribution: greedy support points [Mak2018support]_, which spread over the simplex as a
   representative sample does, instead of crowding its vertices as a maximin design does.
3. Then a GP (``SingleTaskGP``: Matern-5/2 kernel with automatic relevance determination and the
   dimension-scaled priors of [Hvarfner2024vanilla]_, an inferred homoscedastic noise, standardised
   outcomes) is fitted to ``(w, y)`` by maximum a posteriori, ``y`` divided by its standard deviation
   first (the proposals for ``f`` and ``c * f`` are the same); the kernel reads each weight and its
   square root. When trials report a standard error above zero (the ``value_se`` attribute that the
   worker records and ``optimize_simplex(noise_sd=...)`` sets), the noise gets a nearly flat prior
   instead of the near-noiseless default (and in the GP that recommends, a floor at the trials' median
   standard error); when none does, the lengthscale prior is scaled by how far apart mixtures lie on
   the simplex rather than by the number of inputs. The model is :mod:`dmo_search.gp`.
4. The acquisition: for one noisy objective qLogNEI [Ament2023logei]_, noise-aware; for one noiseless
   objective (no trial reports a standard error) qUCB with ``beta = 2`` [Srinivas2010ucb]_, whose
   worst 8-domain study measured ends lower than qLogNEI's
   (:func:`dmo_search.acquisition.build_acquisition` has the measurements); qLogNEHVI
   [Daulton2021nehvi]_ for up to four objectives, qLogNParEGO beyond (the hypervolume's cost grows
   exponentially with the number of objectives). Pending mixtures enter as ``X_pending``, so
   parallel workers do not propose the same point.
5. The acquisition is maximised by SLSQP (:mod:`dmo_search.acquisition`) from a few starts chosen
   among uniform draws, draws on the faces, the vertices and perturbations of the best mixtures; the
   result is clipped to ``[0, 1]``, weights below ``1e-6`` become exact zeros, and it is renormalised.
   A result that moves less than 1% of the data from a mixture already run or pending (a rerun
   scores the same; less than 1% inside narrow constraints) is replaced by the next space-filling point.

The recommendation (:meth:`SimplexGPSampler.recommend`) is the argmax of the posterior mean of the
same GP (its noise kept at or above the trials' median standard error); with one objective, a weight
under ``1 / (4K)`` is then set to zero where the posterior cannot tell the mixture without it from the
mixture with it.

Every random choice is seeded by ``(seed, trial number)``.

The "2x fewer trials than TPE in N cells" figures in this package's docstrings count cells as
``benchmarks/sampler_efficiency.py`` did when they were measured, charging gp-simplex all n trials of a
checkpoint (the benchmark now divides by the trials it needed to reach its level, and prints both):
each compares two variants counted the same way.

References
----------
.. [Mak2018support] S. Mak, V. R. Joseph. Support points. Annals of Statistics 46(6A), 2018.
.. [Hvarfner2024vanilla] C. Hvarfner, E. O. Hellsten, L. Nardi. Vanilla Bayesian Optimization
   Performs Great in High Dimensions. ICML 2024.
.. [Ament2023logei] S. Ament, S. Daulton, D. Eriksson, M. Balandat, E. Bakshy. Unexpected
   Improvements to Expected Improvement for Bayesian Optimization. NeurIPS 2023.
.. [Daulton2021nehvi] S. Daulton, M. Balandat, E. Bakshy. Parallel Bayesian Optimization of Multiple
   Noisy Objectives with Expected Hypervolume Improvement. NeurIPS 2021.
.. [Srinivas2010ucb] N. Srinivas, A. Krause, S. Kakade, M. Seeger. Gaussian Process Optimization in
   the Bandit Setting: No Regret and Experimental Design. ICML 2010.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from dmo_search import simplex
from dmo_search.acquisition import best_mixtures, build_acquisition, drop_negligible_weights, maximise_on_simplex
from dmo_search.constraints import MixtureConstraints
from dmo_search.gp import fit_values, model_errors, torch_context, value_scale

if TYPE_CHECKING:
    import torch
    from botorch.models import SingleTaskGP
    from optuna.distributions import BaseDistribution
    from optuna.study import Study

    from dmo_search.warmstart import SourcePrior

__all__ = ["INITIAL_DESIGNS", "VALUE_SE_ATTR", "WEIGHTS_SYSTEM_ATTR", "SimplexGPSampler", "feasible_designs"]

_logger = logging.getLogger(__name__)

_POOL_DESIGNS = ("space-filling", "maximin")
"""Designs that continue the centre with points picked from a pool of uniform draws (``_design_point``)."""

INITIAL_DESIGNS: tuple[str, ...] = (*_POOL_DESIGNS, *simplex.END_POINT_DESIGNS, "paper")
"""Names accepted by ``initial_design`` (a list of mixtures is accepted too)."""

VALUE_SE_ATTR = "value_se"
"""Trial user attribute holding the standard error of the trial's value (the worker's bootstrap SE);
one above zero marks the objective noisy."""

WEIGHTS_SYSTEM_ATTR = "dmo_search:proposed_weights"
"""Trial system attribute holding the proposed weights as soon as they are proposed, so that other
workers see a RUNNING trial as pending before its parameters are written."""

# A proposed weight below this becomes an exact zero: 1e-6 of a 100k-sample budget is 0.1 sample.
_ZERO_SNAP = 1e-6
# The recommendation drops a weight under this share of the uniform one (1 / K) where the posterior
# cannot tell the mixture without it from the one with it (recommend's docstring says why).
_NEGLIGIBLE_SHARE = 0.25
# Two mixtures closer than this (Euclidean) are the same design point.
_SAME_POINT = 1e-6
# A GP proposal that moves less than this share of the data (simplex.data_moved) from a mixture the
# study holds is a repeat (see SimplexGPSampler._unrepeated), or less than this share of the feasible
# set's spread where the constraints leave less room (_repeat_distance).
_REPEAT = 0.01
_REPEAT_OF_SPREAD = 0.05
# Size of the pool of uniform draws that the initial designs pick from, per domain (at most 1024).
_POOL_PER_DOMAIN = 128
_POOL_MAX = 1024


@dataclasses.dataclass(frozen=True)
class _History:
    """What the storage says about a study, as arrays of weights.

    Attributes:
        X: ``n x K`` weights of the completed trials.
        Y: ``n x M`` their values, oriented so that larger is better.
        pending: ``p x K`` weights of RUNNING and WAITING trials (other than the one being sampled).
        seen: ``s x K`` every mixture the study holds (any state), for the initial design.
        next_number: the number of trials in the study (the next trial's number when sampling
            outside a trial).
        prior: a warm start's source points (:class:`dmo_search.warmstart.SourcePrior`), or None.
        noisy: a trial in ``X`` reports a standard error above zero (``value_se``): the objective is
            noisy, so the GP's noise gets a flat prior (:mod:`dmo_search.gp`).
        noise_sd: the median standard error the trials in ``X`` report (one objective), or None.
    """

    X: NDArray[np.float64]
    Y: NDArray[np.float64]
    pending: NDArray[np.float64]
    seen: NDArray[np.float64]
    next_number: int
    prior: SourcePrior | None = None
    noisy: bool = False
    noise_sd: float | None = None

    def fitted(self, *, recommending: bool = False) -> tuple[torch.Tensor, torch.Tensor, SingleTaskGP]:
        """The GP fitted to these trials (:func:`dmo_search.gp.fit_values`), with its inputs and values.

        ``recommending``: the GP whose posterior mean is the recommendation; its noise is not fitted
        below the reported standard error (``noise_sd``). The proposals' GP learns it freely.
        """
        floor = self.noise_sd if recommending else None
        return fit_values(self.X, self.Y, prior=self.prior, noisy=self.noisy, noise_floor=floor)


class SimplexGPSampler(BaseSampler):
    """Bayesian optimisation of mixture weights on the simplex (an Optuna sampler, BoTorch inside).

    The sampler proposes the ``K - 1`` cube parameters ``u_0 .. u_{K-2}`` of
    :func:`dmo_search.simplex.distributions`; decode a trial's mixture with
    :func:`dmo_search.simplex.params_to_weights`. Single- and multi-objective studies (one
    objective per domain, say) are supported; directions are read from the study.

    Example:
        >>> import optuna
        >>> from dmo_search import simplex
        >>> sampler = SimplexGPSampler(3, seed=0)
        >>> study = optuna.create_study(direction="maximize", sampler=sampler)
        >>> def objective(trial):
        ...     params = {n: trial.suggest_float(n, 0.0, 1.0) for n in simplex.param_names(3)}
        ...     w = simplex.params_to_weights(params, 3)
        ...     return -sum((wi - ti) ** 2 for wi, ti in zip(w, [0.6, 0.4, 0.0]))
        >>> study.optimize(objective, n_trials=8)  # doctest: +SKIP
        >>> sampler.recommend(study)  # doctest: +SKIP
        [0.6, 0.4, 0.0]

    Args:
        n_domains: K, the number of domains (2 or more).
        seed: seeds every random choice together with the trial number. Defaults to 0.
        n_startup_trials: completed trials before the GP takes over. Defaults to :obj:`None`: the
            length of the design for ``"paper"`` or a list of mixtures, else ``K + 1`` (the smallest
            design that fixes a linear trend on the simplex, plus one point). A shorter start,
            ``max(3, ceil(K / 2) + 1)`` points, was measured and not kept (median regret on the noiseless
            landscapes of ``benchmarks/sampler_efficiency.py``): better at K = 3 after 6 trials
            (interior 0.059 -> 0.004, 10 seeds) and no worse at K = 4, but worse at K = 8 (interior,
            seeds 0-4: 0.098 -> 0.137 after 15 trials, 0.040 -> 0.072 after 20), where 16 inputs
            and 5 points leave the GP little to fit. With noise sd 0.01 (K = 4 and 6, seeds 0-9) it
            finds vertices sooner (K=4 after 12 trials 0.094 -> 0.035, K=6 0.310 -> 0.205) but
            interiors and faces later (K=4 interior after 12 0.132 -> 0.380, face 0.021 -> 0.087;
            K=6 face after 36 0.126 -> 0.166): 659 seed-trials better by more than 0.005, 862 worse.
        initial_design: the design proposed before the GP: ``"space-filling"`` (the centre, then
            greedy support points: the draw that brings the study's mixtures closest in energy
            distance to the uniform distribution on the simplex), ``"maximin"`` (the centre, then
            the draw farthest from the study's mixtures: it favours points near the vertices),
            ``"vertices"`` (the centre, then the K single-domain mixtures), ``"leave-one-out"`` (the
            centre, then the K mixtures without one domain: what dropping each domain costs), ``"paper"`` (the
            paper's designs for K = 2..4, see :func:`dmo_search.simplex.paper_design`), or a list
            of mixtures. Points the study already holds (enqueued, run or failed) are skipped;
            once a list is used up, support points continue it. Defaults to ``"space-filling"``.
            ``"leave-one-out"`` was measured as the default and not made it (``benchmarks/
            sampler_efficiency.py --gp-design leave-one-out``, seeds 0-4, median regret): with noise sd
            0.01, 2x fewer trials than TPE in 48 cells instead of 43 of 60, K=4 after 18 trials 0.089 ->
            0.070, faces far better (K=6 after 20 trials 0.369 -> 0.038), vertices worse (K=8 after 20
            0.126 -> 0.561; K=6 0.039 -> 0.270), better at 29 checkpoints and worse at 27; noiseless,
            the interiors after the design gain (K=8 after 15 trials 0.094 -> 0.085) and K=2 loses (its
            two leave-one-out mixtures are the vertices; 2x in 56 cells of 60, against 58). Part of the faces' gain is
            the benchmark's: its face landscapes have exactly one harmful domain, which this design
            probes directly. The noisy gain did not hold out of sample: seeds 5-9, 2x against TPE in
            37 cells against the default's 39 (random: 42 vs 48; K=8 vertex after 20 trials 0.079 ->
            0.626); the ``mixlaw`` family, 32 of 40 for both.
        n_restarts: SLSQP starts of the acquisition optimisation. Defaults to 10.
        raw_samples: uniform draws on the simplex scored to choose the starts (half as many again
            are drawn on faces). Defaults to 512.
        n_mc_samples: quasi-Monte-Carlo samples of the acquisition function. Defaults to 128.
        independent_sampler: samples parameters other than the mixture's. Defaults to
            :obj:`None` (an :class:`optuna.samplers.RandomSampler` seeded with ``seed``).
        constraints: hard linear constraints on the weights (:class:`MixtureConstraints`): every
            proposal, design point and recommendation satisfies them. The designs become: the
            centre (the feasible mixture nearest to the uniform one), support points of uniform
            draws inside the feasible set, projected vertices; the
            ``"paper"`` design loses its infeasible points (with a log message); a listed infeasible
            mixture is refused. Defaults to :obj:`None` (the whole simplex).

    Raises:
        ValueError: for fewer than 2 domains, an unknown design name, a ``"paper"`` design for a K
            the paper did not run, an invalid mixture in a list design, or a non-positive option.
    """

    def __init__(
        self,
        n_domains: int,
        *,
        seed: int = 0,
        n_startup_trials: int | None = None,
        initial_design: str | Sequence[Sequence[float]] = "space-filling",
        n_restarts: int = 10,
        raw_samples: int = 512,
        n_mc_samples: int = 128,
        independent_sampler: BaseSampler | None = None,
        constraints: MixtureConstraints | None = None,
    ) -> None:
        self._n_domains = n_domains
        self._param_names = simplex.param_names(n_domains)  # validates n_domains
        self._seed = int(seed)
        if constraints is not None and constraints.n_domains != n_domains:
            raise ValueError(f"constraints are over {constraints.n_domains} domains, the sampler over {n_domains}")
        self._constraints = None if constraints is None or constraints.is_trivial else constraints
        self._design_list = _design_list(n_domains, initial_design, self._constraints)
        self._maximin = initial_design == "maximin"
        if n_startup_trials is None:
            by_name = isinstance(initial_design, str) and initial_design != "paper"
            n_startup_trials = n_domains + 1 if by_name else len(self._design_list)
        for name, value in (
            ("n_startup_trials", n_startup_trials),
            ("n_restarts", n_restarts),
            ("raw_samples", raw_samples),
            ("n_mc_samples", n_mc_samples),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        self._n_startup_trials = n_startup_trials
        self._n_restarts = n_restarts
        self._raw_samples = raw_samples
        self._n_mc_samples = n_mc_samples
        self._independent_sampler = independent_sampler or RandomSampler(seed=seed)

    @property
    def n_domains(self) -> int:
        """K, the number of domains."""
        return self._n_domains

    @property
    def constraints(self) -> MixtureConstraints | None:
        """The constraints every proposal satisfies (None: the whole simplex)."""
        return self._constraints

    @property
    def n_startup_trials(self) -> int:
        """Completed trials before the GP takes over."""
        return self._n_startup_trials

    # ----------------------------------------------------------------------------------------------
    # BaseSampler
    # ----------------------------------------------------------------------------------------------

    def reseed_rng(self) -> None:
        # Proposals are seeded by (seed, trial number); only the independent sampler has a state.
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(simplex.distributions(self._n_domains))

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not set(self._param_names) <= set(search_space):
            return {}  # not this sampler's mixture space: the independent sampler takes over
        history = self._history(study, exclude_trial_id=trial._trial_id)
        weights = self._propose(history, q=1, number=trial.number)[0]
        # Share the proposal at once: a worker that samples before this trial's parameters are
        # written still sees it as pending.
        study._storage.set_trial_system_attr(trial._trial_id, WEIGHTS_SYSTEM_ATTR, weights)
        return simplex.weights_to_params(weights)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._independent_sampler.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent_sampler.before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._independent_sampler.after_trial(study, trial, state, values)

    # ----------------------------------------------------------------------------------------------
    # Beyond Optuna's interface
    # ----------------------------------------------------------------------------------------------

    def propose_batch(self, study: Study, q: int) -> list[list[float]]:
        """Propose ``q`` mixtures at once, for a worker that scores them in one batch.

        The candidates are chosen greedily (each one pending for the next), with the study's RUNNING
        and WAITING trials pending too. No trial is created: enqueue them to run them, e.g.
        ``study.enqueue_trial(simplex.weights_to_params(w), user_attrs={"weights": w})``; enqueued
        trials are pending for later proposals.

        Args:
            study: the study (any direction or number of objectives).
            q: the number of mixtures (1 or more).

        Returns:
            ``q`` lists of K weights, each on the simplex.
        """
        if q < 1:
            raise ValueError(f"q must be >= 1, got q={q}")
        history = self._history(study, exclude_trial_id=None)
        return self._propose(history, q=q, number=history.next_number)

    def recommend(self, study: Study) -> list[float]:
        """The mixture that maximises the GP's posterior mean over the simplex.

        The posterior mean, not the best noisy observation, is the estimate of the best mixture
        under observation noise; this GP's noise is not fitted below the trials' median reported
        standard error (``value_se``; :mod:`dmo_search.gp` says why). With several objectives the
        unweighted mean of the (direction oriented) objectives is maximised. Before
        ``n_startup_trials`` trials are complete (or if the model cannot be fitted) the best observed
        mixture is returned.

        One objective: a weight below a quarter of the uniform share (``1 / (4K)``) is then set to zero (the
        others renormalised) when the posterior cannot tell the two mixtures apart, the posterior mean of the
        mixture without it being lower by at most one posterior sd of the difference
        (:func:`dmo_search.acquisition.drop_negligible_weights`; the sparsest such mixture wins). The argmax
        alone kept a few percent of weight on a domain that only hurts (K=3 face, noise sd 0.01: the best
        mixture run had median regret 0.009 after 12 trials, the argmax 0.085), a likely cause being the root
        features of :mod:`dmo_search.gp` (a penalty linear in a weight is flat in its root near zero). Measured
        on the trials of ``benchmarks/sampler_efficiency.py`` (noise sd 0.01, seeds 0-9, each study scored both
        ways; seed-trials from K + 2 better / worse by more than 0.005): K = 2 72 / 6, K = 3-4 297 / 94 (K=3
        face after 12 trials 0.085 -> 0.038, K=4 face after 9 0.123 -> 0.025, K=4 interior after 12
        0.132 -> 0.158), K = 6 241 / 161, K = 8 252 / 280 (better at the vertices, worse at interiors and faces,
        K=8 interior after 20 0.438 -> 0.469: optima there have beneficial weights of a few percent, which the
        noise hides); on trials no choice was made on, seeds 10-19 at K = 2-4 276 / 107 (K=4 interior 0 / 75)
        and K = 6 218 / 249 (interiors 1 / 171), the held-out ``mixlaw`` family (noise sd 0.02, K = 2-6, seeds
        0-4) 78 / 49, and without noise K = 3-4 (seeds 0-4) 26 / 23 (K=4 interior after 9 trials 0.018 -> 0.035)
        and three K = 8 interior studies 0 / 15 (after 30 trials, worst 0.004 -> 0.016). Measured on the same
        trials and not kept: dropping below ``0.1`` (K=4 interior after 12 trials 0.132 -> 0.228, K=8 interior
        after 15 on seeds 0-4 0.383 -> 0.757), ``1 / (2K)`` or ``1 / (3K)``; 0.25 to 2 sds; with the bound
        ``0.1``, also requiring the mixture without the weight to have a posterior sd no larger than the
        argmax's (K = 3-4 10 / 3: it seldom has) or than the noise sd (the K = 8 interiors still lost: there the
        GP is confident and wrong).

        Two other recommendations under noise were measured on the landscapes of
        ``benchmarks/sampler_efficiency.py`` (noise sd 0.01; K = 2, 3, 4 on seeds 0-9, K = 8 on 0-4,
        K = 6 interior on 0-3; the same runs scored three ways) and not kept: the observed mixture
        with the highest posterior mean (worse by more than 0.005 normalised regret at 174 of 436
        checkpoints, better at 125; K=8 interior after 40 trials 0.301 -> 0.554) and the maximiser
        of ``mean - sd`` (better at 112, worse at 140, mean change -0.0006: a little better in
        interiors, K=8 interior 0.301 -> 0.255, worse at vertices and faces, where the sd is larger,
        K=4 vertex after 18 trials 0.021 -> 0.045). Nor was averaging the posterior means of six GPs
        with the noise fixed at 1/8 to 4 times the reported standard error, weighted by marginal
        likelihood (K = 2, 3, 4, seeds 0-9, same trials: better at 79 checkpoints, worse at 96; K=4
        interior after 18 trials 0.120 -> 0.158). Nor was keeping the first design point (the uniform
        mixture by default) unless the posterior gives the maximiser a probability of at least 0.9 of
        beating it (seeds 0-4, noise sd 0.01, all K and kinds, 75 runs scored both ways): better where
        nothing is learnable (K=8 interior after 40 trials 0.317 -> 0.245, K=6 after 36 0.374 -> 0.266),
        worse where the GP is right but unsure (K=3 interior after 20 0.067 -> 0.312, K=4 interior after
        30 0.059 -> 0.247, K=8 face after 30 0.283 -> 0.509; K=4 after 18, all kinds, 0.089 -> 0.119);
        2x against TPE in 41 cells instead of 43 of 60 (thresholds 0.8 and 0.95: 42, 40). The probability
        is not calibrated there either (K=6 interior after 12 trials: 0.99 for a mixture of regret 0.66
        against the uniform mixture's 0.27).

        With the noise floor and before the rule that drops negligible weights, more were scored on the same
        trials (noise sd 0.01; K = 3 and 4 on seeds 0-9, K = 8 on 0-4; seed-trials from K + 2 better / worse
        by more than 0.005) and not kept, against the argmax that kept weight on a harmful domain (a larger
        root offset did not help either). A recommending GP on the weights alone (lengthscale prior for K
        inputs) puts it on the face (K=3 face after 12 trials 0.085 -> 0.020, K=4 face after 9 0.123 ->
        0.078) but loses at vertices (K=3 after 20 0.037 -> 0.065) and at K = 8 (interior after 30 0.395 ->
        0.741): K = 3-4 390 / 438, K = 8 76 / 349. Choosing between the two GPs by marginal likelihood
        (without the hyper-parameter priors, which always chose the weights alone): 188 / 175, and 34 / 180
        at the K = 8 interiors and faces. A root offset ``eps`` of 0.01 or 0.03 instead of 0.001: 114 / 114
        and 217 / 206 (K = 3-4). The observed mixture with the highest posterior mean, measured again
        (K = 3-4 and 8 on seeds 0-4): 301 / 617; the posterior gave this argmax a probability of at least
        0.7 of beating that mixture at 21 of those 1350 seed-trials.

        Raises:
            ValueError: if no trial of the study is complete.
        """
        history = self._history(study, exclude_trial_id=None)
        if len(history.X) == 0:
            raise ValueError("no trial of the study is complete: there is nothing to recommend yet")
        best_observed = self._best_observed(history)
        if len(history.X) < self._min_fit(history):
            return _as_weights(best_observed)
        try:
            return self._feasible(self._maximise_posterior_mean(history))
        except model_errors() as e:
            _logger.warning(f"recommending the best observed mixture: the GP failed ({e!r})")
            return _as_weights(best_observed)

    def posterior_mean(self, study: Study, points: Sequence[Sequence[float]] | NDArray[np.float64]) -> list[float]:
        """The GP's posterior mean of the study's objective at ``points`` (mixtures), in its units.

        The model is the one :meth:`recommend` maximises (the same trials, seed and noise prior), so
        ranking mixtures by it agrees with the recommendation (up to the weights the recommendation drops
        where this model cannot tell them from zero).

        Raises:
            ValueError: for a study with several objectives or fewer than 2 completed trials, or a
                point that is not a mixture of K weights.
            RuntimeError: the GP could not be fitted.
        """
        import torch

        if len(study.directions) != 1:
            raise ValueError("posterior_mean needs a single-objective study")
        W = np.asarray([simplex.check_weights(list(w), self._n_domains) for w in points], dtype=np.float64)
        history = self._history(study, exclude_trial_id=None)
        if len(history.X) < 2:
            raise ValueError(f"the GP needs 2 completed trials, the study has {len(history.X)}")
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        scale = float(value_scale(history.Y)[0])
        with torch_context(self._posterior_seed(history)):
            _, _, model = history.fitted(recommending=True)
            with torch.no_grad():
                mean = model.posterior(torch.from_numpy(W.reshape(-1, self._n_domains))).mean[..., 0]
        return [sign * scale * float(m) for m in mean]

    def _best_observed(self, history: _History) -> NDArray[np.float64]:
        """The best observed mixture (a feasible one first, when the study has constraints)."""
        order = np.argsort(-history.Y.mean(axis=1), kind="stable")
        if self._constraints is not None:
            feasible = [i for i in order if self._constraints.contains(history.X[i])]
            order = np.asarray(feasible or order)
        return history.X[int(order[0])]

    def _feasible(self, w: NDArray[np.float64] | Sequence[float]) -> list[float]:
        """:func:`_as_weights`, then onto the constraints if rounding left it just outside."""
        out = _as_weights(w)
        if self._constraints is not None and not self._constraints.contains(out, tol=1e-9):
            out = self._constraints.project(out)
        return out

    # ----------------------------------------------------------------------------------------------
    # Internals
    # ----------------------------------------------------------------------------------------------

    def _history(self, study: Study, exclude_trial_id: int | None) -> _History:
        k = self._n_domains
        signs = np.array([1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions])
        xs: list[list[float]] = []
        ys: list[list[float]] = []
        ses: list[float] = []
        pending: list[list[float]] = []
        seen: list[list[float]] = []
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            if t._trial_id == exclude_trial_id:
                continue
            w = _trial_weights(t, k)
            if w is None:
                continue
            seen.append(w)
            if t.state == TrialState.COMPLETE and t.values is not None:
                xs.append(w)
                ys.append([s * v for s, v in zip(signs, t.values, strict=True)])
                ses += _reported_se(t)
            elif t.state == TrialState.PRUNED and t.last_step is not None and len(signs) == 1:
                xs.append(w)
                ys.append([signs[0] * t.intermediate_values[t.last_step]])
                ses += _reported_se(t)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.append(w)
        from dmo_search.warmstart import stored_prior

        return _History(
            X=np.asarray(xs, dtype=np.float64).reshape(-1, k),
            Y=_clip_infinite(np.asarray(ys, dtype=np.float64).reshape(-1, len(signs))),
            pending=np.asarray(pending, dtype=np.float64).reshape(-1, k),
            seen=np.asarray(seen, dtype=np.float64).reshape(-1, k),
            next_number=len(trials),
            prior=stored_prior(study, k) if len(signs) == 1 else None,
            noisy=bool(ses),
            noise_sd=float(np.median(ses)) if ses and len(signs) == 1 else None,
        )

    def _min_fit(self, history: _History) -> int:
        """Completed trials before the GP takes over: a warm start's prior replaces the initial design."""
        return 2 if history.prior is not None else max(self._n_startup_trials, 2)

    def _propose(self, history: _History, *, q: int, number: int) -> list[list[float]]:
        if len(history.X) >= self._min_fit(history):
            try:
                return self._unrepeated(self._bo_candidates(history, q=q, number=number), history, number)
            except model_errors() as e:
                _logger.warning(f"trial {number}: the GP proposal failed ({e!r}); proposing a space-filling point")
        out: list[list[float]] = []
        seen = history.seen
        for _ in range(q):
            w = self._design_point(seen)
            out.append(self._feasible(w))
            seen = np.concatenate([seen, w[None, :]])
        return out

    def _unrepeated(self, candidates: NDArray[np.float64], history: _History, number: int) -> list[list[float]]:
        """The GP's candidates as mixtures, each one that repeats a mixture of the study (complete,
        pruned, running or an earlier candidate, see :func:`_repeat_distance`) replaced by the next
        space-filling point. A failed mixture may run again (its worker may have died).

        A mixture's score is the same when it is run again (the merge and a greedy evaluation on the
        same subset are deterministic), so a repeat teaches nothing; the acquisition still picks one
        when the GP expects no gain anywhere (a noiseless study that has found its vertex proposed it
        again and again), or when the only gain lies at a point pending in another worker.

        A repeat is a mixture that moves less than 1% of the data from one the study holds
        (:func:`dmo_search.simplex.data_moved`): no SFT run tells such mixtures apart. With a
        threshold of 0.001 in Euclidean distance, a second worker beside a pending vertex got
        ``[0, 0.9968, 0.0032]``, and noiseless vertex optima (``benchmarks/sampler_efficiency.py``, seed 0)
        still spent 10 of 16 GP trials at K = 3, 17 of 25 at K = 4 and 13 of 31 at K = 8 within 1% of
        the data of a mixture already run (interior and face optima at most 3, noisy studies at most 1).
        """
        held = np.concatenate([history.X, history.pending])
        seen = history.seen
        repeat = _repeat_distance(self._n_domains, self._seed, self._constraints)
        out: list[list[float]] = []
        for w in candidates:
            x = np.asarray(self._feasible(w))
            if len(held) and float(np.min(simplex.data_moved(held, x))) < repeat:
                x = np.asarray(self._feasible(self._design_point(seen)))
                _logger.info(
                    f"trial {number}: the GP's best mixture moves less than {repeat:.2%} of the data from one "
                    "already run or pending (it expects no gain elsewhere); proposing a space-filling mixture instead"
                )
            out.append(x.tolist())
            held = np.concatenate([held, x[None, :]])
            seen = np.concatenate([seen, x[None, :]])
        return out

    def _design_point(self, seen: NDArray[np.float64]) -> NDArray[np.float64]:
        for w in self._design_list:
            if len(seen) == 0 or np.min(np.linalg.norm(seen - w, axis=1)) > _SAME_POINT:
                return w
        pool, pool_mean_dist = _design_pool(self._n_domains, self._seed, self._constraints)
        to_seen = np.linalg.norm(pool[:, None, :] - seen[None, :, :], axis=-1)  # N x n
        if self._maximin:
            return pool[int(np.argmax(to_seen.min(axis=1)))]
        # Energy distance between the n + 1 points (seen + candidate) and the pool, up to a constant.
        n = len(seen)
        seen_mean_dist = np.linalg.norm(seen[:, None, :] - pool[None, :, :], axis=-1).mean(axis=1)
        seen_pairs = np.linalg.norm(seen[:, None, :] - seen[None, :, :], axis=-1).sum()
        energy = (
            2.0 / (n + 1) * (seen_mean_dist.sum() + pool_mean_dist)
            - (seen_pairs + 2.0 * to_seen.sum(axis=1)) / (n + 1) ** 2
        )
        repeat = _repeat_distance(self._n_domains, self._seed, self._constraints)
        repeats = simplex.data_moved(pool[:, None, :], seen[None, :, :]).min(axis=1) < repeat
        if not repeats.all():  # else the study holds the whole pool: the best spread point, a repeat or not
            energy[repeats] = np.inf  # a pool point the study already holds
        return pool[int(np.argmin(energy))]

    def _bo_candidates(self, history: _History, *, q: int, number: int) -> NDArray[np.float64]:
        seed = _derived_seed(self._seed, number)
        with torch_context(seed):
            X, Y, model = history.fitted()
            acqf = build_acquisition(
                model, X, Y, history.pending, seed, n_mc_samples=self._n_mc_samples, noisy=history.noisy
            )
            anchors = best_mixtures(model, X)
            candidates = maximise_on_simplex(
                acqf,
                self._n_domains,
                q=q,
                anchors=anchors,
                seed=seed,
                n_restarts=self._n_restarts,
                raw_samples=self._raw_samples,
                constraints=self._constraints,
            )
        return candidates

    def _posterior_seed(self, history: _History) -> int:
        """Seeds the GP that :meth:`recommend` maximises and :meth:`posterior_mean` reads: one model."""
        return _derived_seed(self._seed, history.next_number, 1)

    def _maximise_posterior_mean(self, history: _History) -> NDArray[np.float64]:
        import torch

        seed = self._posterior_seed(history)
        with torch_context(seed):
            from botorch.acquisition.analytic import PosteriorMean
            from botorch.acquisition.objective import ScalarizedPosteriorTransform

            X, Y, model = history.fitted(recommending=True)
            m = Y.shape[-1]
            transform = (
                ScalarizedPosteriorTransform(weights=torch.full((m,), 1.0 / m, dtype=torch.float64)) if m > 1 else None
            )
            mean = PosteriorMean(model, posterior_transform=transform)
            with torch.no_grad():
                observed = mean(X.unsqueeze(-2))
            if self._constraints is not None:  # the best observed mixture must be a feasible one
                inside = torch.tensor([self._constraints.contains(x) for x in history.X])
                if bool(inside.any()):
                    observed = torch.where(inside, observed, torch.full_like(observed, -torch.inf))
            best = int(torch.argmax(observed))
            candidate = maximise_on_simplex(
                mean,
                self._n_domains,
                q=1,
                anchors=X[torch.argsort(observed, descending=True)[:5]],
                seed=seed,
                n_restarts=self._n_restarts,
                raw_samples=self._raw_samples,
                constraints=self._constraints,
            )
            with torch.no_grad():
                value = mean(torch.from_numpy(candidate).unsqueeze(-2))
            # An unobserved mixture must beat the best observed one by more than rounding: where the
            # posterior mean is flat (a constant objective), the observed mixture is the safer answer.
            scale = float(Y.std()) if len(Y) > 1 and float(Y.std()) > 0 else 1.0
            w = candidate[0] if float(value[0]) > float(observed[best]) + 1e-6 * scale else history.X[best]
            if m > 1:
                return w
            w = np.asarray(_as_weights(w))
            below = _NEGLIGIBLE_SHARE / self._n_domains
            return drop_negligible_weights(model, w, below=below, constraints=self._constraints)


# --------------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------------


def _design_list(
    n_domains: int, initial_design: str | Sequence[Sequence[float]], constraints: MixtureConstraints | None = None
) -> list[NDArray[np.float64]]:
    c = constraints
    if isinstance(initial_design, str):
        if initial_design in _POOL_DESIGNS:
            points = [c.centre() if c else simplex.centre(n_domains)]
        elif initial_design in simplex.END_POINT_DESIGNS:
            ends = simplex.END_POINT_DESIGNS[initial_design](n_domains)
            points = [c.centre(), *(c.project(v) for v in ends)] if c else [simplex.centre(n_domains), *ends]
        elif initial_design == "paper":
            points = simplex.paper_design(n_domains)
            if c is not None:
                points = feasible_designs(points, c, "the paper's design")
        else:
            raise ValueError(
                f"unknown initial_design {initial_design!r}; choose one of {', '.join(INITIAL_DESIGNS)} "
                "or pass a list of mixtures"
            )
    else:
        points = [simplex.check_weights(w, n_domains) for w in initial_design]
        if not points:
            raise ValueError("initial_design is an empty list; pass mixtures or a design name")
        if c is not None:
            points = [c.check(w, f"initial_design mixture {i}") for i, w in enumerate(points)]
    unique: list[NDArray[np.float64]] = []
    for p in points:
        a = np.asarray(p, dtype=np.float64)
        if not any(np.linalg.norm(a - u) <= _SAME_POINT for u in unique):
            unique.append(a)
    return unique


def feasible_designs(
    points: Sequence[Sequence[float]], constraints: MixtureConstraints, what: str
) -> list[list[float]]:
    """The points of a generated design that satisfy ``constraints``; logs how many were dropped.

    Raises:
        ValueError: when no point is feasible.
    """
    kept = [list(p) for p in points if constraints.contains(p)]
    if len(kept) < len(points):
        _logger.warning(
            f"{what}: dropped {len(points) - len(kept)} of {len(points)} mixtures outside the constraints "
            f"({constraints.describe()})"
        )
    if not kept:
        raise ValueError(f"{what} has no mixture inside the constraints ({constraints.describe()}); use another design")
    return kept


@functools.lru_cache(maxsize=16)
def _design_pool(
    n_domains: int, seed: int, constraints: MixtureConstraints | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Uniform draws on the simplex (inside the constraints) that the initial designs pick from, and
    each draw's mean distance to the others (both read-only)."""
    n = min(_POOL_PER_DOMAIN * n_domains, _POOL_MAX)
    if constraints is None:
        pool = np.random.default_rng(_derived_seed(seed, -1)).dirichlet(np.ones(n_domains), size=n)
    else:
        pool = constraints.sample(n, seed=_derived_seed(seed, -1))
    mean_dist = np.linalg.norm(pool[:, None, :] - pool[None, :, :], axis=-1).mean(axis=1)
    pool.setflags(write=False)
    mean_dist.setflags(write=False)
    return pool, mean_dist


@functools.lru_cache(maxsize=16)
def _repeat_distance(n_domains: int, seed: int, constraints: MixtureConstraints | None = None) -> float:
    """The share of the data (:func:`dmo_search.simplex.data_moved`) below which two mixtures are the
    same experiment: ``_REPEAT`` (1%), or a twentieth of the mean distance of the feasible mixtures to
    their mean where constraints leave less room than that (inside ``a >= 0.98`` every mixture
    is within 2% of the data of every other: with the 1% alone the design repeated one mixture).
    On the whole simplex the twentieth is about 0.0125 (K = 2) to 0.017 (K = 8), so the 1% applies."""
    pool, _ = _design_pool(n_domains, seed, constraints)
    spread = float(simplex.data_moved(pool, pool.mean(axis=0)).mean())
    return min(_REPEAT, _REPEAT_OF_SPREAD * spread)


def _trial_weights(trial: FrozenTrial, n_domains: int) -> list[float] | None:
    """A trial's mixture, or None if it has none.

    Decoded from its parameters (or an enqueued trial's fixed parameters), else read from its
    ``weights`` user attribute, else, for a trial still running, the proposal this sampler recorded
    before its parameters were written.
    """
    names = simplex.param_names(n_domains)
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    candidates: list[Any] = []
    if all(n in params for n in names):
        candidates.append(params)
    candidates.append(trial.user_attrs.get("weights"))
    if not trial.state.is_finished():
        candidates.append(trial.system_attrs.get(WEIGHTS_SYSTEM_ATTR))
    for c in candidates:
        try:
            if isinstance(c, dict):
                return simplex.params_to_weights(c, n_domains)
            if c is not None:
                return simplex.check_weights(c, n_domains)
        except (TypeError, ValueError):
            continue
    return None


def _clip_infinite(Y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Replace infinite values by the worst / best finite value of their column."""
    Y = Y.copy()
    for c in range(Y.shape[1]):
        finite = np.isfinite(Y[:, c])
        if finite.all():
            continue
        lo, hi = (Y[finite, c].min(), Y[finite, c].max()) if finite.any() else (0.0, 0.0)
        Y[:, c] = np.clip(np.nan_to_num(Y[:, c], nan=lo, posinf=hi, neginf=lo), lo, hi)
    return Y


def _as_weights(w: NDArray[np.float64] | Sequence[float]) -> list[float]:
    """Clip to ``[0, 1]``, snap tiny weights to exact zeros, renormalise: a valid mixture."""
    x = np.clip(np.asarray(w, dtype=np.float64), 0.0, 1.0)
    x[x < _ZERO_SNAP] = 0.0
    total = x.sum()
    if not math.isfinite(total) or total <= 0.0:
        raise ValueError(f"cannot turn {w!r} into a mixture")
    return simplex.check_weights((x / total).tolist())


def _derived_seed(*entropy: int) -> int:
    """A 31-bit seed from integers (negative ones allowed), stable across processes."""
    words = [abs(e) * 2 + (e < 0) for e in entropy]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)


def _reported_se(trial: FrozenTrial) -> list[float]:
    """``[se]`` when ``trial`` records a finite standard error above zero for its value (``value_se``), else ``[]``."""
    se = trial.user_attrs.get(VALUE_SE_ATTR)
    return [float(se)] if isinstance(se, int | float) and math.isfinite(se) and se > 0 else []
