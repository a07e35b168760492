"""Throughput of the in-place merge against the memory bandwidth of the device it runs on.

Per candidate, ``InPlaceMerger.apply(w)`` reads each merged parameter's base copy and every expert's
delta and writes the parameter. The merge is memory-bound, so its yardstick is the bandwidth of a
plain device-to-device copy, measured in the same run. Side by side on one device:

  copy   : ``dst.copy_(src)`` of a large tensor: (bytes read + written) / time, the ceiling
  dense  : K full fine-tune experts (float32 task vectors on every parameter) merged into the model
  lora   : K LoRA experts (rank r on every linear layer of the language model) merged into it
  restore: ``InPlaceMerger.restore()`` (base copy -> parameters), itself a copy

For dense and lora it prints the time per candidate of the two kernel sequences of
``InPlaceMerger`` (``fused``: the first and last terms' kernels read the base and write the parameter;
``copy-based``: a float32 copy of the base, ``acc += w_i delta_i`` per term, a copy into the
parameter) and their ratio; the bytes a single fused pass would have to move (read the base and every
delta or factor, write the parameter once: the least any merge can move) and that over the fused time
as a share of the copy bandwidth; then the bytes the fused kernels actually move (see ``traffic``) and
its share, which says how close each kernel runs to the ceiling. LoRA also gets the TFLOP/s of its B@A
products. On a CPU the copy probe is a loose ceiling (one copy does not use every core's bandwidth);
the GPU figures are the meaningful ones.

Models: Qwen2-shaped with random weights, built on the device (nothing downloaded); the experts are
random tensors of the right shapes held in memory (the merge never looks at their values).

    .venv/bin/python benchmarks/merge_bandwidth.py [--device cuda] [--shape qwen2-1.5b] [--k 4] [--rank 16]
    .venv/bin/python benchmarks/merge_bandwidth.py --device cpu --shape tiny      # the CPU twin (seconds)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dmo_search.config import DEFAULT_EXCLUDE_FULL, DEFAULT_EXCLUDE_LORA
from dmo_search.experts import DenseDelta, Expert, ExpertSet, LowRankDelta
from dmo_search.merge import InPlaceMerger, is_excluded
from dmo_search.simplex import dirichlet_design

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=4096),
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936),
    "qwen2-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                       num_key_value_heads=2, vocab_size=151936),
    "qwen2-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064),
}  # fmt: skip
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings on CUDA are otherwise launch times)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)``, counting bytes read plus bytes written."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), device, repeats)
    return 2 * src.nbytes / t


def build_model(shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """A Qwen2-shaped causal LM with random weights, on ``device`` in ``dtype``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(**SHAPES[shape], max_position_embeddings=2048, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        model: torch.nn.Module = Qwen2ForCausalLM(cfg)
    return model.to(dtype).eval()


def dense_experts(model: torch.nn.Module, k: int) -> ExpertSet:
    """K full fine-tune experts: a float32 task vector for every parameter the merge touches."""
    out = []
    for i in range(k):
        g = torch.Generator(device=next(model.parameters()).device).manual_seed(i)
        deltas: dict[str, DenseDelta | LowRankDelta] = {}
        for name, p in model.named_parameters():
            if not is_excluded(name, DEFAULT_EXCLUDE_FULL):
                t = torch.empty(p.shape, dtype=torch.float32, device=p.device)
                deltas[name] = DenseDelta(t.normal_(0.0, 1e-3, generator=g))
        out.append(Expert(name=f"full{i}", kind="full", path=Path("."), deltas=deltas))
    return ExpertSet(base_path=Path("."), experts=out)


def lora_experts(model: torch.nn.Module, k: int, rank: int) -> ExpertSet:
    """K LoRA experts of rank ``rank`` (alpha = 2 r) on every linear layer of the language model."""
    out = []
    for i in range(k):
        g = torch.Generator(device=next(model.parameters()).device).manual_seed(100 + i)
        deltas: dict[str, DenseDelta | LowRankDelta] = {}
        for name, p in model.named_parameters():
            if name.endswith(".weight") and name.split(".")[-2] in LINEAR:
                a = torch.empty(rank, p.shape[1], dtype=torch.float32, device=p.device).normal_(0, 0.02, generator=g)
                b = torch.empty(p.shape[0], rank, dtype=torch.float32, device=p.device).normal_(0, 0.02, generator=g)
                deltas[name] = LowRankDelta(A=a, B=b, scale=2.0)
        out.append(Expert(name=f"lora{i}", kind="lora", path=Path("."), deltas=deltas))
    return ExpertSet(base_path=Path("."), experts=out)


def traffic(merger: InPlaceMerger) -> tuple[int, int, float]:
    """(least bytes a fused pass moves, bytes our kernel sequence moves, FLOPs of the LoRA products), for a
    mixture with every weight non-zero; the kernel sequence is ``InPlaceMerger._apply_linear``'s."""
    least = ours = 0
    flops = 0.0
    for e in merger.entries:
        n, elt = e.base.numel(), e.base.element_size()
        least += 2 * n * elt  # read the base, write the parameter
        dense = [d for _, d in e.all_terms if isinstance(d, DenseDelta)]
        lowrank = [d for _, d in e.all_terms if isinstance(d, LowRankDelta)]
        least += sum(d.tensor.nbytes for d in dense) + sum(d.A.nbytes + d.B.nbytes for d in lowrank)
        if not lowrank:  # base + w_1 d_1 -> acc, acc += w_i d_i (read acc and d_i, write acc), acc + w_T d_T -> param
            t = len(dense)
            ours += n * (2 * elt + 4) if t == 1 else n * (2 * elt + 16 + 12 * (t - 2))
            continue
        rank = sum(d.rank for d in lowrank)
        ours += 4 * n + 4 * rank * (e.base.shape[0] + e.base.shape[1])  # one product written into acc
        ours += 12 * n * len(dense) + n * (2 * elt + 4)  # dense terms into acc; base + acc -> parameter
        flops += 2.0 * e.base.shape[0] * e.base.shape[1] * rank
    return least, ours, flops


def bench(kind: str, model: torch.nn.Module, experts: ExpertSet, device: torch.device, args: Any, bw: float) -> dict:
    """Time apply and restore of one expert set on ``model``; bytes, shares of ``bw`` and FLOP rate."""
    merger = InPlaceMerger(model, experts, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL)
    cands = iter(dirichlet_design(args.k, 64, seed=7))
    default = merger.fused
    merger.fused = True
    t_fused = timed(lambda: merger.apply(next(cands)), device, args.repeats)
    w = next(cands)
    merger.apply(w)
    fused_out = [e.param.detach().clone() for e in merger.entries]
    merger.fused = False
    t_copy = timed(lambda: merger.apply(next(cands)), device, args.repeats)
    merger.apply(w)
    worst = max(
        float((a.float() - e.param.detach().float()).abs().max())
        for a, e in zip(fused_out, merger.entries, strict=True)
    )
    merger.fused = default
    t_restore = timed(merger.restore, device, args.repeats)
    least, ours, flops = traffic(merger)
    return {
        "kind": kind,
        "merged_params_M": round(sum(e.base.numel() for e in merger.entries) / 1e6, 1),
        "fused_ms": 1e3 * t_fused,
        "restore_ms": 1e3 * t_restore,
        "default": "fused" if default else "copy-based",
        "copy_based_ms": 1e3 * t_copy,
        "speedup": t_copy / t_fused,
        "max_abs_diff": worst,
        "least_GB": least / 1e9,
        "least_share": least / t_fused / bw,
        "kernel_GB": ours / 1e9,
        "kernel_share": ours / t_fused / bw,
        "tflops": flops / t_fused / 1e12,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default=None, choices=sorted(SHAPES), help="default: qwen2-1.5b on cuda, tiny on cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="the live model's dtype")
    ap.add_argument("--k", type=int, default=4, help="experts (K)")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank of each expert")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--copy-gib", type=float, default=None, help="size of the copy probe (default 2 GiB cuda, 0.25 cpu)"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = args.shape or ("qwen2-1.5b" if device.type == "cuda" else "tiny")
    gib = args.copy_gib or (2.0 if device.type == "cuda" else 0.25)
    bw = copy_bandwidth(device, int(gib * 2**30), args.repeats)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    model = build_model(shape, device, DTYPES[args.dtype])
    n_params = sum(p.numel() for p in model.parameters())
    rows = []
    for kind, make in (
        ("dense", lambda: dense_experts(model, args.k)),
        ("lora", lambda: lora_experts(model, args.k, args.rank)),
    ):
        experts = make()
        rows.append(bench(kind, model, experts, device, args, bw))
        del experts
        if device.type == "cuda":
            torch.cuda.empty_cache()
    info = {"device": name, "shape": shape, "params_M": round(n_params / 1e6, 1), "dtype": args.dtype,
            "k": args.k, "rank": args.rank, "copy_GBps": bw / 1e9}  # fmt: skip
    if args.json:
        print(json.dumps({"info": info, "rows": rows}, indent=2))
        return
    print(
        f"\n{name}: {shape} ({info['params_M']}M parameters, {args.dtype}), K={args.k} experts, LoRA rank {args.rank}"
    )
    print(f"copy bandwidth (read + write): {bw / 1e9:.0f} GB/s, {gib:g} GiB probe, median of {args.repeats}")
    hdr = f"{'kind':<7}{'merged':>9}{'fused':>10}{'copy-based':>12}{'ratio':>7}{'restore':>10}"
    hdr += f"{'least':>9}{'share':>7}{'kernel':>9}{'share':>7}"
    print(hdr + f"{'TFLOP/s':>9}")
    for r in rows:
        print(
            f"{r['kind']:<7}{r['merged_params_M']:>8.0f}M{r['fused_ms']:>8.1f}ms{r['copy_based_ms']:>10.1f}ms"
            f"{r['speedup']:>6.2f}x{r['restore_ms']:>8.1f}ms"
            f"{r['least_GB']:>7.2f}GB{r['least_share']:>7.0%}{r['kernel_GB']:>7.2f}GB{r['kernel_share']:>7.0%}"
            f"{r['tflops']:>9.2f}"
        )
    print("fused / copy-based: InPlaceMerger(fused=True / False) per candidate; ratio = copy-based / fused;")
    print(
        f"the default on {device.type} is {rows[0]['default']}. least = bytes a single fused pass must move; kernel ="
    )
    print("bytes the fused kernels move; share = those bytes / fused time / copy bandwidth (1.0 = the copy ceiling)")
    print("fused and copy-based agree to " + ", ".join(f"{r['max_abs_diff']:.1e} ({r['kind']})" for r in rows))


if __name__ == "__main__":
    main()
