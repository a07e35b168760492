"""Per-candidate merge time of each merge method, as a ratio to the linear merge.

For the study config's base and experts (default: the toy world, `studies/toy-world/toy.yaml`), one
transformers model and one expert load; then, per method, `InPlaceMerger.apply(w)` over the same
Dirichlet candidates. Prints milliseconds per candidate and the ratio to `linear`. WUDI's `steps`
can be lowered (`--wudi-steps`) to keep CPU runs short; the ratio for the paper's 300 steps scales
about linearly with steps.

    .venv/bin/python benchmarks/merge_methods.py [--config studies/toy-world/toy.yaml] [--candidates 3]
        [--wudi-steps 300] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dmo_search.config import load_config
from dmo_search.experts import load_expert_set
from dmo_search.merge import InPlaceMerger
from dmo_search.merge_methods import MergeMethod
from dmo_search.merge_params import METHOD_PARAMS
from dmo_search.models import load_model
from dmo_search.simplex import dirichlet_design


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="studies/toy-world/toy.yaml")
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--wudi-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    model = load_model(cfg.base_model)
    experts = load_expert_set(model, cfg.base_model, cfg.experts)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"base {cfg.base_model} ({n_params / 1e6:.1f}M parameters), {len(experts)} experts, "
        f"{args.candidates} candidates, {torch.get_num_threads()} threads"
    )
    cands = dirichlet_design(len(experts), args.candidates, seed=0)
    rows: list[tuple[str, float]] = []
    for name in METHOD_PARAMS:
        params = {"steps": args.wudi_steps} if name.startswith("wudi") else None
        mg = InPlaceMerger(
            model,
            experts,
            exclude_lora=cfg.merge.exclude_lora,
            exclude_full=cfg.merge.exclude_full,
            method=MergeMethod.create(name, params),
        )
        times = []
        for w in cands:
            t0 = time.perf_counter()
            mg.apply(w)
            times.append(time.perf_counter() - t0)
        mg.restore()
        rows.append((name, statistics.median(times)))
    lin = rows[0][1]
    print(f"{'method':<12} {'ms/candidate':>14} {'x linear':>10}")
    for name, t in rows:
        print(f"{name:<12} {1e3 * t:>14.1f} {t / lin:>10.1f}")


if __name__ == "__main__":
    main()
