"""Trials per minute of a worker that claims and scores q trials at once (``worker.batch_size``) vs
one trial at a time, side by side in one run on the same study setup.

The whole trial loop is timed (claim, gp-simplex proposal, merge, scoring, tell; ``run_trials``), on
the study's LoRA experts (at least 2) with ``--objective`` ``exact_match`` (greedy answers, the default)
or ``loglik`` (answer log-likelihoods, prompt log-probs only):

  (1) lora, batch q : ONE vLLM engine in ``lora`` mode; a batch is one ``generate_many`` (or
                      ``loglikelihood_many``) call per domain (q adapters of rank sum(r_i) in one batch)
  (2) lora, batch 1 : the same engine, one adapter per trial
  (3) dense, batch q: ONE vLLM engine in ``dense`` mode (the in-place weight swap, the default on CPU
                      where vLLM's LoRA kernels are slow); a batch's mixtures are scored one after
                      another, but proposed together (one GP fit per batch)
  (4) dense, batch 1: the same engine, one trial at a time

Each row is a fresh SQLite study of ``--trials`` trials; the engines start once, outside the timing.

    .venv/bin/python benchmarks/batch_worker.py [--config studies/toy-world/toy.yaml] [--trials 12]
        [--q 4] [--subset 8] [--objective exact_match|loglik] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from dmo_search.config import StudyConfig, load_config


def study_config(
    cfg: StudyConfig,
    out: Path,
    name: str,
    *,
    mode: str,
    batch: int,
    trials: int,
    subset: int,
    objective: str = "exact_match",
) -> StudyConfig:
    """``cfg`` with its LoRA experts only, a vLLM backend in ``mode``, ``objective`` scored on ``subset``
    examples per domain, a fresh SQLite DB under ``out``."""
    data = json.loads(cfg.model_dump_json())
    data["experts"] = [e for e in data["experts"] if e["kind"] == "lora"]
    if len(data["experts"]) < 2:
        raise SystemExit(f"{name}: the config has fewer than 2 LoRA experts; the lora rows need them")
    data.update(study_name=name, storage=f"sqlite:///{out / (name + '.db')}")
    data["backend"].update(name="vllm", mode=mode, dtype="float32")
    data["objective"].update(type=objective, subset_size=subset)
    data["objective"]["fidelities"] = None
    data["search"].update(sampler="gp-simplex", n_trials=trials, designs=[], constraints=None)
    data["worker"]["batch_size"] = batch
    return StudyConfig.model_validate(data)


def run_row(engine: Any, cfg: StudyConfig) -> dict[str, Any]:
    """Run ``cfg``'s study to its budget on ``engine``; wall seconds and the trials' mean eval seconds."""
    from dmo_search.objectives import make_objective
    from dmo_search.study import prepare_study
    from dmo_search.worker import run_trials

    objective = make_objective(cfg.objective)
    study = prepare_study(cfg)
    t0 = time.perf_counter()
    report = run_trials(study, cfg, engine, objective)
    wall = time.perf_counter() - t0
    trials = study.get_trials(deepcopy=False)
    evals = [t.user_attrs.get("eval_seconds", 0.0) + t.user_attrs.get("merge_seconds", 0.0) for t in trials]
    return {
        "batch_size": cfg.worker.batch_size,
        "completed": report.completed,
        "failed": report.failed,
        "wall_s": wall,
        "per_trial_s": wall / max(report.completed, 1),
        "score_s_per_trial": sum(evals) / max(len(evals), 1),
        "best": max((t.value for t in trials if t.value is not None), default=None),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="studies/toy-world/toy.yaml", help="study config (default: the toy world)")
    ap.add_argument("--trials", type=int, default=12, help="trials per row (default 12)")
    ap.add_argument("--q", type=int, default=4, help="trials per batch in row (1) (default 4)")
    ap.add_argument("--subset", type=int, default=8, help="validation examples per domain (default 8)")
    ap.add_argument(
        "--objective",
        choices=("exact_match", "loglik"),
        default="exact_match",
        help="objective.type (default exact_match)",
    )
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args()

    from dmo_search.backends.vllm import VLLMBackend

    base = load_config(args.config)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dmo-batch-bench-") as tmp:
        out = Path(tmp)

        def cfg_for(name: str, mode: str, batch: int) -> StudyConfig:
            return study_config(
                base,
                out,
                name,
                mode=mode,
                batch=batch,
                trials=args.trials,
                subset=args.subset,
                objective=args.objective,
            )

        for mode, batches in (("lora", (args.q, 1)), ("dense", (args.q, 1))):
            t0 = time.perf_counter()
            engine = VLLMBackend(cfg_for(f"{mode}-start", mode, 1), max_loras=max(4, args.q))
            start_s = time.perf_counter() - t0
            try:
                for b in batches:
                    name = f"{mode}-batch{b}"
                    if not args.json:
                        print(f"{name}: {args.trials} trials ...", flush=True)
                    rows[name] = {**run_row(engine, cfg_for(name, mode, b)), "engine_start_s": start_s}
            finally:
                engine.close()
    batch, single = rows[f"lora-batch{args.q}"], rows["lora-batch1"]
    dense_batch, dense = rows[f"dense-batch{args.q}"], rows["dense-batch1"]
    result = {
        "config": args.config,
        "trials": args.trials,
        "q": args.q,
        "subset": args.subset,
        "objective": args.objective,
        "rows": rows,
        "ratios": {
            "lora_batch_over_lora_single_trials_per_s": single["per_trial_s"] / batch["per_trial_s"],
            "dense_batch_over_dense_single_trials_per_s": dense["per_trial_s"] / dense_batch["per_trial_s"],
            "lora_batch_over_dense_single_trials_per_s": dense["per_trial_s"] / batch["per_trial_s"],
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"\nper trial, whole loop (seconds; {args.trials} trials, {args.subset} examples per domain, "
        f"objective {args.objective})"
    )
    for name, r in rows.items():
        print(
            f"  {name:<12} {r['per_trial_s']:6.2f} s/trial  (scoring {r['score_s_per_trial']:.2f}; "
            f"{r['completed']} complete, {r['failed']} failed; best {r['best']:.4f}; engine start "
            f"{r['engine_start_s']:.0f} s, not counted)"
        )
    rt = result["ratios"]
    print("ratios (trials per second)")
    print(f"  lora batch {args.q} / lora batch 1:   {rt['lora_batch_over_lora_single_trials_per_s']:.2f}x")
    print(f"  dense batch {args.q} / dense batch 1: {rt['dense_batch_over_dense_single_trials_per_s']:.2f}x")
    print(f"  lora batch {args.q} / dense batch 1:  {rt['lora_batch_over_dense_single_trials_per_s']:.2f}x")


if __name__ == "__main__":
    main()
