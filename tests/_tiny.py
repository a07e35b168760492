"""Tiny random Qwen2 models and experts for fast merge tests (built locally, nothing downloaded)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class TinyWorld:
    base: Path
    lora: list[Path]
    full: Path


def tiny_config(**kw: object) -> object:
    from transformers import Qwen2Config

    args: dict[str, object] = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    args.update(kw)
    return Qwen2Config(**args)


def build_tiny(root: Path, *, seed: int = 0, hidden: int = 64) -> TinyWorld:
    """Base + 2 LoRA experts (ranks 4 and 8, random non-zero B) + 1 full fine-tune expert."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(hidden_size=hidden, intermediate_size=2 * hidden)
    base = Qwen2ForCausalLM(cfg)
    base_dir = root / "base"
    base.save_pretrained(base_dir)
    loras = []
    for i, (r, alpha) in enumerate([(4, 8), (8, 32)]):
        model = Qwen2ForCausalLM.from_pretrained(base_dir)
        lcfg = LoraConfig(
            r=r,
            lora_alpha=alpha,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            init_lora_weights=False,
            lora_dropout=0.0,
        )
        pm = get_peft_model(model, lcfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.mul_(0.1 * (i + 1))
        d = root / f"lora{i}"
        pm.save_pretrained(d)
        cfg_path = d / "adapter_config.json"
        acfg = json.loads(cfg_path.read_text())
        acfg["base_model_name_or_path"] = str(base_dir)
        cfg_path.write_text(json.dumps(acfg))
        loras.append(d)
    full = Qwen2ForCausalLM.from_pretrained(base_dir)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.01 * torch.randn_like(p))
    full_dir = root / "full"
    full.save_pretrained(full_dir)
    return TinyWorld(base_dir, loras, full_dir)
