"""Scoring the same mixtures under M merge methods (``report --compare-methods``): one backend with the
method switched in place (``MethodScorer``: ``set_merge``, base and experts kept) vs a backend started
per method (the path before), side by side in one run, same mixtures, same objective.

    .venv/bin/python benchmarks/method_scoring.py [--config studies/toy-world/toy.yaml]
        [--methods linear,ties,dare_linear,tsv] [--mixtures 4] [--subset 20] [--backend vllm|hf] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from dmo_search.config import StudyConfig, load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="studies/toy-world/toy.yaml", help="study config (default: the toy world)")
    ap.add_argument("--methods", default="linear,ties,dare_linear,tsv", help="merge methods, comma-separated")
    ap.add_argument("--mixtures", type=int, default=4, help="mixtures scored per method (default 4)")
    ap.add_argument("--subset", type=int, default=20, help="validation examples per domain (default 20)")
    ap.add_argument("--backend", choices=("vllm", "hf"), default="vllm", help="backend.name (default vllm)")
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args()

    from dmo_search import simplex
    from dmo_search.proxies import MethodScorer

    data = json.loads(load_config(args.config).model_dump_json())
    data["backend"].update(name=args.backend, mode="dense", dtype="float32")
    data["objective"].update(subset_size=args.subset, fidelities=None)
    cfg = StudyConfig.model_validate(data)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    mixtures = [list(w) for w in simplex.dirichlet_design(cfg.n_domains, args.mixtures, seed=0)]
    with MethodScorer(cfg) as warm:  # one-time costs (imports, first loads) fall outside both rows
        warm.score(methods[0], mixtures[:1])
    rows: dict[str, dict[str, Any]] = {}
    for name in ("one backend, switched", "backend per method"):
        if not args.json:
            print(f"{name}: {len(methods)} methods x {len(mixtures)} mixtures ...", flush=True)
        values: dict[str, list[float]] = {}
        loads = []
        t0 = time.perf_counter()
        with MethodScorer(cfg) as scorer:
            for m in methods:
                if name == "backend per method":
                    scorer.close()  # the next method starts a new backend, as each did before
                values[m] = [r.value for r in scorer.score(m, mixtures)]
                loads.append(scorer.last_load)
        rows[name] = {"seconds": time.perf_counter() - t0, "starts": scorer.starts, "values": values, "loads": loads}
    a, b = rows["one backend, switched"], rows["backend per method"]
    result = {
        "config": args.config,
        "methods": methods,
        "mixtures": len(mixtures),
        "subset": args.subset,
        "backend": args.backend,
        "rows": rows,
        "same_scores": a["values"] == b["values"],
        "speedup": b["seconds"] / a["seconds"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\n{len(methods)} methods x {len(mixtures)} mixtures, {args.subset} examples per domain ({args.backend})")
    for name, r in rows.items():
        print(f"  {name:<22} {r['seconds']:7.1f} s  ({r['starts']} backend start(s); {r['loads'][-1]})")
    print(f"same scores: {result['same_scores']}")
    print(f"one backend, switched / backend per method: {result['speedup']:.2f}x faster")


if __name__ == "__main__":
    main()
