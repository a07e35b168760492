"""The samplers on a real objective: merged toy-world experts scored by the study's backend.

``benchmarks/sampler_efficiency.py`` measures the samplers on synthetic landscapes. This script runs
the same comparison on the objective dmo-search exists for: each trial merges the toy world's experts
(``dmo-search toy build``) with the proposed weights, in place in one backend (vLLM by default, as
``configs/toy.yaml`` runs), and scores the merged model on the validation subset, as a study's worker
does (the score's bootstrap standard error goes to gp-simplex as the worker records it). The toy world
has K = 3 domains, and its landscape is one: a seed draws the samplers' seeds and the validation
subset (``objective.subset_seed``), so each seed is another noisy view of the same function.

What is measured, as in ``sampler_efficiency.py``: the normalised regret ``(f* - f(recommended)) /
(f* - mean f)`` after every trial, ``f`` the merged model's score on ALL validation examples (200 per
domain, against the subset's ``--subset`` per domain; ``--truth-subset N`` for fewer), the
recommendation gp-simplex's own or the best observed mixture (the others). ``f*`` is the best ``f``
known: the maximum over a grid on the simplex (step ``1 / --grid-step``), every recommendation and
gp-simplex's trials; ``mean f`` the mean over that grid (a lattice, close to the uniform mean on the
simplex). TPE and random run ``BASELINE_FACTOR`` times as many trials as gp-simplex (``--trials``, by
default the last checkpoint), ``grid`` is the paper's fixed design (21 points at K = 3). Printed: the
tables of ``sampler_efficiency.py`` (regret after each checkpoint, the 2x cells against TPE and random,
the noise check, gp-simplex's recommendation beside the best mixture it ran).

Run (the toy world built at ``studies/toy-world``; about 2 minutes per seed on 2 cores, plus 1.5 for the
grid)::

    python benchmarks/sampler_toy.py --seeds 5
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sampler_efficiency as bench

from dmo_search import simplex
from dmo_search.backends import Backend, make_backend
from dmo_search.config import StudyConfig, apply_overrides, load_config, parse_config
from dmo_search.noise import noise_check
from dmo_search.objectives import make_objective
from dmo_search.objectives.base import Objective

KIND = "toy"


class ToyScores:
    """The toy world's merged models, scored on a validation subset (trials) and on all examples (regret).

    The regret's scores are cached by their weights (rounded to 1e-9): each mixture is scored once.
    """

    def __init__(self, cfg: StudyConfig, backend: Backend, truth_subset: int | None = None) -> None:
        self.cfg = cfg
        self.backend = backend
        self._truth = self._objective(subset_size=truth_subset)
        self._true: dict[tuple[float, ...], float] = {}
        self.seconds = 0.0  # merging and scoring, all views

    def subset(self, subset_size: int, seed: int) -> Objective:
        """The objective a study with ``subset_size`` examples per domain drawn with ``seed`` scores on."""
        return self._objective(subset_size=subset_size, subset_seed=seed)

    def _objective(self, **changes: Any) -> Objective:
        """The config's objective with ``changes`` to its ``objective`` keys."""
        raw = json.loads(self.cfg.model_dump_json())
        raw["objective"].update(changes)
        return make_objective(parse_config(raw).objective)

    def score(self, objective: Objective, w: Sequence[float]) -> tuple[float, float]:
        """``objective``'s value and standard error for the merge with weights ``w``."""
        t0 = time.perf_counter()
        self.backend.set_mixture(list(w))
        result = objective.evaluate(self.backend)
        self.seconds += time.perf_counter() - t0
        return result.value, result.value_se

    def true(self, w: Sequence[float]) -> float:
        """The score on the regret's examples (all validation examples unless ``truth_subset``)."""
        key = tuple(round(float(x), 9) for x in w)
        if key not in self._true:
            self._true[key] = self.score(self._truth, key)[0]
        return self._true[key]

    def known(self) -> dict[tuple[float, ...], float]:
        """Every mixture scored for the regret so far, and its score."""
        return dict(self._true)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config", type=Path, default=Path("configs/toy.yaml"), help="the study config (default: the toy world, vLLM)"
    )
    ap.add_argument("--backend", choices=("vllm", "hf"), help="override the config's backend")
    ap.add_argument("--seeds", type=int, default=5, help="seeds (default 5)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--subset", type=int, default=50, help="validation examples per domain per trial (default 50)")
    ap.add_argument(
        "--trials",
        type=int,
        help=f"gp-simplex's trials (default the last checkpoint); TPE and random {bench.BASELINE_FACTOR}x",
    )
    ap.add_argument("--truth-subset", type=int, help="examples per domain of the regret's scores (default all)")
    ap.add_argument("--grid-step", type=int, default=10, help="f* and mean f from a grid of step 1/N (default 10)")
    ap.add_argument("--samplers", nargs="+", default=["gp-simplex", "tpe", "random", "grid"], choices=bench.SAMPLERS)
    ap.add_argument("--json", type=Path, help="also write every study's mixtures and scores here")
    args = ap.parse_args(argv)
    for flag in ("seeds", "subset", "trials", "truth_subset", "grid_step"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if not args.config.is_file():
        ap.error(f"{args.config} not found: build the toy world first (`dmo-search toy build`) or pass --config")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = apply_overrides(load_config(args.config), backend=args.backend)
    k = cfg.n_domains
    if k not in bench.CHECKPOINTS:
        ap.error(f"the config has {k} domains; the checkpoints cover K in {sorted(bench.CHECKPOINTS)}")
    t_start = time.perf_counter()
    print(f"starting the {cfg.backend.name} backend ...", file=sys.stderr, flush=True)
    scores = ToyScores(cfg, make_backend(cfg), args.truth_subset)
    try:
        return _compare(args, cfg, scores, t_start)
    finally:
        scores.backend.close()


def _compare(args: argparse.Namespace, cfg: StudyConfig, scores: ToyScores, t_start: float) -> int:
    """Run every sampler on every seed and print the tables."""
    k = cfg.n_domains
    truth = "all examples" if args.truth_subset is None else f"{args.truth_subset} examples per domain"

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {text}", file=sys.stderr, flush=True)

    grid = simplex.grid_design(k, args.grid_step, interior=False)
    grid_values = [scores.true(w) for w in grid]
    f_mean = statistics.fmean(grid_values)
    log(f"grid of {len(grid)} mixtures on {truth}: best {max(grid_values):.4f}, mean {f_mean:.4f}")

    n_gp = args.trials or bench.CHECKPOINTS[k][-1]
    studies: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        objective = scores.subset(args.subset, seed)
        for name in args.samplers:
            n = n_gp if name in ("gp-simplex", "optuna-gp") else bench.BASELINE_FACTOR * n_gp
            t0 = time.perf_counter()
            rec, mixtures, observed = bench.run_trials(
                name, k, functools.partial(scores.score, objective), seed=seed, n_trials=n
            )
            seconds = time.perf_counter() - t0
            # gp-simplex's trials are scored on all examples too: its recommendation against the best run
            for w in (*rec.values(), *(mixtures if name == "gp-simplex" else ())):
                scores.true(w)
            studies.append(
                {"sampler": name, "seed": seed, "recommended": rec, "mixtures": mixtures, "observed": observed}
            )
            final = scores.true(rec[max(rec)])
            log(f"seed {seed} {name:<10} {len(observed)} trials in {seconds:.0f}s, f(recommended) {final:.4f}")
            if args.json:
                _write(args.json, studies, scores, f_mean)

    f_star = max(scores.known().values())
    noise = statistics.median(se for s in studies for _, se in s["observed"])

    def regret(w: Sequence[float]) -> float:
        return (f_star - scores.true(w)) / (f_star - f_mean)

    runs = []
    for s in studies:
        check = noise_check(s["observed"])
        runs.append(
            bench.Run(
                s["sampler"],
                k,
                KIND,
                round(noise, 3),
                s["seed"],
                {n: regret(w) for n, w in s["recommended"].items()},
                0.0,
                None if check is None else check.share,
                bench.best_run_regret(s["mixtures"], regret) if s["sampler"] == "gp-simplex" else None,
            )
        )
    print(
        f"\nToy world ({args.config}), K={k}, backend {cfg.backend.name}; trials scored on {args.subset} examples per "
        f"domain (median standard error {noise:.3f}: the 'noise' column), regret on {truth}; f* = {f_star:.4f} "
        f"(best known; grid best {max(grid_values):.4f}), mean f = {f_mean:.4f}; merging and scoring "
        f"{scores.seconds:.0f}s"
    )
    for line in bench.print_tables(runs, {}, print):
        print(line)
    return 0


def _write(path: Path, studies: list[dict[str, Any]], scores: ToyScores, f_mean: float) -> None:
    true = [[list(w), v] for w, v in scores.known().items()]
    path.write_text(json.dumps({"studies": studies, "true": true, "f_mean": f_mean}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
