"""Loading base and expert checkpoints with transformers, text-only or vision-language alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["is_vision_language", "load_model"]


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
