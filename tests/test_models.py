"""Checkpoint helpers: which architecture a checkpoint has, and whether another's tensors fit it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmo_search.models import architecture_mismatch, is_vision_language


def _ckpt(root: Path, name: str, cfg: dict[str, Any]) -> Path:
    (root / name).mkdir()
    (root / name / "config.json").write_text(json.dumps(cfg))
    return root / name


def test_architecture_mismatch_names_the_first_field_that_differs(tmp_path: Path) -> None:
    qwen = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 128, "vocab_size": 290}
    base = _ckpt(tmp_path, "base", {**qwen, "torch_dtype": "float32", "_name_or_path": "a"})
    sft = _ckpt(tmp_path, "sft", {**qwen, "torch_dtype": "bfloat16", "_name_or_path": "b", "use_cache": False})
    wider = _ckpt(tmp_path, "wider", {**qwen, "hidden_size": 256})
    assert architecture_mismatch(base, sft) is None  # dtype, names and runtime flags do not change shapes
    assert architecture_mismatch(base, wider) == "hidden_size: 128 vs 256"
    vl = {**qwen, "vision_config": {"hidden_size": 64}, "text_config": {"vocab_size": 290}}
    a = _ckpt(tmp_path, "vl_a", vl)
    b = _ckpt(tmp_path, "vl_b", {**vl, "text_config": {"vocab_size": 300}})
    assert is_vision_language(a) and not is_vision_language(base)
    assert architecture_mismatch(a, b) == "text_config.vocab_size: 290 vs 300"
    assert architecture_mismatch(a, base) == "text_config.vocab_size: 290 vs None"  # a VLM is not its LM
