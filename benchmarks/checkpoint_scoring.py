"""Scoring N trained checkpoints (a promotion's SFT runs): one backend with each checkpoint loaded in
place (``CheckpointScorer``: vLLM in dense mode, or ``--backend hf``) vs a new backend started per
checkpoint (the path before), side by side in one run, same checkpoints, same objective.

The checkpoints are the world's own full models (its base and each full fine-tune), cycled to ``--n``;
what matters is that they are full checkpoints of the base's architecture, as SFT runs are.

    .venv/bin/python benchmarks/checkpoint_scoring.py [--config studies/toy-world/toy.yaml] [--n 4]
        [--subset 20] [--backend vllm|hf] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from dmo_search.config import StudyConfig, load_config


def bench_config(cfg: StudyConfig, subset: int, backend: str = "vllm") -> StudyConfig:
    """``cfg`` on a float32 ``backend`` (vLLM: dense mode), ``subset`` validation examples per domain."""
    data = json.loads(cfg.model_dump_json())
    data["backend"].update(name=backend, mode="dense", dtype="float32")
    data["objective"].update(subset_size=subset, fidelities=None)
    return StudyConfig.model_validate(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="studies/toy-world/toy.yaml", help="study config (default: the toy world)")
    ap.add_argument("--n", type=int, default=4, help="checkpoints to score (default 4)")
    ap.add_argument("--subset", type=int, default=20, help="validation examples per domain (default 20)")
    ap.add_argument("--backend", choices=("vllm", "hf"), default="vllm", help="backend.name (default vllm)")
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args()

    from dmo_search.objectives import make_objective
    from dmo_search.promote.score import CheckpointScorer

    cfg = bench_config(load_config(args.config), args.subset, args.backend)
    pool = [Path(cfg.base_model)] + [Path(e.path) for e in cfg.experts if e.kind == "full"]
    ckpts = [pool[i % len(pool)] for i in range(args.n)]
    objective = make_objective(cfg.objective)
    with CheckpointScorer(cfg) as warm:  # one-time costs (imports, first loads) fall outside both rows
        warm.score(ckpts[0], [objective])
    rows: dict[str, dict[str, Any]] = {}
    for name in ("one backend, in place", "backend per checkpoint"):
        if not args.json:
            print(f"{name}: {args.n} checkpoints ...", flush=True)
        values, loads = [], []
        t0 = time.perf_counter()
        scorer = CheckpointScorer(cfg)
        try:
            for c in ckpts:
                if name == "backend per checkpoint":
                    scorer.close()  # the next score starts a new engine, as each promotion run did
                values.append(scorer.score(c, [objective])[0].value)
                loads.append(scorer.last_load)
        finally:
            scorer.close()
        rows[name] = {"seconds": time.perf_counter() - t0, "starts": scorer.starts, "values": values, "loads": loads}
    a, b = rows["one backend, in place"], rows["backend per checkpoint"]
    result = {
        "config": args.config,
        "n": args.n,
        "subset": args.subset,
        "backend": args.backend,
        "rows": rows,
        "same_scores": a["values"] == b["values"],
        "speedup": b["seconds"] / a["seconds"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"\n{args.n} checkpoints, {args.subset} examples per domain ({args.backend}, float32)")
    for name, r in rows.items():
        print(f"  {name:<23} {r['seconds']:7.1f} s  ({r['starts']} backend start(s); {r['loads'][-1]})")
    print(f"same scores: {result['same_scores']}")
    print(f"one backend, in place / backend per checkpoint: {result['speedup']:.2f}x faster")


if __name__ == "__main__":
    main()
