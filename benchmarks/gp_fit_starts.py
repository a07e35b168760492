"""Does gp-simplex's GP fit reach the best hyper-parameters of its model? The default fit against other starts.

One study of ``benchmarks/sampler_efficiency.py`` (a landscape, a seed, a noise level) is run with
gp-simplex as it is. At each GP fit (the proposals' GP and the recommending one) the maximum a
posteriori fit is repeated from ``--starts`` other starting points (each lengthscale of the default
start multiplied by a factor drawn log-uniformly from ``[1/4, 4]``), and the MAP objective reached
(the marginal log-likelihood with the hyper-parameters' log-priors, per datum, as BoTorch maximises
it) is recorded for the default fit and for the best of all fits; the study keeps the default fit. Then
the study is run again with the best fit as its own, and both studies' regret after the checkpoints is
printed with their run times.

If the other starts seldom reach a higher objective than the default fit, a study that falls short does
so because of what the model is (its kernel and priors), not because its fit stopped at a poor local
optimum; and a study with the best fit that differs is a sign of how far a small change of the fitted
hyper-parameters moves a study's trials, not of a better model.

    python benchmarks/gp_fit_starts.py --k 8 --kind interior --seed 12
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sampler_efficiency as bench

from dmo_search import gp

# Each other start multiplies each lengthscale of the default start by a factor in [1 / SPREAD, SPREAD].
SPREAD = 4.0
# A fit whose MAP objective per datum is higher than the default's by more than this counts as better.
MARGIN = 0.01


@dataclasses.dataclass(frozen=True)
class Fit:
    """One GP fit: its data points, the MAP objective per datum of the default fit and of the best of all
    starts, and the seconds the other starts took."""

    n: int
    default: float
    best: float
    seconds: float


@contextmanager
def fit_starts(starts: int, out: list[Fit], *, keep_best: bool = False, seed: int = 0) -> Iterator[None]:
    """While active, every GP fit is repeated from ``starts`` other starting points and recorded in
    ``out``; the model keeps the default fit, or with ``keep_best`` the fit of the highest objective."""
    import botorch.fit
    import torch

    original = botorch.fit.fit_gpytorch_mll

    def fit(
        mll: Any,
        closure: Callable[[], tuple[torch.Tensor, Sequence[torch.Tensor | None]]] | None = None,
        optimizer: Callable[..., Any] | None = None,
        closure_kwargs: dict[str, Any] | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        def refit() -> None:
            original(mll, closure, optimizer, closure_kwargs, optimizer_kwargs, **kwargs)

        model = mll.model
        start = copy.deepcopy(model.state_dict())
        refit()
        default = best = gp._log_evidence(model)
        default_state = best_state = copy.deepcopy(model.state_dict())
        rng = torch.Generator().manual_seed(seed * 100_003 + len(out))
        t0 = time.perf_counter()
        for _ in range(starts):
            model.load_state_dict(start)
            model.train()
            kernel = model.covar_module
            lengthscale = kernel.lengthscale.detach()
            u = torch.rand(lengthscale.shape, generator=rng, dtype=lengthscale.dtype)
            lower = float(kernel.raw_lengthscale_constraint.lower_bound)
            kernel.lengthscale = (lengthscale * torch.exp((2 * u - 1) * math.log(SPREAD))).clamp_min(lower)
            try:
                refit()
            except gp.model_errors():
                continue
            value = gp._log_evidence(model)
            if value > best:
                best, best_state = value, copy.deepcopy(model.state_dict())
        out.append(Fit(int(model.train_targets.shape[-1]), default, best, time.perf_counter() - t0))
        model.load_state_dict(best_state if keep_best else default_state)
        model.eval()
        return mll

    botorch.fit.fit_gpytorch_mll = fit
    try:
        yield
    finally:
        botorch.fit.fit_gpytorch_mll = original


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench.one_study_parser(__doc__)
    parser.add_argument("--starts", type=int, default=4, help="other starting points per fit (default 4)")
    args = parser.parse_args(argv)
    if args.starts < 1:
        parser.error("--starts must be >= 1")

    land, n_trials, setting = bench.one_study_setting(args)

    fits: list[Fit] = []
    print(f"{setting}: the default fit's study, each fit repeated from other starts ...", file=sys.stderr, flush=True)
    with fit_starts(args.starts, fits, seed=args.seed):
        default = bench.run_one("gp-simplex", land, noise=args.noise, seed=args.seed, n_trials=n_trials)
    default.seconds -= sum(f.seconds for f in fits)  # the study's own time, without the other starts
    print(f"\n## MAP objective per datum of each GP fit: the default start against the best of {args.starts} others")
    print(f"  {'fit':>4} {'points':>7} {'default':>9} {'best':>9} {'best-default':>13}")
    for i, f in enumerate(fits, start=1):
        print(f"  {i:>4} {f.n:>7} {f.default:>9.4f} {f.best:>9.4f} {f.best - f.default:>+13.4f}")
    gaps = [f.best - f.default for f in fits]
    higher = sum(g > MARGIN for g in gaps)
    total = max((g * f.n for g, f in zip(gaps, fits, strict=True)), default=0.0)
    print(
        f"  another start reached an objective higher by more than {MARGIN} per datum at {higher} of {len(fits)} "
        f"fits (largest gap {max(gaps, default=0.0):.4f} per datum; {total:.2f} at most over a fit's points)"
    )

    print(f"{setting}: the study with the best fit as its own ...", file=sys.stderr, flush=True)
    with fit_starts(args.starts, [], keep_best=True, seed=args.seed):
        best = bench.run_one("gp-simplex", land, noise=args.noise, seed=args.seed, n_trials=n_trials)
    print("\n## normalised regret of the recommendation after n trials (best mixture run in brackets)")
    for line in bench.checkpoint_rows(
        [("default fit", default), (f"best of {args.starts + 1} starts", best)], bench.CHECKPOINTS[args.k]
    ):
        print(line)
    print(f"  run time, best of {args.starts + 1} starts / default fit: {best.seconds / default.seconds:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
