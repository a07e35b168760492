"""Per-candidate cost of scoring merged models with vLLM: the paper's restart path vs a live engine.

Side by side in one run, on the same candidates and the same scoring (greedy exact match on the
study's validation subsets):

  (a) paper   : merge in memory, save_pretrained to disk, start a NEW vLLM engine on it, score, stop it
  (b) in-place: ONE live engine (``VLLMBackend``, dense mode); per candidate only w crosses
                ``collective_rpc``, the worker writes theta(w) through vLLM's weight loading, score
  (c) LoRA    : ONE live engine with LoRA enabled (the study's LoRA experts only); each candidate is one
                adapter of rank sum(r_i) written to tmpfs; q candidates scored in ONE ``generate`` call,
                compared with one adapter at a time

Only one vLLM engine is alive at any time. The study config defaults to the toy world
(``dmo-search toy build``); (c) needs at least 2 LoRA experts in it.

    /work/vllm-venv/bin/python benchmarks/vllm_swap.py [--config studies/toy-world/toy.yaml]
        [--candidates 3] [--q 4] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from dmo_search.config import StudyConfig, load_config
from dmo_search.objectives.base import aggregate
from dmo_search.objectives.data import ValidationSet, load_validation_set
from dmo_search.objectives.metrics import exact_match
from dmo_search.simplex import dirichlet_design

Generate = Callable[[list[str]], list[str]]


def _with_backend(cfg: StudyConfig, *, lora_only: bool = False, **backend: Any) -> StudyConfig:
    data = json.loads(cfg.model_dump_json())
    data["backend"] = {**data["backend"], **backend}
    if lora_only:
        data["experts"] = [e for e in data["experts"] if e["kind"] == "lora"]
        data["search"]["designs"] = []
    return StudyConfig.model_validate(data)


class Scorer:
    """The study's exact-match objective over its fixed subsets, for any greedy ``generate``."""

    def __init__(self, cfg: StudyConfig, tokenizer: Any) -> None:
        o = cfg.objective
        self.sets: dict[str, ValidationSet] = {
            d: load_validation_set(d, p, o.subset_size, o.subset_seed) for d, p in o.validation.items()
        }
        self.weights = o.aggregation if isinstance(o.aggregation, dict) else None
        self.max_new_tokens = o.max_new_tokens

        def fmt(p: str) -> str:
            if not o.chat_template:
                return p
            out: str = tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            return out

        self.prompts = [fmt(e.prompt) for vs in self.sets.values() for e in vs.examples]

    def score(self, outputs: Sequence[str]) -> float:
        """The aggregate score of outputs given in ``self.prompts`` order."""
        scores: dict[str, float] = {}
        start = 0
        for d, vs in self.sets.items():
            n = len(vs.examples)
            outs = outputs[start : start + n]
            start += n
            scores[d] = sum(exact_match(o, e.answers) for o, e in zip(outs, vs.examples, strict=True)) / n
        return aggregate(scores, self.weights)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def paper_path(cfg: StudyConfig, mixtures: list[list[float]], scorer: Scorer) -> list[dict[str, float]]:
    """(a): per candidate, merge, write the merged model to disk, start a new engine, score, stop."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from dmo_search.experts import load_expert_set
    from dmo_search.merge import InPlaceMerger

    tok: Any = AutoTokenizer.from_pretrained(str(cfg.base_model))
    model: Any = AutoModelForCausalLM.from_pretrained(str(cfg.base_model), dtype=torch.float32)
    merger = InPlaceMerger(
        model,
        load_expert_set(model, cfg.base_model, cfg.experts),
        exclude_lora=cfg.merge.exclude_lora,
        exclude_full=cfg.merge.exclude_full,
    )
    ids = tok(scorer.prompts, add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=0.0, max_tokens=scorer.max_new_tokens, detokenize=False)
    rows = []
    for w in mixtures:
        out_dir = Path(tempfile.mkdtemp(prefix="dmo-paper-"))
        try:
            _, merge_s = _timed(partial(merger.apply, w))

            def save(d: Path = out_dir) -> None:
                model.save_pretrained(d)
                tok.save_pretrained(d)

            _, save_s = _timed(save)
            llm, start_s = _timed(
                partial(
                    LLM,
                    model=str(out_dir),
                    dtype=cfg.backend.dtype,
                    enforce_eager=True,
                    kv_cache_memory_bytes=1 << 30,
                    seed=0,
                )
            )

            def gen(llm: Any = llm) -> list[str]:
                outs = llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids], params, use_tqdm=False)
                texts = tok.batch_decode([list(o.outputs[0].token_ids) for o in outs], skip_special_tokens=True)
                return [t.strip() for t in texts]

            outputs, score_s = _timed(gen)

            def stop(llm: Any = llm) -> None:
                llm.llm_engine.engine_core.shutdown()
                gc.collect()

            _, stop_s = _timed(stop)
            del llm
            rows.append(
                {
                    "merge_s": merge_s,
                    "save_s": save_s,
                    "start_s": start_s,
                    "stop_s": stop_s,
                    "score_s": score_s,
                    "score": scorer.score(outputs),
                }
            )
            print(f"  (a) w={_fmt(w)} {rows[-1]}", flush=True)
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
    merger.restore()
    return rows


def inplace_path(
    cfg: StudyConfig, mixtures: list[list[float]], scorer: Scorer
) -> tuple[float, float, list[dict[str, float]]]:
    """(b): one live dense engine; per candidate an in-place swap, then scoring.

    The engine's first swap (to the uniform mixture, not a candidate) is timed apart: it allocates the
    merge buffers once per engine start, like the engine start itself, and a study pays it once.
    """
    from dmo_search.backends.vllm import VLLMBackend

    vb, start_s = _timed(lambda: VLLMBackend(_with_backend(cfg, name="vllm", mode="dense")))
    rows = []
    try:
        _, first_s = _timed(partial(vb.set_mixture, [1.0 / cfg.n_domains] * cfg.n_domains))
        print(f"  (b) first swap of the engine (uniform mixture): {first_s:.4f}s", flush=True)
        for w in mixtures:
            _, swap_s = _timed(partial(vb.set_mixture, w))
            outputs, score_s = _timed(lambda: vb.generate(scorer.prompts, max_new_tokens=scorer.max_new_tokens))
            rows.append({"swap_s": swap_s, **{f"worker_{k}": v for k, v in vb.last_swap.items()}, "score_s": score_s})
            rows[-1]["score"] = scorer.score(outputs)
            print(f"  (b) w={_fmt(w)} {rows[-1]}", flush=True)
    finally:
        vb.close()
    return start_s, first_s, rows


def lora_path(cfg: StudyConfig, mixtures: list[list[float]], scorer: Scorer) -> dict[str, Any]:
    """(c): LoRA experts only; q candidates in one generate vs one adapter at a time."""
    from dmo_search.backends.vllm import VLLMBackend

    q = len(mixtures)
    vb, start_s = _timed(lambda: VLLMBackend(_with_backend(cfg, lora_only=True, name="vllm", mode="lora"), max_loras=q))
    try:
        n = scorer.max_new_tokens
        vb.set_mixture(mixtures[0])
        vb.generate(scorer.prompts[:4], max_new_tokens=n)  # warm-up: first LoRA load
        single = []
        for w in mixtures:
            _, swap_s = _timed(partial(vb.set_mixture, w))
            _, score_s = _timed(lambda: vb.generate(scorer.prompts, max_new_tokens=n))
            single.append({"swap_s": swap_s, "score_s": score_s})
        _, batch_s = _timed(lambda: vb.generate_many(mixtures, scorer.prompts, max_new_tokens=n))
        rank, max_rank = (vb.lora.rank, vb.lora.max_lora_rank) if vb.lora else (0, 0)
    finally:
        vb.close()
    per_single = statistics.mean(r["swap_s"] + r["score_s"] for r in single)
    return {
        "start_s": start_s,
        "rank": rank,
        "max_lora_rank": max_rank,
        "q": q,
        "single_per_candidate_s": per_single,
        "single_swap_s": statistics.mean(r["swap_s"] for r in single),
        "batched_total_s": batch_s,
        "batched_per_candidate_s": batch_s / q,
        "throughput_ratio": per_single / (batch_s / q),
    }


def _fmt(w: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.2f}" for x in w) + ")"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="studies/toy-world/toy.yaml", help="study config (default: the toy world)")
    ap.add_argument("--candidates", type=int, default=3, help="candidates timed on paths (a) and (b)")
    ap.add_argument("--q", type=int, default=4, help="candidates per batch on path (c)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    cfg = _with_backend(load_config(args.config), dtype="float32")
    scorer = Scorer(cfg, AutoTokenizer.from_pretrained(str(cfg.base_model)))
    mixtures = dirichlet_design(cfg.n_domains, args.candidates, seed=args.seed)
    print(f"{len(scorer.prompts)} prompts, {cfg.n_domains} experts, {args.candidates} candidates", flush=True)

    start_b, first_b, rows_b = inplace_path(cfg, mixtures, scorer)
    rows_a = paper_path(cfg, mixtures, scorer)
    n_lora = sum(e.kind == "lora" for e in cfg.experts)
    lora = lora_path(cfg, dirichlet_design(n_lora, args.q, seed=args.seed), scorer) if n_lora >= 2 else None

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return statistics.mean(r[key] for r in rows)

    a_over = {k: mean(rows_a, k) for k in ("merge_s", "save_s", "start_s", "stop_s")}
    a_nonscore = sum(a_over.values())
    a_score = mean(rows_a, "score_s")
    b_swap, b_score = mean(rows_b, "swap_s"), mean(rows_b, "score_s")
    same_scores = all(abs(ra["score"] - rb["score"]) <= 0.02 for ra, rb in zip(rows_a, rows_b, strict=True))
    result: dict[str, Any] = {
        "config": str(args.config),
        "n_prompts": len(scorer.prompts),
        "paper": {**a_over, "score_s": a_score, "nonscore_s": a_nonscore, "rows": rows_a},
        "inplace": {
            "engine_start_s": start_b,
            "first_swap_s": first_b,
            "swap_s": b_swap,
            "score_s": b_score,
            "rows": rows_b,
        },
        "lora": lora,
        "ratios": {
            "nonscore_paper_over_inplace": a_nonscore / b_swap,
            "overhead_share_paper": a_nonscore / (a_nonscore + a_score),
            "overhead_share_inplace": b_swap / (b_swap + b_score),
            "trial_speedup_inplace": (a_nonscore + a_score) / (b_swap + b_score),
            "lora_batched_throughput_vs_single": lora["throughput_ratio"] if lora else None,
        },
        "scores_agree_a_b": same_scores,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    r = result["ratios"]
    print("\nper candidate (mean seconds)")
    print(
        f"  (a) paper    merge {a_over['merge_s']:.3f} + save {a_over['save_s']:.3f} + engine start "
        f"{a_over['start_s']:.1f} + stop {a_over['stop_s']:.2f} = {a_nonscore:.1f} overhead; score {a_score:.2f}"
    )
    print(
        f"  (b) in-place swap {b_swap:.4f} (worker merge {mean(rows_b, 'worker_merge_s'):.4f}, load "
        f"{mean(rows_b, 'worker_load_s'):.4f}); score {b_score:.2f}; one engine start {start_b:.1f} and "
        f"its first swap {first_b:.3f}"
    )
    if lora:
        print(
            f"  (c) LoRA     rank {lora['rank']} (max_lora_rank {lora['max_lora_rank']}); single adapter: "
            f"swap {lora['single_swap_s']:.4f} + score = {lora['single_per_candidate_s']:.2f}/candidate; "
            f"q={lora['q']} in one generate: {lora['batched_total_s']:.2f} = "
            f"{lora['batched_per_candidate_s']:.2f}/candidate; engine start {lora['start_s']:.1f}"
        )
    print("ratios")
    print(f"  non-scoring time, (a) / (b):           {r['nonscore_paper_over_inplace']:.0f}x")
    print(f"  non-scoring share of a trial, (a):     {r['overhead_share_paper']:.1%}")
    print(f"  non-scoring share of a trial, (b):     {r['overhead_share_inplace']:.2%}")
    print(f"  whole trial, (a) / (b):                {r['trial_speedup_inplace']:.1f}x")
    if lora:
        ratio = r["lora_batched_throughput_vs_single"]
        print(f"  (c) per-candidate throughput, q-batch vs single adapter: {ratio:.2f}x")
    print(f"  scores of (a) and (b) agree within 0.02: {same_scores}")


if __name__ == "__main__":
    main()
