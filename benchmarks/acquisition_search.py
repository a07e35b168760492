"""Does gp-simplex's acquisition search find what the acquisition asks for? Default search against a larger one.

One study of ``benchmarks/sampler_efficiency.py`` (a landscape, a seed, a noise level) is run with
gp-simplex as it is. At each of its proposals the same acquisition function (qLogNEI with noise, qUCB
without), on the same trials, is maximised a second time with a larger search (``--restarts`` SLSQP
starts from ``--raw-samples`` draws, against the default 10 from 512), and the acquisition value (log-EI
or the upper bound, in the standardised score's units) each search reached is printed side by side,
with the share of the data that separates the two proposals. Then the study is run again with the larger
search as its own, and both studies' regret after the checkpoints is printed with their run times.

If the larger search seldom reaches a higher value, a study that falls short does so because of what
the GP and its acquisition ask for, not because their maximum was missed.

    python benchmarks/acquisition_search.py --k 8 --kind interior --seed 12
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sampler_efficiency as bench

from dmo_search import sampler as sampler_module
from dmo_search import simplex
from dmo_search.sampler import SimplexGPSampler

# The search SimplexGPSampler runs by default (its n_restarts and raw_samples).
_DEFAULTS = inspect.signature(SimplexGPSampler).parameters
DEFAULT_RESTARTS, DEFAULT_RAW = int(_DEFAULTS["n_restarts"].default), int(_DEFAULTS["raw_samples"].default)


@contextmanager
def _second_search(restarts: int, raw_samples: int, out: list[tuple[float, float, float, float]]) -> Iterator[None]:
    """While active, each single-objective proposal is also searched with ``restarts`` / ``raw_samples``;
    ``(value default, value larger, share of data between them, seconds of the second search)`` is
    appended to ``out``. The study still takes the default search's proposal (the recommendation's
    posterior mean, also maximised by ``maximise_on_simplex``, is not searched again)."""
    import torch
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.acquisition.monte_carlo import qUpperConfidenceBound

    original = sampler_module.maximise_on_simplex

    def both(acqf: Any, n_domains: int, **kw: Any) -> np.ndarray:
        chosen = original(acqf, n_domains, **kw)
        if isinstance(acqf, (qLogNoisyExpectedImprovement, qUpperConfidenceBound)):
            t0 = time.perf_counter()
            larger = original(acqf, n_domains, **{**kw, "n_restarts": restarts, "raw_samples": raw_samples})
            seconds = time.perf_counter() - t0
            with torch.no_grad():
                a, b = (float(acqf(torch.from_numpy(c).unsqueeze(0))) for c in (chosen, larger))
            out.append((a, b, float(simplex.data_moved(chosen, larger).sum()), seconds))
        return chosen

    sampler_module.maximise_on_simplex = both
    try:
        yield
    finally:
        sampler_module.maximise_on_simplex = original


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench.one_study_parser(__doc__)
    parser.add_argument("--restarts", type=int, default=40, help="the larger search's SLSQP starts (default 40)")
    parser.add_argument("--raw-samples", type=int, default=2048, help="its draws to pick starts from (default 2048)")
    args = parser.parse_args(argv)
    if args.restarts < 1 or args.raw_samples < args.restarts:
        parser.error("--restarts must be >= 1 and --raw-samples >= --restarts")

    land, n_trials, setting = bench.one_study_setting(args)

    pairs: list[tuple[float, float, float, float]] = []
    print(f"{setting}: the default search's study, each proposal searched again ...", file=sys.stderr, flush=True)
    with _second_search(args.restarts, args.raw_samples, pairs):
        default = bench.run_one("gp-simplex", land, noise=args.noise, seed=args.seed, n_trials=n_trials)
    default.seconds -= sum(p[3] for p in pairs)  # the study's own time, without the second searches
    print(
        f"\n## acquisition value of each proposal: default search ({DEFAULT_RESTARTS} starts from {DEFAULT_RAW} draws) "
        f"against {args.restarts} from {args.raw_samples}, on the same trials"
    )
    print(f"  {'proposal':>8} {'default':>9} {'larger':>9} {'larger-default':>15} {'data apart':>11}")
    for i, (a, b, apart, _) in enumerate(pairs, start=1):
        print(f"  {i:>8} {a:>9.3f} {b:>9.3f} {b - a:>+15.3f} {apart:>11.3f}")
    higher = sum(b - a > 0.01 for a, b, _, _ in pairs)
    print(f"  the larger search reached a value higher by more than 0.01 at {higher} of {len(pairs)} proposals")

    print(f"{setting}: the study with the larger search as its own ...", file=sys.stderr, flush=True)
    larger_sampler = SimplexGPSampler(args.k, seed=args.seed, n_restarts=args.restarts, raw_samples=args.raw_samples)
    larger = bench.run_one(
        "gp-simplex", land, noise=args.noise, seed=args.seed, n_trials=n_trials, sampler=larger_sampler
    )
    print("\n## normalised regret of the recommendation after n trials (best mixture run in brackets)")
    for line in bench.checkpoint_rows(
        [(f"{DEFAULT_RESTARTS} from {DEFAULT_RAW}", default), (f"{args.restarts} from {args.raw_samples}", larger)],
        bench.CHECKPOINTS[args.k],
        label="search",
    ):
        print(line)
    print(f"  run time, larger / default search: {larger.seconds / default.seconds:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
