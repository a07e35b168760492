"""Trials to reach a regret level with and without a warm start, on pairs of related landscapes.

A pair is a landscape of ``sampler_efficiency.py`` (the source: "the 2B model") and the same law with
every coefficient perturbed by a random factor (the target: "the 7B model"; ``--perturb`` sets the
relative size, default 20%). A source study of ``--source-trials`` gp-simplex trials runs on the
source; then the target is searched by gp-simplex cold (space-filling design, then the GP) and warm
(:func:`dmo_search.warmstart.warm_start_from_study`: the source's 3 best mixtures first, its posterior
mean as the GP's prior mean). Two domain mappings:

* ``same``: the source studied the same K domains;
* ``subset``: the source studied K-1 of them (the target adds a domain the source never saw); also
  ``designs only`` (``prior=False``: the source's best mixtures without the GP prior).

Printed: the median normalised regret of the recommendation after n target trials, and the trials after
which the median stays at or below 0.1 and 0.05, for cold and warm.

Run ``python benchmarks/warm_start.py`` (about 15 min on 2 cores) or ``--quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sampler_efficiency import Landscape, _maximise, _settled, make_landscape

from dmo_search import optimize_simplex
from dmo_search.sampler import SimplexGPSampler
from dmo_search.warmstart import WarmStart, warm_start_from_study

MAPPINGS = ("same", "subset")


def perturb(land: Landscape, rel: float, seed: int) -> Landscape:
    """The same law with every coefficient multiplied by ``exp(N(0, rel))``; optimum recomputed."""
    rng = np.random.default_rng([seed, 4242])

    def jitter(a: np.ndarray) -> np.ndarray:
        return a * np.exp(rng.normal(0.0, rel, size=a.shape))

    new = dataclasses.replace(
        land,
        lo=jitter(land.lo),
        gain=jitter(land.gain),
        alpha=jitter(land.alpha),
        scale=jitter(land.scale),
        transfer=np.where(np.eye(*land.transfer.shape) > 0, land.transfer, jitter(land.transfer)),
        interference=jitter(land.interference),
        conflict=jitter(land.conflict),
    )
    return new.solved(*_maximise(new, np.random.default_rng(seed)))


def target_curve(
    target: Landscape, *, noise: float, seed: int, n_trials: int, warm: WarmStart | None
) -> dict[int, float]:
    """Regret of gp-simplex's recommendation after each of ``n_trials`` target trials."""
    k = target.n_domains
    rng = np.random.default_rng([seed, 31337])

    def fn(w: list[float]) -> float:
        return float(target.f(np.asarray(w))[0]) + noise * float(rng.normal())

    study = optimize_simplex(fn, k, n_trials, seed=seed, warm_start=warm).study
    trials = study.get_trials(deepcopy=False)
    curve: dict[int, float] = {}
    for n in range(1, n_trials + 1):  # the recommendation the study would have made after n trials
        head = optuna.create_study(direction="maximize")
        head.add_trials(trials[:n])
        for key, value in study.user_attrs.items():
            head.set_user_attr(key, value)
        curve[n] = target.regret(SimplexGPSampler(k, seed=seed).recommend(head))
    return curve


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="K=3, 2 seeds")
    parser.add_argument("--k", type=int, nargs="+", default=None, help="numbers of domains (default 3 4)")
    parser.add_argument("--seeds", type=int, default=None, help="pairs per setting (default 4)")
    parser.add_argument("--noise", type=float, default=0.002, help="observation noise sd (default 0.002)")
    parser.add_argument("--perturb", type=float, default=0.2, help="relative coefficient perturbation (default 0.2)")
    parser.add_argument("--source-trials", type=int, default=25, help="trials of the source study (default 25)")
    parser.add_argument("--trials", type=int, default=None, help="target trials (default 3K + 3)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import torch

    torch.set_num_threads(1)
    ks = args.k or ([3] if args.quick else [3, 4])
    n_seeds = args.seeds or (2 if args.quick else 4)
    t0 = time.perf_counter()
    curves: dict[tuple[int, str, str], list[dict[int, float]]] = {}
    for k in ks:
        n_target = args.trials or 3 * k + 3
        for seed in range(n_seeds):
            source_land = make_landscape("interior", k, seed)
            target = perturb(source_land, args.perturb, seed)
            for mapping in MAPPINGS:
                src_k = k if mapping == "same" else k - 1
                if src_k < 2:
                    continue
                names = [f"d{i}" for i in range(k)]
                src_names = names[:src_k]
                src_rng = np.random.default_rng([seed, 99])

                def src_fn(
                    w: list[float],
                    _k: int = src_k,
                    _full_k: int = k,
                    _land: Landscape = source_land,
                    _rng: np.random.Generator = src_rng,
                ) -> float:
                    full = np.zeros(_full_k)
                    full[:_k] = w  # the source never mixes the target's last domain in
                    return float(_land.f(full)[0]) + args.noise * float(_rng.normal())

                src = optimize_simplex(src_fn, src_k, args.source_trials, seed=seed + 1000)
                src.study.set_user_attr("expert_names", src_names)
                warm = warm_start_from_study(src.study, names)  # designs + prior (the default)
                variants: list[tuple[str, WarmStart | None]] = [("cold", None), ("warm", warm)]
                if mapping == "subset":
                    variants.append(("designs only", warm_start_from_study(src.study, names, prior=False)))
                for label, ws in variants:
                    if mapping == "subset" and label == "cold":
                        curves.setdefault((k, mapping, label), []).append(curves[(k, "same", "cold")][-1])
                        continue
                    c = target_curve(target, noise=args.noise, seed=seed, n_trials=n_target, warm=ws)
                    curves.setdefault((k, mapping, label), []).append(c)
                    print(
                        f"[{time.perf_counter() - t0:6.0f}s] K={k} seed={seed} source={mapping:<6} {label}: "
                        f"regret@{n_target}={c[n_target]:.4f}",
                        file=sys.stderr,
                        flush=True,
                    )
    print(
        f"## Warm start: median normalised regret of gp-simplex's recommendation (noise {args.noise}, "
        f"perturbation {args.perturb:.0%}, {args.source_trials} source trials, {n_seeds} pairs)"
    )
    for k in ks:
        n_target = args.trials or 3 * k + 3
        shown = sorted({1, 2, 3, 4, 6, k + 1, 2 * k, n_target})
        print(f"\n### K={k}")
        print(
            "| source | start | " + " | ".join(f"n={n}" for n in shown) + " | stays <= 0.1 from | stays <= 0.05 from |"
        )
        print("|" + "---|" * (len(shown) + 4))
        for mapping in MAPPINGS:
            for label in ("cold", "warm", "designs only"):
                cs = curves.get((k, mapping, label))
                if not cs:
                    continue
                med = {n: statistics.median(c[n] for c in cs) for n in cs[0]}
                cells = [f"{med[n]:.3f}" for n in shown]
                reach = [_settled(med, lv) for lv in (0.1, 0.05)]
                tail = [f">{n_target}" if r is None else str(r) for r in reach]
                source = f"{k} domains" if mapping == "same" else f"{k - 1} of the {k} domains"
                print(f"| {source} | {label} | " + " | ".join(cells + tail) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
