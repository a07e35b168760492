"""Per-candidate cost of changing the scored model: in-memory merge vs. the paper's disk path.

Side by side in one run, for each model:
  ours  : InPlaceMerger.apply(w) into the live model (+ restore, to show the full cycle)
  paper : merge out of place, save_pretrained to disk, from_pretrained into a fresh model
Both use the same experts (3 LoRA experts of rank 16 on every linear layer of the language model).

Models: the toy world's base (built by `dmo-search toy build`, default studies/toy-world) and a
locally built Qwen2-0.5B-shaped model (random weights; ~494M parameters, bf16), nothing downloaded.

    .venv/bin/python benchmarks/merge_swap.py [--toy studies/toy-world] [--candidates 3] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dmo_search.config import DEFAULT_EXCLUDE_FULL, DEFAULT_EXCLUDE_LORA, ExpertConfig
from dmo_search.experts import load_expert_set
from dmo_search.merge import InPlaceMerger, merged_state
from dmo_search.simplex import dirichlet_design

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_lora_experts(base_dir: Path, out: Path, n: int, dtype: torch.dtype) -> list[Path]:
    """n random LoRA experts (r=16, alpha=32) of the model at base_dir."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(100 + i)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
        pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False))
        d = out / f"lora{i}"
        pm.save_pretrained(str(d))
        paths.append(d)
        del pm, model
    return paths


def build_large(out: Path) -> Path:
    """A Qwen2-0.5B-shaped model with random weights, saved in bf16."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cpu"):
        # type-ignore: transformers wraps PreTrainedModel.to, and mypy reads the wrapper's signature
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)  # type: ignore[arg-type]
    d = out / "qwen2-0.5b-shape"
    model.save_pretrained(d)
    return d


def bench(name: str, base_dir: Path, expert_dirs: list[Path], dtype: torch.dtype, n_cand: int, work: Path) -> dict:
    from transformers import AutoModelForCausalLM

    experts = [ExpertConfig(name=f"e{i}", path=p, kind="lora") for i, p in enumerate(expert_dirs)]
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    es = load_expert_set(model, base_dir, experts)
    model = model.to(dtype)  # type: ignore[arg-type]  # as in build_large
    n_params = sum(p.numel() for p in model.parameters())
    merger = InPlaceMerger(model, es, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL)
    base_sd = {n: p.detach().clone() for n, p in model.named_parameters()}
    cands = dirichlet_design(len(experts), n_cand, seed=7)

    ours_apply, ours_restore = [], []
    for w in cands:
        t0 = time.perf_counter()
        merger.apply(w)
        t1 = time.perf_counter()
        merger.restore()
        ours_apply.append(t1 - t0)
        ours_restore.append(time.perf_counter() - t1)

    paper_merge, paper_write, paper_load = [], [], []
    for i, w in enumerate(cands):
        t0 = time.perf_counter()
        sd = merged_state(base_sd, es, w, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL)
        sd = {k: v.to(dtype) for k, v in sd.items()}
        model.load_state_dict(sd, strict=False)
        t1 = time.perf_counter()
        out = work / f"{name}-cand{i}"
        model.save_pretrained(out)
        t2 = time.perf_counter()
        fresh = AutoModelForCausalLM.from_pretrained(out, dtype=dtype)
        t3 = time.perf_counter()
        paper_merge.append(t1 - t0)
        paper_write.append(t2 - t1)
        paper_load.append(t3 - t2)
        del fresh, sd
        merger.restore()
    med = statistics.median
    ours = med(ours_apply) + med(ours_restore)
    paper = med(paper_merge) + med(paper_write) + med(paper_load)
    return {
        "model": name,
        "params_M": round(n_params / 1e6, 1),
        "dtype": str(dtype).removeprefix("torch."),
        "ours_apply_s": med(ours_apply),
        "ours_restore_s": med(ours_restore),
        "paper_merge_s": med(paper_merge),
        "paper_write_s": med(paper_write),
        "paper_load_s": med(paper_load),
        "ours_total_s": ours,
        "paper_total_s": paper,
        "speedup": paper / ours,
        "speedup_vs_disk_only": (med(paper_write) + med(paper_load)) / med(ours_apply),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", default="studies/toy-world", help="toy world folder (dmo-search toy build)")
    ap.add_argument("--candidates", type=int, default=3)
    ap.add_argument("--skip-large", action="store_true", help="only the toy model")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2, the CI machine's cores)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="merge_swap_") as tmp:
        work = Path(tmp)
        toy = Path(args.toy)
        if (toy / "base" / "config.json").is_file():
            experts = make_lora_experts(toy / "base", work / "toy", 3, torch.float32)
            rows.append(bench("toy", toy / "base", experts, torch.float32, args.candidates, work))
        else:
            print(f"(no toy world at {toy}: run `dmo-search toy build {toy}`; skipping the toy model)")
        if not args.skip_large:
            large = build_large(work)
            experts = make_lora_experts(large, work / "large", 3, torch.bfloat16)
            rows.append(bench("qwen2-0.5b-shape", large, experts, torch.bfloat16, args.candidates, work))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"\nper candidate, median of {args.candidates} (3 LoRA experts, r=16, all linear layers)")
    hdr = f"{'model':<18}{'params':>8}{'dtype':>10}{'ours apply':>12}{'restore':>9}"
    hdr += f"{'paper merge':>13}{'write':>8}{'load':>8}{'ours':>9}{'paper':>9}{'ratio':>8}"
    print(hdr)
    for r in rows:
        print(
            f"{r['model']:<18}{r['params_M']:>7}M{r['dtype']:>10}{r['ours_apply_s']:>11.3f}s{r['ours_restore_s']:>8.3f}s"
            f"{r['paper_merge_s']:>12.3f}s{r['paper_write_s']:>7.2f}s{r['paper_load_s']:>7.2f}s"
            f"{r['ours_total_s']:>8.3f}s{r['paper_total_s']:>8.2f}s{r['speedup']:>7.1f}x"
        )
    print("ratio = paper (merge + write + load) / ours (in-place apply + restore)")


if __name__ == "__main__":
    main()
