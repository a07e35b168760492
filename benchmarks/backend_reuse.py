"""One backend kept across a sequence of jobs (``KeptBackend``: each job's model put into the running
backend in place) vs a backend started per job (the path before), side by side in one run, same jobs,
same objective:

  --job checkpoints : N full checkpoints scored, as a promotion scores its SFT runs (``PromotionScorer``,
                      ``serve_checkpoint``); the checkpoints are the world's base and full fine-tunes,
                      cycled to ``--n``
  --job methods     : the same mixtures scored under M merge methods, as ``report --compare-methods``
                      does (``MethodScorer``, ``set_merge``)

    .venv/bin/python benchmarks/backend_reuse.py [--job checkpoints|methods] [--backend vllm|hf]
        [--config studies/toy-world/toy.yaml] [--n 4] [--methods linear,ties,dare_linear,tsv]
        [--mixtures 4] [--subset 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmo_search.backends.keeper import KeptBackend
from dmo_search.config import StudyConfig, load_config

Job = tuple[str, Callable[[Any], list[float]]]  # (label, scores with a scorer)


def bench_config(cfg: StudyConfig, subset: int, backend: str) -> StudyConfig:
    """``cfg`` on a float32 ``backend`` (vLLM: dense mode), ``subset`` validation examples per domain."""
    data = json.loads(cfg.model_dump_json())
    data["backend"].update(name=backend, mode="dense", dtype="float32")
    data["objective"].update(subset_size=subset, fidelities=None)
    return StudyConfig.model_validate(data)


def checkpoint_jobs(cfg: StudyConfig, n: int) -> tuple[Callable[[], KeptBackend], list[Job]]:
    """Scoring ``n`` checkpoints (the base and the full fine-tunes, cycled)."""
    from dmo_search.objectives import make_objective
    from dmo_search.promote.score import PromotionScorer

    pool = [Path(cfg.base_model)] + [Path(e.path) for e in cfg.experts if e.kind == "full"]
    objective = make_objective(cfg.objective)

    def job(c: Path) -> Job:
        return c.name, lambda s: [s.score(c, [objective])[0].value]

    return lambda: PromotionScorer(cfg), [job(pool[i % len(pool)]) for i in range(n)]


def method_jobs(cfg: StudyConfig, methods: list[str], n_mixtures: int) -> tuple[Callable[[], KeptBackend], list[Job]]:
    """Scoring ``n_mixtures`` Dirichlet mixtures under each of ``methods``."""
    from dmo_search import simplex
    from dmo_search.proxies import MethodScorer

    mixtures = [list(w) for w in simplex.dirichlet_design(cfg.n_domains, n_mixtures, seed=0)]

    def job(m: str) -> Job:
        return m, lambda s: [r.value for r in s.score(m, mixtures)]

    return lambda: MethodScorer(cfg), [job(m) for m in methods]


def run_rows(make: Callable[[], KeptBackend], jobs: list[Job]) -> dict[str, dict[str, Any]]:
    """Both rows: every job on one kept backend, and every job on a backend of its own."""
    with make() as warm:  # one-time costs (imports, first loads) fall outside both rows
        jobs[0][1](warm)
    rows: dict[str, dict[str, Any]] = {}
    for name in ("one backend, in place", "backend per job"):
        values, loads = [], []
        t0 = time.perf_counter()
        with make() as kept:
            for _, run in jobs:
                if name == "backend per job":
                    kept.close()  # the next job starts a new backend, as each did before
                values.append(run(kept))
                loads.append(kept.last_load)
        rows[name] = {"seconds": time.perf_counter() - t0, "starts": kept.starts, "values": values, "loads": loads}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", choices=("checkpoints", "methods"), default="checkpoints", help="what is scored")
    ap.add_argument("--backend", choices=("vllm", "hf"), default="vllm", help="backend.name (default vllm)")
    ap.add_argument("--config", default="studies/toy-world/toy.yaml", help="study config (default: the toy world)")
    ap.add_argument("--n", type=int, default=4, help="checkpoints (--job checkpoints; default 4)")
    ap.add_argument("--methods", default="linear,ties,dare_linear,tsv", help="merge methods (--job methods)")
    ap.add_argument("--mixtures", type=int, default=4, help="mixtures per method (--job methods; default 4)")
    ap.add_argument("--subset", type=int, default=20, help="validation examples per domain (default 20)")
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args()

    cfg = bench_config(load_config(args.config), args.subset, args.backend)
    if args.job == "checkpoints":
        make, jobs = checkpoint_jobs(cfg, args.n)
    else:
        make, jobs = method_jobs(cfg, [m.strip() for m in args.methods.split(",") if m.strip()], args.mixtures)
    if not args.json:
        print(f"{len(jobs)} jobs ({args.job}) on {args.backend}, {args.subset} examples per domain ...", flush=True)
    rows = run_rows(make, jobs)
    a, b = rows["one backend, in place"], rows["backend per job"]
    result = {
        "config": args.config,
        "job": args.job,
        "jobs": [label for label, _ in jobs],
        "subset": args.subset,
        "backend": args.backend,
        "rows": rows,
        "same_scores": a["values"] == b["values"],
        "speedup": b["seconds"] / a["seconds"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name, r in rows.items():
        print(f"  {name:<22} {r['seconds']:7.1f} s  ({r['starts']} backend start(s); {r['loads'][-1]})")
    print(f"same scores: {result['same_scores']}")
    print(f"one backend, in place / backend per job: {result['speedup']:.2f}x faster")


if __name__ == "__main__":
    main()
