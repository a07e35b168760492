"""Experts are validated against the base: wrong base, wrong kind, missing files, unsupported LoRA."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dmo_search.config import ExpertConfig
from dmo_search.experts import ExpertError, fingerprint, load_expert_set
from tests._tiny import TinyWorld, build_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    """Experts trained from a base of another width."""
    return build_tiny(tmp_path_factory.mktemp("other"), hidden=128, seed=1)


def _base(t: TinyWorld) -> torch.nn.Module:
    from transformers import Qwen2ForCausalLM

    return Qwen2ForCausalLM.from_pretrained(t.base, dtype=torch.float32)


def test_lora_from_another_base_is_refused(tiny: TinyWorld, other: TinyWorld) -> None:
    model = _base(tiny)
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(ExpertError, match=r"(?s)expert .x.*does not fit the base.*different base"):
        load_expert_set(model, tiny.base, [ExpertConfig(name="x", path=other.lora[0], kind="lora")])
    # the base model is left as it was (no LoRA layers left behind)
    assert {n for n, _ in model.named_parameters()} == set(before)


def test_full_from_another_base_is_refused(tiny: TinyWorld, other: TinyWorld) -> None:
    with pytest.raises(ExpertError, match=r"shape .* not fine-tuned from this base"):
        load_expert_set(_base(tiny), tiny.base, [ExpertConfig(name="x", path=other.full, kind="full")])


def test_wrong_kind_and_missing_path(tiny: TinyWorld) -> None:
    m = _base(tiny)
    with pytest.raises(ExpertError, match="not a peft LoRA adapter; set kind: full"):
        load_expert_set(m, tiny.base, [ExpertConfig(name="x", path=tiny.full, kind="lora")])
    with pytest.raises(ExpertError, match="set kind: lora"):
        load_expert_set(m, tiny.base, [ExpertConfig(name="x", path=tiny.lora[0], kind="full")])
    with pytest.raises(ExpertError, match="does not exist"):
        load_expert_set(m, tiny.base, [ExpertConfig(name="x", path=tiny.base / "nope", kind="lora")])


def test_dora_and_modules_to_save_are_refused(tiny: TinyWorld, tmp_path: Path) -> None:
    for key, value, pattern in (("use_dora", True, "DoRA"), ("modules_to_save", ["lm_head"], "modules_to_save")):
        d = tmp_path / key
        shutil.copytree(tiny.lora[0], d)
        cfg = json.loads((d / "adapter_config.json").read_text())
        cfg[key] = value
        (d / "adapter_config.json").write_text(json.dumps(cfg))
        with pytest.raises(ExpertError, match=pattern):
            load_expert_set(_base(tiny), tiny.base, [ExpertConfig(name="x", path=d, kind="lora")])


def test_fingerprint_changes_with_content(tiny: TinyWorld, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(tiny.lora[0], d)
    a = fingerprint(d)
    assert a == fingerprint(tiny.lora[0])
    f = d / "adapter_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    assert fingerprint(d) != a
    # large files are hashed by their ends: a change at the end is still seen
    assert fingerprint(d, full_limit=16, edge=8) != fingerprint(tiny.lora[0], full_limit=16, edge=8)
