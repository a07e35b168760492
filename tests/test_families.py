"""Model families: detection from config.json, per-family exclusions in the config, and a tiny
InternVL (Hugging Face format, random weights, built locally) merged with a LoRA and a full expert."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dmo_search.config import ConfigError, StudyConfig, parse_config
from dmo_search.experts import load_expert_set
from dmo_search.families import FAMILY_EXCLUSIONS, detect_family
from dmo_search.merge import InPlaceMerger, is_excluded
from dmo_search.merge_methods import MergeMethod
from dmo_search.models import load_model

IMAGE_TOKEN = 95


def _write_config(path: Path, model_type: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


def _cfg(base: Path, merge: dict[str, object] | None = None) -> StudyConfig:
    raw: dict[str, object] = {
        "study_name": "s",
        "base_model": str(base),
        "experts": [{"name": "lora", "path": "lora", "kind": "lora"}, {"name": "full", "path": "full", "kind": "full"}],
        "objective": {"validation": {"a": "a.jsonl"}},
    }
    if merge is not None:
        raw["merge"] = merge
    return parse_config(raw, base_dir=base.parent)


def test_detect_family(tmp_path: Path) -> None:
    assert detect_family(_write_config(tmp_path / "q", "qwen2_vl")) == "qwen2_vl"
    assert detect_family(_write_config(tmp_path / "q25", "qwen2_5_vl")) == "qwen2_vl"
    assert detect_family(_write_config(tmp_path / "i", "internvl")) == "internvl"
    assert detect_family(_write_config(tmp_path / "l", "llama")) == "generic"
    assert detect_family(tmp_path / "missing") == "generic"
    with pytest.raises(ValueError, match=r"InternVL's own format.*convert_internvl_weights_to_hf"):
        detect_family(_write_config(tmp_path / "native", "internvl_chat"))


def test_config_takes_the_family_defaults_unless_set(tmp_path: Path) -> None:
    cfg = _cfg(_write_config(tmp_path / "i", "internvl"))
    assert (tuple(cfg.merge.exclude_lora), tuple(cfg.merge.exclude_full)) == FAMILY_EXCLUSIONS["internvl"]
    cfg = _cfg(_write_config(tmp_path / "q", "qwen2_vl"), {"method": "ties"})
    assert (tuple(cfg.merge.exclude_lora), tuple(cfg.merge.exclude_full)) == FAMILY_EXCLUSIONS["qwen2_vl"]
    assert cfg.merge.method == "ties"
    cfg = _cfg(tmp_path / "i", {"exclude_lora": ["x"]})
    assert cfg.merge.exclude_lora == ["x"] and tuple(cfg.merge.exclude_full) == FAMILY_EXCLUSIONS["internvl"][1]
    # stored explicitly, so a config read back from the study DB means the same
    again = parse_config(json.loads(cfg.to_json()))
    assert again.merge == cfg.merge
    with pytest.raises(ConfigError, match="InternVL's own format"):
        _cfg(_write_config(tmp_path / "native", "internvl_chat"))


# ------------------------------------------------------------------------------- tiny InternVL
@dataclass(frozen=True)
class TinyInternVL:
    base: Path
    lora: Path
    full: Path


def build_tiny_internvl(root: Path, *, seed: int = 0) -> TinyInternVL:
    """InternVL3.5-shaped (Qwen3 language model, InternViT tower, MLP projector), Hugging Face format."""
    from peft import LoraConfig, get_peft_model
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = InternVLConfig(
        text_config=dict(
            model_type="qwen3",
            vocab_size=96,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=32,
            max_position_embeddings=128,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=[28, 28],
            patch_size=[14, 14],
        ),
        image_token_id=IMAGE_TOKEN,
    )
    base = InternVLForConditionalGeneration(cfg)
    base.save_pretrained(root / "base")
    # LoRA on every attention projection, the vision tower's included: exclusions must keep those at base.
    lcfg = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    pm = get_peft_model(InternVLForConditionalGeneration.from_pretrained(root / "base"), lcfg)
    pm.save_pretrained(str(root / "lora"))
    full = InternVLForConditionalGeneration.from_pretrained(root / "base")
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.05 * torch.randn_like(p))
    full.save_pretrained(root / "full")
    return TinyInternVL(root / "base", root / "lora", root / "full")


@pytest.fixture(scope="module")
def tiny_internvl(tmp_path_factory: pytest.TempPathFactory) -> TinyInternVL:
    return build_tiny_internvl(tmp_path_factory.mktemp("tiny_internvl"))


def _forward(model: torch.nn.Module) -> torch.Tensor:
    """Logits for a prompt holding one image (28x28 -> 4 patches -> 1 token after the pixel shuffle)."""
    ids = torch.tensor([[1, 2, IMAGE_TOKEN, 3, 4]])
    pixels = torch.linspace(-1, 1, 3 * 28 * 28).reshape(1, 3, 28, 28)
    with torch.no_grad():
        out: torch.Tensor = model(input_ids=ids, pixel_values=pixels).logits
    return out


@pytest.mark.parametrize("method", ["linear", "ties"])
def test_tiny_internvl_merge(tiny_internvl: TinyInternVL, method: str) -> None:
    t = tiny_internvl
    cfg = _cfg(t.base, {"method": method})
    assert detect_family(t.base) == "internvl"
    model = load_model(t.base)
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    experts = load_expert_set(model, t.base, cfg.experts)
    assert any("vision_tower" in n for n in experts.experts[0].deltas)  # the adapter does touch the tower
    mg = InPlaceMerger(
        model,
        experts,
        exclude_lora=cfg.merge.exclude_lora,
        exclude_full=cfg.merge.exclude_full,
        method=MergeMethod.from_config(cfg.merge),
    )
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits0 = _forward(model)

    mg.apply([1.0, 0.0])  # the LoRA expert alone: only the language model's linear layers move
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, base[n])}
    assert moved and all(".language_model." in n and n.endswith("_proj.weight") for n in moved)
    assert not torch.allclose(_forward(model), logits0)

    mg.apply([0.0, 1.0])  # the full expert: everything but the vision tower
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, base[n])}
    assert not any("vision_tower" in n for n in moved)
    assert any("multi_modal_projector" in n for n in moved) and any("norm" in n for n in moved)
    assert all(not is_excluded(n, cfg.merge.exclude_full) for n in moved)

    mg.restore()
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())
    assert torch.equal(_forward(model), logits0)
