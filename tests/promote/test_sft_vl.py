"""Local promotion SFT of a vision-language base: rows with images train a LoRA on a tiny Qwen2-VL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.slow  # builds a tiny Qwen2-VL and trains it for a few steps (~20 s)


def _answer_loss(model_dir: Path, examples: list[dict[str, Any]]) -> float:
    """Mean loss of the answer tokens given the prompt and its images."""
    from transformers import AutoProcessor

    from dmo_search.models import load_model
    from dmo_search.promote.sft import encode_vision_examples
    from dmo_search.promote.train import batch_rows, image_inputs

    processor = AutoProcessor.from_pretrained(str(model_dir))
    model = load_model(model_dir)
    rows = encode_vision_examples(processor, examples, chat=True)
    ids, mask, labels = batch_rows(rows, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        return float(model(input_ids=ids, attention_mask=mask, labels=labels, **image_inputs(rows)).loss)


def test_lora_sft_of_a_vision_language_base_trains_on_image_rows(tmp_path: Path) -> None:
    pytest.importorskip("torchvision", reason="Qwen2-VL's image processor needs torchvision")
    from transformers import AutoProcessor

    from dmo_search.models import is_vision_language
    from dmo_search.promote.config import RecipeConfig
    from dmo_search.promote.data import load_train_set
    from dmo_search.promote.sft import train_lora_sft
    from tests._tiny_vl import build_tiny_vl

    world = build_tiny_vl(tmp_path / "vl")
    lines = []
    for i, image in enumerate(world.images):
        image.save(tmp_path / f"img{i}.png")
        answer = "red" if i % 2 == 0 else "blue"
        lines.append(json.dumps({"prompt": "what colour is the square", "image": f"img{i}.png", "answers": [answer]}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    examples = load_train_set(tmp_path / "train.jsonl")
    assert examples[0]["images"] == [str(tmp_path / "img0.png")]
    recipe = RecipeConfig(rank=8, alpha=16, lr=1e-2, steps=25, batch_size=4)
    res = train_lora_sft(world.base, examples, tmp_path / "run", recipe=recipe, chat=True, seed=0)
    assert is_vision_language(res.model_dir)
    assert AutoProcessor.from_pretrained(str(res.model_dir)).image_processor is not None  # the backend loads it
    before, after = _answer_loss(world.base, examples), _answer_loss(res.model_dir, examples)
    assert after < 0.5 * before, (before, after)
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def test_image_rows_for_a_text_base_are_refused(tmp_path: Path, toy_world: Any) -> None:
    from dmo_search.promote.config import RecipeConfig
    from dmo_search.promote.sft import SFTError, train_lora_sft

    rows = [{"prompt": "p", "answers": ["a"], "images": [str(tmp_path / "x.png")]}]
    with pytest.raises(SFTError, match="not a vision-language model"):
        train_lora_sft(toy_world.root / "base", rows, tmp_path / "run", recipe=RecipeConfig(), chat=True, seed=0)
