"""Sampler factory: one name -> one Optuna sampler, shared by studies, the CLI and ``optimize_simplex``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import optuna

if TYPE_CHECKING:
    from dmo_search.constraints import MixtureConstraints

__all__ = ["CONSTRAINED_SAMPLERS", "SAMPLER_NAMES", "SamplerName", "make_sampler"]

SamplerName = Literal["gp-simplex", "optuna-gp", "tpe", "random", "grid"]
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)
CONSTRAINED_SAMPLERS: tuple[str, ...] = ("gp-simplex", "grid")
"""The samplers that respect hard constraints on the weights."""


def make_sampler(
    name: str,
    n_domains: int,
    *,
    seed: int = 0,
    n_startup_trials: int | None = None,
    initial_design: str | Sequence[Sequence[float]] = "space-filling",
    constraints: MixtureConstraints | None = None,
) -> optuna.samplers.BaseSampler:
    """Build the sampler called ``name`` for a study over ``n_domains`` domains.

    ``grid`` runs only the study's enqueued designs: its sampler is never asked for a new point by
    the study loop, which stops when the designs are used up (a random sampler stands behind it).

    Args:
        name: one of :data:`SAMPLER_NAMES`.
        n_domains: K.
        seed: the sampler's seed. Defaults to 0.
        n_startup_trials: trials before the model takes over, for ``gp-simplex``, ``optuna-gp`` and
            ``tpe``. Defaults to :obj:`None`: ``K + 1`` for ``gp-simplex`` (see its docs), 10 (Optuna's
            default) for the others.
        initial_design: ``gp-simplex``'s design before the GP (see
            :class:`dmo_search.sampler.SimplexGPSampler`). Defaults to ``"space-filling"``.
        constraints: hard constraints on the weights. ``gp-simplex`` proposes inside them; ``grid``
            runs designs (the caller filters them); the cube samplers (``optuna-gp``, ``tpe``,
            ``random``) cannot respect them and are refused.

    Raises:
        ValueError: for an unknown name, listing the known ones, or a cube sampler with constraints.
    """
    if name not in SAMPLER_NAMES:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    if constraints is not None and not constraints.is_trivial and name not in CONSTRAINED_SAMPLERS:
        raise ValueError(
            f"sampler {name!r} samples the whole simplex and cannot respect the constraints "
            f"({constraints.describe()}); use sampler gp-simplex (BO inside them) or grid (designs)"
        )
    if name == "gp-simplex":
        from dmo_search.sampler import SimplexGPSampler

        return SimplexGPSampler(
            n_domains,
            seed=seed,
            n_startup_trials=n_startup_trials,
            initial_design=initial_design,
            constraints=constraints,
        )
    if name == "optuna-gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials or 10)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials or 10)
    return optuna.samplers.RandomSampler(seed=seed)  # "random", or "grid" (names were checked above)
