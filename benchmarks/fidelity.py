"""Multi-fidelity pruning on the toy world: trials per hour and final regret, with and without it.

For each seed, two studies run the same config (``gp-simplex``, the centre design first, the ``hf``
backend) to the same number of COMPLETE trials: one scores every candidate on the full subset, the
other with ``objective.fidelities: [small, full]`` (hopeless candidates pruned after ``small``
examples per domain). Measured per study: wall time, candidates scored (COMPLETE + PRUNED), pruned,
and the regret of its best observed mixture: ``f* - f(best)``, both scored on ALL validation examples
(200 per domain, a finer measure than the study's subset), ``f*`` the best point of a step-8 grid on
the simplex. Printed side by side with ratios.

Run: ``nice python benchmarks/fidelity.py`` (toy world at ``studies/toy-world``; ~10-15 min on 2
idle cores); ``--quick`` for one seed and fewer trials. Timings taken on a loaded machine are inflated.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from dmo_search import simplex
from dmo_search.backends.hf import HFBackend
from dmo_search.config import StudyConfig, load_config, parse_config
from dmo_search.objectives import make_objective
from dmo_search.study import prepare_study, run_study


def _variant(
    base: StudyConfig, out: Path, name: str, *, seed: int, trials: int, subset: int, small: int | None, z: float
) -> StudyConfig:
    raw = json.loads(base.model_dump_json())
    raw["study_name"] = name
    raw["storage"] = f"sqlite:///{out / (name + '.db')}"
    raw["objective"].update(subset_size=subset, fidelities=[small, subset] if small else None, prune_z=z)
    raw["search"] = {"sampler": "gp-simplex", "n_trials": trials, "seed": seed, "designs": ["centre"]}
    return parse_config(raw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", type=Path, default=Path("studies/toy-world"))
    ap.add_argument("--trials", type=int, default=12, help="COMPLETE trials per study")
    ap.add_argument("--subset", type=int, default=60, help="full subset per domain")
    ap.add_argument("--small", type=int, default=15, help="the low fidelity per domain")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--z", type=float, default=2.0, help="objective.prune_z")
    ap.add_argument("--f-star", type=float, default=None, help="f* from an earlier run (skips the grid)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 8 trials")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.trials = 1, 8
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_config(args.toy / "toy.yaml")
    backend = HFBackend(base)
    truth_cfg = json.loads(base.model_dump_json())
    truth_cfg["objective"]["subset_size"] = None
    truth = make_objective(parse_config(truth_cfg).objective)

    def true_value(w: list[float]) -> float:
        backend.set_mixture(w)
        return truth.evaluate(backend).value

    if args.f_star is None:
        t0 = time.perf_counter()
        grid = simplex.grid_design(base.n_domains, 8, interior=False)
        f_star = max(true_value(w) for w in grid)
        print(f"f* = {f_star:.4f} (best of {len(grid)} grid points on all examples, {time.perf_counter() - t0:.0f}s)")
    else:
        f_star = args.f_star

    rows: dict[str, list[dict[str, Any]]] = {"full": [], "pruned": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for mode in ("full", "pruned"):
                small = args.small if mode == "pruned" else None
                cfg = _variant(
                    base,
                    Path(tmp),
                    f"{mode}-{seed}",
                    seed=seed,
                    trials=args.trials,
                    subset=args.subset,
                    small=small,
                    z=args.z,
                )
                study = prepare_study(cfg)
                objective = make_objective(cfg.objective)
                t = time.perf_counter()
                run_study(study, cfg, backend, objective, progress=False)
                wall = time.perf_counter() - t
                done = study.get_trials(states=(TrialState.COMPLETE,))
                n_pruned = len(study.get_trials(states=(TrialState.PRUNED,)))
                best = max(done, key=lambda tr: tr.value or -1.0)
                regret = f_star - true_value(best.user_attrs["weights"])
                row = {"wall": wall, "scored": len(done) + n_pruned, "pruned": n_pruned, "regret": regret}
                row["eval"] = sum(float(tr.user_attrs.get("eval_seconds", 0.0)) for tr in study.trials)
                rows[mode].append(row)
                print(
                    f"seed {seed} {mode:6s}: {row['scored']:3d} candidates ({n_pruned} pruned) in {wall:6.1f}s "
                    f"(scoring {row['eval']:5.1f}s), regret {regret:.4f}",
                    flush=True,
                )

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[mode])

    def per_hour(mode: str, key: str) -> float:
        return statistics.median(3600 * r[key] / r["wall"] for r in rows[mode])

    print(
        f"\nmedian over {args.seeds} seed(s); {args.trials} COMPLETE trials each; "
        f"fidelities [{args.small}, {args.subset}], prune_z {args.z}"
    )
    print(f"{'':28s}{'full':>10s}{'pruned':>10s}{'ratio':>8s}")
    for label, a, b in (
        ("candidates scored / hour", per_hour("full", "scored"), per_hour("pruned", "scored")),
        (
            "COMPLETE trials / hour",
            3600 * args.trials / med("full", "wall"),
            3600 * args.trials / med("pruned", "wall"),
        ),
        (
            "scoring seconds / candidate",
            med("full", "eval") / med("full", "scored"),
            med("pruned", "eval") / med("pruned", "scored"),
        ),
        ("wall seconds per study", med("full", "wall"), med("pruned", "wall")),
        ("final regret (median)", med("full", "regret"), med("pruned", "regret")),
        ("candidates per study", med("full", "scored"), med("pruned", "scored")),
    ):
        ratio = b / a if a else float("nan")
        print(f"{label:28s}{a:10.3f}{b:10.3f}{ratio:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
