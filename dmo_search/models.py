"""Loading base and expert checkpoints with transformers, text-only or vision-language alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["architecture_mismatch", "is_vision_language", "load_model"]


def is_vision_language(path: str | Path) -> bool:
    """True when the checkpoint at ``path`` is a vision-language model (its config has a ``vision_config``)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.is_file():
        return False
    return "vision_config" in json.loads(cfg_file.read_text())


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32) -> Any:
    """The transformers model at ``path``: ``AutoModelForImageTextToText`` for vision-language
    checkpoints (Qwen2-VL, InternVL, ...), ``AutoModelForCausalLM`` otherwise; in eval mode."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    cls: Any = AutoModelForImageTextToText if is_vision_language(path) else AutoModelForCausalLM
    model = cls.from_pretrained(str(path), dtype=dtype)
    model.eval()
    return model


# Config fields that fix the shapes and names of a checkpoint's tensors (top level and nested configs).
_SHAPE_KEYS = (
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
)


def architecture_mismatch(a: str | Path, b: str | Path) -> str | None:
    """The first config field in which checkpoints ``a`` and ``b`` differ in shape (``"hidden_size: 128 vs
    256"``, ``"text_config.vocab_size: ..."``), or None when one's tensors fit the other's model."""

    def fields(path: str | Path) -> dict[str, Any]:
        cfg = json.loads((Path(path) / "config.json").read_text())
        out = {k: cfg.get(k) for k in _SHAPE_KEYS}
        for sub in ("text_config", "vision_config"):
            if isinstance(cfg.get(sub), dict):
                out.update({f"{sub}.{k}": cfg[sub].get(k) for k in _SHAPE_KEYS})
        return out

    fa, fb = fields(a), fields(b)
    return next((f"{k}: {fa[k]} vs {fb.get(k)}" for k in fa if fa[k] != fb.get(k)), None)
