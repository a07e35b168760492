"""How many trials each sampler needs to find the best mixture, on synthetic data-mixing landscapes.

Landscapes
----------
Each seed draws a fresh landscape from a family shaped like data-mixing laws: K training domains,
one evaluation task per domain, and for task ``j``

    x_j(w) = sum_i T_ij w_i                      (data task j effectively receives; T_jj = 1, T_ij >= 0
                                                  is cross-domain transfer)
    s_j(w) = lo_j + (hi_j - lo_j) g_j(x_j) - sum_i G_ij w_i - sum_{i<l} H_il w_i w_l
    f(w)   = mean_j s_j(w)                       (an accuracy-like score in [0, 1])

with ``g_j`` a saturating power law ``1 - (1 + x / x0)^(-alpha)`` (as in loss = E + A (x + x0)^-alpha;
``interior`` and ``face``) or an exponential ``1 - exp(-x / s)`` (the "data mixing laws" form;
``vertex``), ``G`` linear interference and ``H`` pairwise conflicts (or synergies, when negative)
between domains. Three kinds, each checked on the drawn landscape (redrawn otherwise):

* ``interior``: every domain has a task, small interference; the optimum has every weight > 0.005;
* ``face``: one domain has no task and only interferes (a domain that only hurts); the optimum
  has that weight exactly 0 and the others > 0.005;
* ``vertex``: one general domain transfers strongly to every task and the specialist domains
  interfere with the others' tasks; the optimum is that single domain.

Observations carry Gaussian noise of sd 0 or 0.01 (a score measured on a validation subset).

A held-out family, ``--kinds mixlaw``, was written after the sampler was chosen and never used to
choose it: per-domain losses ``L_i(w) = c_i + k_i exp(sum_j t_ij w_j)`` (the exponential law of Ye et al.,
"Data Mixing Laws", 2024) with own-data effects ``t_ii`` in ``[-4, -1]`` and transfer or interference
``t_ij ~ N(0, 0.6)``, scored as ``-mean_i L_i``; the optimum lies wherever the draw puts it (seeds
0-4: mostly on a face with 2-5 domains in use, a few interior, one vertex). ``f* - mean f`` is 0.07-0.53,
mostly 0.1-0.25, so ``--noise 0.02`` is a noise of about 10-20% of that spread.

What is measured
----------------
The normalised regret ``(f* - f(recommended)) / (f* - mean f)`` (``mean f`` over the uniform
distribution on the simplex) after n trials: the recommendation is the sampler's own
(``gp-simplex``: the argmax of the posterior mean) or the best observed mixture (the others, the
paper's fixed designs ``grid``). Printed: the median and worst over seeds, the trials each sampler needs
to reach a regret level relative to ``gp-simplex``, the proposal latency at 100 completed trials, and
for noisy runs how many gp-simplex studies the noise check of ``dmo-search status`` (:mod:`dmo_search.noise`)
calls noise-limited after their last trial, with their final regret against the others', and gp-simplex's
recommendation beside the best mixture its study has run (both scored without noise): whether the model or
the trials fall short.

The 2x goal ("2x fewer trials to reach the same median regret") is counted in cells: a checkpoint n of a
setting sets the level, gp-simplex's median regret after n trials, and the cell's ratio is the trials a
baseline's median curve needs to reach that level over the trials gp-simplex's needed (its first
trial at or below it). Every sampler's recommendation is scored after every trial; gp-simplex's
posterior-mean recommendation used to be scored only from trial K + 1, every second trial for K = 4 and
every third beyond, which rounded its count up. Another earlier version divided by n itself, which
charged gp-simplex for the trials it ran after reaching the level (K=2 interior, noiseless, seeds
0-9: median 0.000 from trial 5, charged 12 trials at checkpoint 12); the goal lines still print that
count. They also count the cells of the settings where the noise check calls at most
half of the studies noise-limited: where it calls most of them so, the noise sd is as large as the
landscape's spread and "trials to reach a regret" compares lucky draws more than samplers. They also
count the cells with "reach" read as "hold" on both sides: under noise a best-observed median regret can
touch a level after a lucky draw and rise again (a luckier noisy score replaces the best), so a
baseline's trials are the first count from which its median stays at or below the level within its
budget, and gp-simplex's level after n trials is its worst median from n on (its posterior-mean
recommendation moves too), held from its own first such count. Last, the count is redone with each
setting's seeds drawn with replacement (1000 draws, the same seeds for every sampler: a seed is a
landscape): the spread says how many cells a rerun on other landscapes would count, and a cell's share
of draws says whether its miss is firm (few draws) or a toss-up that 5 or 10 seeds cannot settle. A draw
repeats some seeds and drops others, so its medians are noisier than the observed ones, and a noisier
baseline curve touches a level sooner: the draws' count tends to lie below the observed one (by 0 to 5
cells on the noisy runs of seeds 0-19), so read the shares as cautious. TPE's first 10 trials are
Optuna's random sampler with the same seed, so up to 10 trials TPE's curve is random's.

Run ``python benchmarks/sampler_efficiency.py --quick`` for a few minutes' check, without flags for
the full table (hours on 2 cores). ``--json PATH`` also writes every number. Seeds 0-4 are the
default; ``--first-seed 5`` runs landscapes they never drew, to check that a change chosen on the
default seeds holds on others.

``--constrained`` runs the constrained cases instead (:mod:`constrained_cases`: a data cap, a minimum
weight or a group limit that puts the optimum on a constraint face): gp-simplex inside the feasible
set against uniform feasible draws, TPE with projection and the paper's design without its
infeasible points.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

import numpy as np
import optuna
from numpy.typing import NDArray
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmo_search import simplex
from dmo_search.noise import NOISE_LIMITED_SHARE, noise_check
from dmo_search.sampler import VALUE_SE_ATTR
from dmo_search.sampling import make_sampler

KINDS = ("interior", "face", "vertex")
# A second family, never used to choose the sampler: run it with ``--kinds mixlaw`` (see mixing_law_landscape).
HELD_OUT_KINDS = ("mixlaw",)
SAMPLERS = ("gp-simplex", "optuna-gp", "tpe", "random", "grid")

# Checkpoints (trials) printed per K; gp-simplex and optuna-gp run up to the last one.
CHECKPOINTS: dict[int, tuple[int, ...]] = {
    2: (4, 6, 8, 12),
    3: (6, 9, 12, 20),
    4: (9, 12, 18, 30),
    6: (12, 20, 30, 36),
    8: (15, 20, 30, 40),
}
# TPE and random run this many times longer, to measure how many trials they need.
BASELINE_FACTOR = 4
REGRET_LEVELS = (0.10, 0.05, 0.01)
# A median regret below this counts as this when baselines must match it (an exact vertex gives 0).
FLOOR = 0.001


# --------------------------------------------------------------------------------------------------
# Landscapes
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LandscapeBase:
    """What every landscape family shares: ``f(W)`` scores the rows of an ``n x K`` array; the
    maximum ``f_star`` at ``w_star`` and the mean ``f_mean`` over the simplex give the regret."""

    kind: str
    n_domains: int
    f_star: float = dataclasses.field(default=0.0, kw_only=True)
    w_star: tuple[float, ...] = dataclasses.field(default=(), kw_only=True)
    f_mean: float = dataclasses.field(default=0.0, kw_only=True)

    def f(self, W: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._f_and_grad(np.atleast_2d(W))[0]

    def _f_and_grad(self, W: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Values (``n``) and gradients (``n x K``) at the rows of ``W``."""
        raise NotImplementedError

    def regret(self, w: Sequence[float]) -> float:
        value = float(self.f(np.asarray(w, dtype=np.float64))[0])
        return max(self.f_star - value, 0.0) / (self.f_star - self.f_mean)

    def solved(self, f_star: float, w_star: NDArray[np.float64]) -> Self:
        """This landscape with its maximum and its mean over the uniform distribution on the simplex."""
        f_mean = float(self.f(np.random.default_rng(0).dirichlet(np.ones(self.n_domains), 50000)).mean())
        return dataclasses.replace(self, f_star=f_star, w_star=tuple(float(x) for x in w_star), f_mean=f_mean)


@dataclasses.dataclass(frozen=True)
class Landscape(LandscapeBase):
    """The repo's family (module docstring): power-law or exponential task scores with transfer,
    interference and pairwise conflicts."""

    lo: NDArray[np.float64]  # M
    gain: NDArray[np.float64]  # M
    power: NDArray[np.bool_]  # M: power law (else exponential)
    scale: NDArray[np.float64]  # M: x0 (power) or s (exponential)
    alpha: NDArray[np.float64]  # M
    transfer: NDArray[np.float64]  # K x M
    interference: NDArray[np.float64]  # K x M
    conflict: NDArray[np.float64]  # K x K, upper triangular

    def _f_and_grad(self, W: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        x = np.clip(W @ self.transfer, 0.0, None)
        base = 1.0 + x / self.scale
        g = np.where(self.power, 1.0 - base ** (-self.alpha), 1.0 - np.exp(-x / self.scale))
        dg = np.where(
            self.power,
            self.alpha / self.scale * base ** (-self.alpha - 1.0),
            np.exp(-x / self.scale) / self.scale,
        )
        m = len(self.lo)
        sym = self.conflict + self.conflict.T
        value = (self.lo + self.gain * g - W @ self.interference).mean(axis=1)
        value -= np.einsum("ni,il,nl->n", W, self.conflict, W)
        grad = (self.gain * dg) @ self.transfer.T / m - self.interference.sum(axis=1) / m - W @ sym
        return value, grad


def _maximise(land: LandscapeBase, rng: np.random.Generator) -> tuple[float, NDArray[np.float64]]:
    """The landscape's maximum: SLSQP (exact gradients) from the best of many draws and the vertices."""
    k = land.n_domains
    cands = np.concatenate([rng.dirichlet(np.ones(k), 20000), np.eye(k), [np.full(k, 1.0 / k)]])
    values = land.f(cands)
    best_w, best_f = cands[int(np.argmax(values))], float(values.max())
    cons = ({"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones_like(w)},)

    def neg(w: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        value, grad = land._f_and_grad(w[None, :])
        return -float(value[0]), -grad[0]

    for w0 in [*cands[np.argsort(values)[::-1][:8]], *np.eye(k)]:
        res = minimize(
            neg,
            w0,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=cons,
            options={"maxiter": 500, "ftol": 1e-13},
        )
        w = simplex.project_to_simplex(res.x)[0]
        value = float(land.f(w)[0])
        if value > best_f:
            best_w, best_f = w, value
    return best_f, best_w


def make_landscape(kind: str, n_domains: int, seed: int) -> Landscape:
    """Draw a landscape of ``kind`` over ``n_domains`` domains (redrawn until its optimum is of that
    kind)."""
    rng = np.random.default_rng([seed, n_domains, KINDS.index(kind)])
    k = n_domains
    for _ in range(200):
        lo = rng.uniform(0.2, 0.5, k)
        gain = rng.uniform(0.2, 0.5, k)
        power = np.ones(k, dtype=bool)
        alpha = rng.uniform(0.3, 0.8, k)
        scale = rng.uniform(0.02, 0.3, k)
        transfer = np.eye(k) + (1 - np.eye(k)) * rng.uniform(0.0, 0.2, (k, k))
        interference = (1 - np.eye(k)) * rng.uniform(0.0, 0.03, (k, k))
        conflict = np.triu(rng.uniform(-0.02, 0.04, (k, k)), 1)
        special = int(rng.integers(k))
        keep = np.ones(k, dtype=bool)
        if kind == "face":  # a domain with no task of its own that only interferes
            keep[special] = False
            transfer[special] = 0.0
            interference[special] = rng.uniform(0.02, 0.08, k)
            conflict[special] = np.abs(conflict[special])
            conflict[:, special] = np.abs(conflict[:, special])
        elif kind == "vertex":  # a general domain that transfers to all; specialists interfere
            power[:] = False
            scale = rng.uniform(0.05, 0.15, k)
            transfer = np.eye(k)
            transfer[special] = rng.uniform(0.7, 1.0, k)
            interference = (1 - np.eye(k)) * rng.uniform(0.05, 0.15, (k, k))
            interference[special] = 0.0
        land = Landscape(
            kind,
            k,
            lo[keep],
            gain[keep],
            power[keep],
            scale[keep],
            alpha[keep],
            transfer[:, keep],
            interference[:, keep],
            conflict,
        )
        f_star, w_star = _maximise(land, rng)
        ok = {
            "interior": bool(np.all(w_star > 0.005)),
            "face": bool(w_star[special] < 1e-9 and np.all(np.delete(w_star, special) > 0.005)),
            "vertex": bool(w_star[special] > 1.0 - 1e-9),
        }[kind]
        if ok:
            return land.solved(f_star, w_star)
    raise RuntimeError(f"could not draw a {kind} landscape for K={k}, seed={seed}")


@dataclasses.dataclass(frozen=True)
class MixingLawLandscape(LandscapeBase):
    """The held-out family: the negative mean of per-domain losses ``c_i + k_i exp(sum_j t_ij w_j)``."""

    c: NDArray[np.float64]  # K
    k: NDArray[np.float64]  # K
    t: NDArray[np.float64]  # K x K: row i, the effect of each domain's weight on task i's log-loss

    def _f_and_grad(self, W: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        e = self.k * np.exp(W @ self.t.T)  # n x K
        return -(self.c + e).mean(axis=1), -(e @ self.t) / len(self.c)


def mixing_law_landscape(n_domains: int, seed: int) -> MixingLawLandscape:
    """Draw a landscape of the held-out family ``mixlaw``.

    Each domain's validation loss follows the exponential mixing law of Ye et al. (2024, "Data Mixing
    Laws"), ``L_i(w) = c_i + k_i exp(sum_j t_ij w_j)``: its own data lowers it (``t_ii`` in
    ``[-4, -1]``), other domains' data transfer or interfere (``t_ij ~ N(0, 0.6)``). The score is
    ``-mean_i L_i``. The optimum lies wherever the draw puts it (interior, face or vertex). This
    family was written after the sampler was chosen and was not used to choose it: it checks that
    the sampler was not tuned to the landscapes above.
    """
    rng = np.random.default_rng([seed, n_domains, 424242])
    k = n_domains
    t = rng.normal(0.0, 0.6, (k, k))
    t[np.diag_indices(k)] = -rng.uniform(1.0, 4.0, k)
    land = MixingLawLandscape("mixlaw", k, rng.uniform(1.5, 3.0, k), rng.uniform(0.5, 1.5, k), t)
    return land.solved(*_maximise(land, rng))


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    sampler: str
    n_domains: int
    kind: str
    noise: float
    seed: int
    regret: dict[int, float]  # trials -> normalised regret of the recommendation
    seconds: float
    noise_share: float | None = None  # the noise check's share after the last trial (noisy runs)
    # trials -> normalised regret of the best mixture run so far, scored without noise (None in older runs)
    tried: dict[int, float] | None = None


def run_trials(
    sampler_name: str,
    n_domains: int,
    evaluate: Callable[[list[float]], tuple[float, float | None]],
    *,
    seed: int,
    n_trials: int,
    gp_design: str = "space-filling",
    sampler: optuna.samplers.BaseSampler | None = None,
) -> tuple[dict[int, list[float]], list[list[float]], list[tuple[float, float | None]]]:
    """One benchmark study of ``n_trials`` trials (for ``grid``, the paper's design, enqueued) with the
    sampler ``sampler_name`` makes (or ``sampler``, a variant of it), each trial's mixture scored by
    ``evaluate`` (its value, and its standard error or None; one that is given is recorded as the worker
    does, and gp-simplex reads it).

    Returns:
        per trial, the recommended mixture (gp-simplex's own, else the best observed); the trials'
        mixtures; their ``(value, se)``.
    """
    if sampler is None:
        sampler = make_sampler(sampler_name, n_domains, seed=seed, initial_design=gp_design)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if sampler_name == "grid":
        design = simplex.paper_design(n_domains)
        for w in design:
            study.enqueue_trial(simplex.weights_to_params(w))
        n_trials = len(design)
    names = simplex.param_names(n_domains)
    recommended: dict[int, list[float]] = {}
    mixtures: list[list[float]] = []
    observed: list[tuple[float, float | None]] = []
    best_y, best_w = -math.inf, [1.0 / n_domains] * n_domains
    for n in range(1, n_trials + 1):
        trial = study.ask()
        w = simplex.params_to_weights({p: trial.suggest_float(p, 0.0, 1.0) for p in names}, n_domains)
        y, se = evaluate(w)
        if se is not None:
            trial.set_user_attr(VALUE_SE_ATTR, se)
        study.tell(trial, y)
        observed.append((y, se))
        mixtures.append(w)
        if y > best_y:
            best_y, best_w = y, w
        recommended[n] = sampler.recommend(study) if sampler_name == "gp-simplex" else best_w  # type: ignore[attr-defined]
    return recommended, mixtures, observed


def run_one(
    sampler_name: str,
    land: LandscapeBase,
    *,
    noise: float,
    seed: int,
    n_trials: int,
    gp_design: str = "space-filling",
    sampler: optuna.samplers.BaseSampler | None = None,
) -> Run:
    """One study of ``n_trials`` trials; the regret of the sampler's recommendation, and of the best
    mixture run so far (scored without noise), is recorded after every trial. ``sampler``, if given, is
    used instead of the one ``sampler_name`` makes (a variant of it, e.g. another acquisition search)."""
    noise_rng = np.random.default_rng([seed, 7919])

    def evaluate(w: list[float]) -> tuple[float, float | None]:
        y = float(land.f(np.asarray(w))[0]) + noise * float(noise_rng.normal())
        return y, (noise if noise > 0 else None)  # the score's standard error, as the worker records it

    t0 = time.perf_counter()
    recommended, mixtures, observed = run_trials(
        sampler_name, land.n_domains, evaluate, seed=seed, n_trials=n_trials, gp_design=gp_design, sampler=sampler
    )
    seconds = time.perf_counter() - t0
    regret = {n: land.regret(w) for n, w in recommended.items()}
    check = noise_check([(y, noise) for y, _ in observed]) if noise > 0 else None
    share = None if check is None else check.share
    tried = best_run_regret(mixtures, land.regret)
    return Run(sampler_name, land.n_domains, land.kind, noise, seed, regret, seconds, share, tried)


def best_run_regret(
    mixtures: Sequence[Sequence[float]], regret: Callable[[Sequence[float]], float]
) -> dict[int, float]:
    """Trials -> the regret of the best mixture run so far."""
    out, best = {}, math.inf
    for n, w in enumerate(mixtures, start=1):
        best = min(best, regret(w))
        out[n] = best
    return out


def one_study_parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments of a script that diagnoses one study (``--k --kind --seed --noise --threads``;
    default: the K = 8 interior landscape of seed 12, the noiseless study over the worst-seed goal)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=8, choices=sorted(CHECKPOINTS), help="domains (default 8)")
    parser.add_argument("--kind", default="interior", choices=KINDS, help="landscape kind (default interior)")
    parser.add_argument("--seed", type=int, default=12, help="landscape and sampler seed (default 12)")
    parser.add_argument("--noise", type=float, default=0.0, help="observation noise sd (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    return parser


def one_study_setting(args: argparse.Namespace) -> tuple[LandscapeBase, int, str]:
    """Quiet Optuna, set torch's threads; the study's landscape, its trials and a label for its progress."""
    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    land = make_landscape(args.kind, args.k, args.seed)
    return land, CHECKPOINTS[args.k][-1], f"K={args.k} {args.kind} seed={args.seed} noise={args.noise}"


def checkpoint_rows(runs: Sequence[tuple[str, Run]], checkpoints: Sequence[int], *, label: str = "study") -> list[str]:
    """Lines of a table: each named run's regret after each checkpoint, the best mixture run's in
    brackets, and its seconds (the diagnostic scripts print two variants of one study so)."""
    lines = [f"  {label:<22}" + "".join(f"{f'n={n}':>16}" for n in checkpoints) + f"{'seconds':>10}"]
    for name, run in runs:
        tried = run.tried or {}
        cells = "".join(f"{f'{run.regret[n]:.3f} ({tried.get(n, math.nan):.3f})':>16}" for n in checkpoints)
        lines.append(f"  {name:<22}{cells}{run.seconds:>10.0f}")
    return lines


def proposal_latency(sampler_name: str, n_domains: int, n_completed: int = 100, repeats: int = 3) -> float:
    """Median seconds of one proposal in a study with ``n_completed`` completed trials, scored with
    noise of sd 0.01 that no trial declares: gp-simplex takes the objective as noiseless (qUCB). The
    same study measured by one-off runs (December 2026, K = 2-8): 0.20-1.44 s as here, 0.98-2.26 s with
    ``value_se`` recorded as the worker does (qLogNEI, a noisy GP), 0.28-3.68 s with exact scores."""
    land = make_landscape("interior", n_domains, 0)
    k = n_domains
    rng = np.random.default_rng(1)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler_name, k, seed=0))
    for w in rng.dirichlet(np.ones(k), n_completed):
        y = float(land.f(w)[0]) + 0.01 * float(rng.normal())
        study.add_trial(
            optuna.trial.create_trial(
                params=simplex.weights_to_params(w), distributions=simplex.distributions(k), value=y
            )
        )
    times = []
    for _ in range(repeats + 1):  # the first call also imports torch and BoTorch
        t0 = time.perf_counter()
        trial = study.ask()
        for p in simplex.param_names(k):
            trial.suggest_float(p, 0.0, 1.0)
        times.append(time.perf_counter() - t0)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return statistics.median(times[1:])


# --------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------


def _median_curve(runs: list[Run]) -> dict[int, float]:
    if not runs:
        return {}
    ns = sorted(set.intersection(*(set(r.regret) for r in runs)))
    return {n: statistics.median(r.regret[n] for r in runs) for n in ns}


def _first_reach(curve: dict[int, float], level: float) -> int | None:
    return next((n for n in sorted(curve) if curve[n] <= level), None)


def _settled(curve: dict[int, float], level: float) -> int | None:
    """The first n from which the curve stays at or below ``level`` (a noisy best-observed can rise again)."""
    ns = sorted(curve)
    for i, n in enumerate(ns):
        if all(curve[m] <= level for m in ns[i:]):
            return n
    return None


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.0f}"


BASELINES = ("tpe", "random", "optuna-gp")


def _trials_ratio(curve: dict[int, float], level: float, n_gp: int, *, hold: bool = False) -> tuple[str, float]:
    """Trials a baseline's median curve needs to reach (or, ``hold``, to stay at) ``level``, over ``n_gp``."""
    n_b = _settled(curve, level) if hold else _first_reach(curve, level)
    if n_b is None:  # never within its budget: the ratio is at least budget / n_gp
        return f">{max(curve) / n_gp:.1f}", max(curve) / n_gp
    return f"{n_b / n_gp:.1f}", n_b / n_gp


@dataclasses.dataclass(frozen=True)
class _Cell:
    """One checkpoint of one setting. Its level is gp-simplex's median regret after ``n`` trials, and
    ``n_gp`` the trials gp-simplex's median curve needed to reach that level (at most ``n``: a median
    at the level since trial 5 is not charged 12 trials at checkpoint 12). ``reach``: each baseline's
    trials to reach the level, over ``n_gp``; ``held``: the same read as "hold" on both sides;
    ``at_n``: each baseline's trials over ``n`` itself. Absent baselines have none."""

    n: int
    n_gp: int
    reach: dict[str, tuple[str, float]]
    held: dict[str, float]
    at_n: dict[str, float]


def _setting_cells(runs: list[Run]) -> list[_Cell]:
    """The 2x cells of one setting (one K, kind and noise), from its runs' median curves."""
    curves = {name: _median_curve([r for r in runs if r.sampler == name]) for name in SAMPLERS}
    gp = curves["gp-simplex"]
    cells = []
    for n in CHECKPOINTS[runs[0].n_domains]:
        if n not in gp:
            continue
        level = max(gp[n], FLOOR)
        level_held = max(max(v for m, v in gp.items() if m >= n), FLOOR)
        # Both are at most n: gp's median is at the level after n trials, and at or below its worst from n on.
        n_gp = _first_reach(gp, level) or n
        n_gp_held = _settled(gp, level_held) or n
        present = [b for b in BASELINES if curves[b]]
        cells.append(
            _Cell(
                n,
                n_gp,
                {b: _trials_ratio(curves[b], level, n_gp) for b in present},
                {b: _trials_ratio(curves[b], level_held, n_gp_held, hold=True)[1] for b in present},
                {b: _trials_ratio(curves[b], level, n)[1] for b in present},
            )
        )
    return cells


BOOTSTRAP_DRAWS = 1000


@dataclasses.dataclass(frozen=True)
class _Resampled:
    """The literal 2x count recounted with each setting's seeds drawn with replacement: per baseline,
    the count in every draw, and per cell (K, kind, noise, n, baseline) the share of draws >= 2x."""

    counts: dict[str, list[int]]
    share: dict[tuple[int, str, float, int, str], float]

    def spread(self, baseline: str) -> tuple[float, float, float]:
        """The median and the 5% and 95% points of ``baseline``'s count over the draws."""
        lo, median, hi = np.percentile(self.counts[baseline], [5, 50, 95])
        return float(median), float(lo), float(hi)

    def shares(self, baseline: str) -> dict[tuple[int, str, float, int], float]:
        """``baseline``'s cells (K, kind, noise, n), sorted, with their share of draws >= 2x."""
        return {key[:-1]: p for key, p in sorted(self.share.items()) if key[-1] == baseline}


def _resample_2x(groups: dict[tuple[int, str, float], list[Run]], draws: int = BOOTSTRAP_DRAWS) -> _Resampled:
    """Bootstrap the 2x count over seeds: a draw resamples every setting's seeds (those with a gp-simplex
    run), the same seeds for every sampler (a seed is a landscape), and recounts the cells as the goal
    line does. How many cells a rerun on other landscapes would count, and which misses are firm."""
    rng = np.random.default_rng(0)
    counts = {b: [0] * draws for b in BASELINES}
    hits: dict[tuple[int, str, float, int, str], int] = {}
    for (k, kind, noise), rs in sorted(groups.items()):
        by_seed: dict[int, list[Run]] = {}
        for r in rs:
            by_seed.setdefault(r.seed, []).append(r)
        seeds = sorted(s for s, runs in by_seed.items() if any(r.sampler == "gp-simplex" for r in runs))
        if not seeds:
            continue
        for d in range(draws):
            drawn = rng.integers(0, len(seeds), len(seeds))
            for cell in _setting_cells([r for i in drawn for r in by_seed[seeds[i]]]):
                for b, (_, ratio) in cell.reach.items():
                    met = ratio >= 2
                    counts[b][d] += met
                    key = (k, kind, noise, cell.n, b)
                    hits[key] = hits.get(key, 0) + met
    return _Resampled(
        {b: c for b, c in counts.items() if any(key[-1] == b for key in hits)},
        {key: h / draws for key, h in hits.items()},
    )


def print_tables(runs: list[Run], latency: dict[tuple[str, int], float], out: Callable[[str], None]) -> list[str]:
    """Print regret and ratio tables; return the goal lines."""
    groups: dict[tuple[int, str, float], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.n_domains, r.kind, r.noise), []).append(r)

    out("\n## Normalised regret after n trials: median / worst over seeds")
    for (k, kind, noise), rs in sorted(groups.items()):
        seeds = len({r.seed for r in rs})
        cps = CHECKPOINTS[k]
        out(f"\nK={k} {kind} noise={noise} ({seeds} seeds)")
        out(f"  {'sampler':<11}" + "".join(f"{'n=' + str(n):>16}" for n in cps))
        for name in SAMPLERS:
            srs = [r for r in rs if r.sampler == name]
            if not srs:
                continue
            if name == "grid":
                n = max(srs[0].regret)
                vals = [r.regret[n] for r in srs]
                cell = f"{_fmt(statistics.median(vals))} / {_fmt(max(vals))}"
                out(f"  {name:<11}{'(n=' + str(n) + ')':>16}{cell:>16}")
                continue
            cells = []
            for n in cps:
                vals = [r.regret[n] for r in srs if n in r.regret]
                cells.append(f"{_fmt(statistics.median(vals))} / {_fmt(max(vals))}" if vals else "-")
            out(f"  {name:<11}" + "".join(f"{c:>16}" for c in cells))

    baselines = BASELINES
    ratios: dict[str, list[float]] = {name: [] for name in baselines}
    # The same ratios, only in settings where the noise check does not call most gp-simplex studies
    # noise-limited: there the scores can tell mixtures apart, and "trials to reach" compares samplers,
    # not lucky draws.
    learnable: dict[str, list[float]] = {name: [] for name in baselines}
    # The same ratios with "reach" read as "hold" on both sides (see the module docstring).
    held: dict[str, list[float]] = {name: [] for name in baselines}
    # The same ratios over the checkpoint n, not over gp-simplex's own trials to its level.
    at_n: dict[str, list[float]] = {name: [] for name in baselines}

    out(
        "\n## Trials a baseline needs to reach gp-simplex's median regret after n trials, divided by the"
        "\n   trials gp-simplex needed to reach it (in brackets, at most n)"
        f"\n   (cells: {' / '.join(baselines)}; '>' = not reached within its budget; levels below "
        f"{FLOOR} count as {FLOOR})"
    )
    for (k, kind, noise), rs in sorted(groups.items()):
        if not any(r.sampler == "gp-simplex" for r in rs):
            continue
        checked, flagged = _noise_checked(rs)
        learnable_setting = len(flagged) <= len(checked) / 2
        texts = []
        for c in _setting_cells(rs):
            for name in baselines:
                if name in c.reach:
                    ratios[name].append(c.reach[name][1])
                    if learnable_setting:
                        learnable[name].append(c.reach[name][1])
                    held[name].append(c.held[name])
                    at_n[name].append(c.at_n[name])
            texts.append(f"n={c.n} ({c.n_gp}): {'/'.join(c.reach[b][0] if b in c.reach else '-' for b in baselines)}")
        out(f"  {f'K={k} {kind} noise={noise}':<26}" + "".join(f"{c:<30}" for c in texts))
    for name, values in ratios.items():
        if values:
            out(
                f"  {name} / gp-simplex over all cells: median {statistics.median(values):.1f}x, "
                f"min {min(values):.1f}x ('>' cells count at their lower bound)"
            )

    resampled = _resample_2x(groups)
    out(
        f"\n## The 2x count with the seeds resampled ({BOOTSTRAP_DRAWS} draws; each setting's seeds drawn with "
        "replacement,\n   the same for every sampler): how many cells another set of landscapes would count"
    )
    for name in resampled.counts:
        median, lo, hi = resampled.spread(name)
        weak = [
            f"K={k} {kind} noise={noise} n={n} ({p:.2f})"
            for (k, kind, noise, n), p in resampled.shares(name).items()
            if p < 0.5
        ]
        out(
            f"  {name}: {sum(r >= 2 for r in ratios[name])} of {len(ratios[name])} cells >= 2x; in the draws: median "
            f"{median:.0f}, 90% between {lo:.0f} and {hi:.0f}"
        )
        if weak:
            out("    >= 2x in fewer than half of the draws (share of draws): " + ", ".join(weak))

    out("\n## Trials to reach a fixed median regret (gp-simplex's count, and each baseline's as a ratio)")
    out(f"  {'K kind noise':<26}{'level':>7}{'gp-simplex':>11}" + "".join(f"{b:>11}" for b in (*baselines, "grid")))
    for (k, kind, noise), rs in sorted(groups.items()):
        curves = {name: _median_curve([r for r in rs if r.sampler == name]) for name in SAMPLERS}
        for level in REGRET_LEVELS:
            n_gp = _first_reach(curves["gp-simplex"], level) if curves["gp-simplex"] else None
            if n_gp is None:
                continue
            cells = [_trials_ratio(curves[b], level, n_gp)[0] if curves[b] else "-" for b in (*baselines, "grid")]
            out(f"  {f'K={k} {kind} noise={noise}':<26}{level:>7}{n_gp:>11}" + "".join(f"{c:>11}" for c in cells))

    _print_noise_checks(groups, out)
    _print_recommendation_gap(groups, out)

    if latency:
        out("\n## Proposal latency at 100 completed trials (median seconds, torch threads = 1)")
        ks = sorted({k for _, k in latency})
        names = [s for s in SAMPLERS if any((s, k) in latency for k in ks)]
        out(f"  {'sampler':<11}" + "".join(f"{'K=' + str(k):>9}" for k in ks))
        for name in names:
            out(f"  {name:<11}" + "".join(f"{latency.get((name, k), float('nan')):>9.2f}" for k in ks))

    return _goal_lines(groups, latency, ratios, learnable, held, at_n, resampled)


def _noise_checked(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """The gp-simplex studies whose noise check was recorded, and those it calls noise-limited."""
    checked = [r for r in runs if r.sampler == "gp-simplex" and r.noise_share is not None and r.regret]
    return checked, [r for r in checked if (r.noise_share or 0.0) >= NOISE_LIMITED_SHARE]


def _print_noise_checks(groups: dict[tuple[int, str, float], list[Run]], out: Callable[[str], None]) -> None:
    """gp-simplex studies that ``dmo-search status`` / ``best`` would call noise-limited after their last
    trial (:mod:`dmo_search.noise`), against their final regret."""
    rows = []
    for (k, kind, noise), rs in sorted(groups.items()):
        checked, flagged = _noise_checked(rs)
        if not checked:
            continue
        shares = [r.noise_share or 0.0 for r in checked]

        def median_regret(runs: list[Run]) -> str:
            return f"{statistics.median(r.regret[max(r.regret)] for r in runs):.3f}" if runs else "-"

        rows.append(
            f"  {f'K={k} {kind} noise={noise}':<26}{f'{len(flagged)} of {len(checked)}':>9}"
            f"{f'{min(shares):.2f}-{max(shares):.2f}':>12}{median_regret(flagged):>10}"
            f"{median_regret([r for r in checked if r not in flagged]):>10}"
        )
    if rows:
        out(
            "\n## Noise check after the last trial (gp-simplex): studies flagged noise-limited (noise explains"
            f" >= {NOISE_LIMITED_SHARE:.0%} of the scores' variance), the share's range, median final regret"
        )
        out(f"  {'K kind noise':<26}{'flagged':>9}{'share':>12}{'flagged':>10}{'others':>10}")
        for row in rows:
            out(row)


def _print_recommendation_gap(groups: dict[tuple[int, str, float], list[Run]], out: Callable[[str], None]) -> None:
    """gp-simplex's recommendation against the best mixture its study has run (both scored without noise),
    median over seeds: a recommendation far behind says the model, not the trials, falls short."""
    rows = []
    for (k, kind, noise), rs in sorted(groups.items()):
        gp = [r for r in rs if r.sampler == "gp-simplex" and r.tried]
        if not gp:
            continue
        cells = []
        for n in CHECKPOINTS[k]:
            pairs = [(r.regret[n], r.tried[n]) for r in gp if r.tried is not None and n in r.regret and n in r.tried]
            if pairs:
                rec, tried = (statistics.median(x) for x in zip(*pairs, strict=True))
                cells.append(f"n={n} {_fmt(rec)} / {_fmt(tried)}")
        rows.append(f"  {f'K={k} {kind} noise={noise}':<26}" + "".join(f"{c:<22}" for c in cells))
    if rows:
        out(
            "\n## gp-simplex's recommendation against the best mixture run so far: median regret after n trials,"
            "\n   recommendation / best run (the trials' mixtures scored without noise)"
        )
        for row in rows:
            out(row)


def _goal_lines(
    groups: dict[tuple[int, str, float], list[Run]],
    latency: dict[tuple[str, int], float],
    ratios: dict[str, list[float]],
    learnable: dict[str, list[float]],
    held: dict[str, list[float]],
    at_n: dict[str, list[float]],
    resampled: _Resampled,
) -> list[str]:
    def stat(k: int, kinds: Sequence[str], noise: float, n: int) -> tuple[float, float] | None:
        vals = [
            r.regret[n]
            for kind in kinds
            for r in groups.get((k, kind, noise), [])
            if r.sampler == "gp-simplex" and n in r.regret
        ]
        return (statistics.median(vals), max(vals)) if vals else None

    lines = []

    def tally(values: list[float]) -> str:
        return f"{sum(r >= 2 for r in values)} of {len(values)} cells >= 2x" + (
            f", min {min(values):.1f}x)" if values else ")"
        )

    def goal(text: str, value: float | None, limit: float) -> None:
        if value is None:
            return
        lines.append(f"  [{'met ' if value <= limit else 'MISS'}] {text}: {value:.3f} (goal <= {limit})")

    s = stat(3, KINDS, 0.0, 12)
    goal("K=3 median regret after 12 trials (noiseless, all kinds)", s and s[0], 0.01)
    s = stat(4, ("face",), 0.0, 18)
    goal("K=4 optimum on a face, median regret after 18", s and s[0], 0.01)
    s = stat(8, KINDS, 0.0, 30)
    goal("K=8 median regret after 30 (noiseless, all kinds)", s and s[0], 0.01)
    goal("K=8 worst seed after 30 (noiseless, all kinds)", s and s[1], 0.05)
    s = stat(4, KINDS, 0.01, 18)
    goal("K=4 noise sd 0.01, median regret after 18", s and s[0], 0.10)
    for name in ("tpe", "random"):
        if ratios.get(name):
            lines.append(
                f"  [{'met ' if min(ratios[name]) >= 2 else 'MISS'}] trials {name} / gp-simplex to the same median "
                f"regret: min {min(ratios[name]):.1f}x, median {statistics.median(ratios[name]):.1f}x, "
                f"{sum(r >= 2 for r in ratios[name])} of {len(ratios[name])} cells >= 2x (goal >= 2x)"
            )
            kept = learnable.get(name, [])
            if len(kept) < len(ratios[name]):
                lines.append(
                    "         (in the settings where the noise check calls at most half of the studies noise-limited: "
                    + tally(kept)
                )
            for reading, other in (
                ("reading 'reach' as 'hold' on both sides, gp-simplex's level its worst median from n on", held),
                ("charging gp-simplex all n trials of a checkpoint, not its trials to the level", at_n),
            ):
                kept = other.get(name, [])
                if kept and kept != ratios[name]:  # printed only where the reading changes a cell
                    lines.append(f"         ({reading}: " + tally(kept))
            if name in resampled.counts:
                median, lo, hi = resampled.spread(name)
                shares = resampled.shares(name)
                weakest = min(shares, key=lambda key: (shares[key], key))
                k, kind, noise, n = weakest
                lines.append(
                    f"         (seeds resampled: median {median:.0f}, 90% of draws "
                    f"{lo:.0f}-{hi:.0f} of {len(ratios[name])} cells >= 2x; "
                    f"the weakest cell, K={k} {kind} noise={noise} n={n}, in {shares[weakest]:.0%} of draws)"
                )
    gp_lat = [v for (name, _), v in latency.items() if name == "gp-simplex"]
    if gp_lat:
        met = "met " if max(gp_lat) <= 5 else "MISS"
        lines.append(f"  [{met}] gp-simplex latency at 100 trials: max {max(gp_lat):.2f} s (goal <= 5 s)")
    return lines


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def _write_json(path: Path, runs: list[Run], latency: dict[tuple[str, int], float]) -> None:
    record = {
        "runs": [dataclasses.asdict(r) for r in runs],
        "latency": {f"{name} K={k}": v for (name, k), v in latency.items()},
    }
    path.write_text(json.dumps(record, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="K=3,4, interior and face, noiseless, 3 seeds")
    parser.add_argument("--k", type=int, nargs="+", help="numbers of domains (default 2 3 4 6 8)")
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS + HELD_OUT_KINDS,
        help="landscape kinds (default interior face vertex; mixlaw is the held-out family)",
    )
    parser.add_argument("--noise", type=float, nargs="+", help="observation noise sds (default 0 0.01)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per setting (default 5)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first seed (default 0): 5 draws landscapes the default seeds never drew, a held-out check",
    )
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, help="samplers (default all)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--gp-design", default="space-filling", help="gp-simplex's initial_design")
    parser.add_argument("--json", type=Path, help="also write every run to this JSON file")
    parser.add_argument("--latency-only", action="store_true", help="measure the latency only, no runs")
    parser.add_argument(
        "--report", type=Path, nargs="+", help="print the tables from --json files of earlier (partial) benchmarks"
    )
    parser.add_argument("--constrained", action="store_true", help="the constrained cases (K=3,4,6 by default)")
    args = parser.parse_args(argv)
    if args.first_seed < 0:
        parser.error(f"--first-seed must be >= 0, got {args.first_seed}")
    if args.constrained:
        return constrained_main(args)
    if args.report:
        runs, latency = _read_json(args.report)
        _print_report(runs, latency)
        return 0

    import torch

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quick = args.quick
    ks = args.k or ([3, 4] if quick else [2, 3, 4, 6, 8])
    kinds = args.kinds or (["interior", "face"] if quick else list(KINDS))
    noises = args.noise if args.noise is not None else ([0.0] if quick else [0.0, 0.01])
    n_seeds = args.seeds or (3 if quick else 5)
    samplers = args.samplers or (["gp-simplex", "tpe", "random", "grid"] if quick else list(SAMPLERS))

    runs = []
    t_start = time.perf_counter()
    for k in [] if args.latency_only else ks:
        n_gp = CHECKPOINTS[k][-1]
        for kind in kinds:
            for seed in range(args.first_seed, args.first_seed + n_seeds):
                land = mixing_law_landscape(k, seed) if kind in HELD_OUT_KINDS else make_landscape(kind, k, seed)
                for noise in noises:
                    for name in samplers:
                        if name == "grid" and k > 4:
                            continue
                        n = n_gp if name in ("gp-simplex", "optuna-gp") else min(BASELINE_FACTOR * n_gp, 200)
                        run = run_one(
                            name,
                            land,
                            noise=noise,
                            seed=seed,
                            n_trials=n,
                            gp_design=args.gp_design,
                        )
                        runs.append(run)
                        if args.json:  # after every run, so that an interrupted benchmark keeps its numbers
                            _write_json(args.json, runs, {})
                        final = run.regret[max(run.regret)]
                        print(
                            f"[{time.perf_counter() - t_start:7.0f}s] K={k} {kind:<8} noise={noise:<5} seed={seed} "
                            f"{name:<10} regret@{max(run.regret)}={final:.4f} ({run.seconds:.1f}s)",
                            file=sys.stderr,
                            flush=True,
                        )

    latency = {}
    if not args.no_latency:
        for k in ks:
            for name in ("gp-simplex", "optuna-gp", "tpe"):
                if name in samplers:
                    latency[(name, k)] = proposal_latency(name, k)
                    print(f"latency {name} K={k}: {latency[(name, k)]:.2f}s", file=sys.stderr, flush=True)

    if args.json:
        _write_json(args.json, runs, latency)
    _print_report(runs, latency)
    return 0


def constrained_main(args: argparse.Namespace) -> int:
    """``--constrained``: regret tables of the constrained cases (see :mod:`constrained_cases`)."""
    import torch
    from constrained_cases import CASES, make_case, run_case

    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ks = args.k or [3, 4, 6]
    noises = args.noise if args.noise is not None else [0.01]
    n_seeds = args.seeds or 3
    names = ("gp-simplex", "random-feasible", "tpe-projected", "grid-feasible")
    results: dict[tuple[int, str, float, str], list[dict[int, float]]] = {}
    t_start = time.perf_counter()
    for k in ks:
        n_gp = CHECKPOINTS[k][-1]
        for kind in CASES:
            if kind == "group" and k < 3:
                continue  # a group of every domain is the simplex itself
            for seed in range(args.first_seed, args.first_seed + n_seeds):
                case = make_case(kind, make_landscape("interior", k, seed), seed)
                for noise in noises:
                    for name in names:
                        if name == "grid-feasible" and k > 4:
                            continue
                        n = n_gp if name == "gp-simplex" else BASELINE_FACTOR * n_gp
                        regret, secs = run_case(name, case, noise=noise, seed=seed, n_trials=n)
                        results.setdefault((k, kind, noise, name), []).append(regret)
                        last = max(regret)
                        print(
                            f"[{time.perf_counter() - t_start:6.0f}s] K={k} {kind:<5} noise={noise} seed={seed} "
                            f"{name:<15} regret@{last}={regret[last]:.4f} ({secs:.1f}s)",
                            file=sys.stderr,
                            flush=True,
                        )
    print("## Constrained cases: median normalised regret (vs. the constrained optimum) after n trials")
    for k in ks:
        print(f"\n### K={k}")
        print("| case | noise | sampler | " + " | ".join(f"n={n}" for n in CHECKPOINTS[k]) + " |")
        print("|" + "---|" * (len(CHECKPOINTS[k]) + 3))
        for (k_, kind, noise, name), curves in sorted(results.items()):
            if k_ != k:
                continue
            cells = []
            for n in CHECKPOINTS[k]:
                vals = [c[n] for c in curves if n in c] or [c[max(c)] for c in curves if max(c) < n]
                cells.append(f"{statistics.median(vals):.3f}" if vals else "-")
            print(f"| {kind} | {noise} | {name} | " + " | ".join(cells) + " |")
    print("\n## Trials after which the median regret stays at or below a level ('>N': not within N trials)")
    for k in ks:
        for kind in CASES:
            if kind == "group" and k < 3:
                continue
            for noise in noises:
                row = []
                for level in (0.1, 0.05):
                    cells = []
                    for name in names:
                        got = results.get((k, kind, noise, name))
                        if not got:
                            continue
                        curve = _median_curve([Run(name, k, kind, noise, 0, c, 0) for c in got])
                        settled = _settled(curve, level)
                        cells.append(f"{name} {'>' + str(max(curve)) if settled is None else settled}")
                    row.append(f"<= {level}: " + ", ".join(cells))
                print(f"K={k} {kind} noise={noise}: " + "; ".join(row))
    return 0


def _print_report(runs: list[Run], latency: dict[tuple[str, int], float]) -> None:
    lines: list[str] = []
    goals = print_tables(runs, latency, lines.append)
    print("\n".join(lines))
    print("\n## Goals (gp-simplex)")
    print("\n".join(goals))


def _read_json(paths: Sequence[Path]) -> tuple[list[Run], dict[tuple[str, int], float]]:
    runs: list[Run] = []
    latency: dict[tuple[str, int], float] = {}
    for path in paths:
        record = json.loads(path.read_text())
        for r in record["runs"]:
            r["regret"] = {int(n): v for n, v in r["regret"].items()}
            if r.get("tried") is not None:
                r["tried"] = {int(n): v for n, v in r["tried"].items()}
            runs.append(Run(**r))
        for key, value in record["latency"].items():
            name, k = key.rsplit(" K=", 1)
            latency[(name, int(k))] = value
    return runs, latency


if __name__ == "__main__":
    raise SystemExit(main())
