"""A tiny random Qwen2-VL world (vision tower, image processor, special tokens), built locally in seconds.

Base + one LoRA expert on the language model's linear layers + one full fine-tune, and a handful of
small RGB images. head_dim is 64 (vLLM's CPU attention rejects 16) and the mrope sections sum to
head_dim / 2, as Qwen2-VL requires.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Qwen2-VL's chat layout, reduced to what the tests use: text and image parts of user turns.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class TinyVLWorld:
    root: Path
    base: Path
    lora: Path
    full: Path
    images: list[Any]  # PIL images
    prompts: list[str]


def _tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["what colour is the square", "count the dots", "user assistant", "red green blue one two three"]
    tok.train_from_iterator(corpus * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_vl(root: Path, *, seed: int = 0) -> TinyVLWorld:
    """Build and save the world under ``root`` (base/, lora/, full/)."""
    from peft import LoraConfig, get_peft_model
    from PIL import Image
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    torch.manual_seed(seed)
    tok = _tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in _SPECIAL}
    text_config = dict(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]},
        tie_word_embeddings=True,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=None,
    )
    vision_config = dict(
        depth=1, embed_dim=128, hidden_size=128, num_heads=2, mlp_ratio=2, patch_size=14, spatial_merge_size=2
    )
    cfg = Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    base = Qwen2VLForConditionalGeneration(cfg)
    with torch.no_grad():  # larger weights: peaked next-token distributions, few greedy near-ties
        for n, p in base.named_parameters():
            if p.dim() == 2 and "visual" not in n:
                p.mul_(3.0)
    base_dir = root / "base"
    base.save_pretrained(base_dir)
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=56 * 56)
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=56 * 56),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)

    lcfg = LoraConfig(r=8, lora_alpha=16, target_modules=LM_TARGETS, init_lora_weights=False, lora_dropout=0.0)
    pm = get_peft_model(Qwen2VLForConditionalGeneration.from_pretrained(base_dir), lcfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.mul_(3.0)
    pm.save_pretrained(str(root / "lora"))
    full = Qwen2VLForConditionalGeneration.from_pretrained(base_dir)
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.05 * torch.randn_like(p))
    full.save_pretrained(root / "full")

    g = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(4):
        arr = (torch.rand(56, 56, 3, generator=g) * 255).to(torch.uint8).numpy()
        images.append(Image.fromarray(arr, mode="RGB"))
    prompts = ["what colour is the square", "count the dots", "red green blue", "one two three"]
    return TinyVLWorld(root, base_dir, root / "lora", root / "full", images, prompts)


def tiny_vl_config(world: TinyVLWorld, *, backend: str = "vllm", **backend_opts: Any) -> Any:
    """A study config over the world (experts ``lora`` and ``full``; a one-file text objective)."""
    import json

    import yaml

    from dmo_search.config import load_config

    val = world.root / "val.jsonl"
    val.write_text("".join(json.dumps({"prompt": p, "answers": ["x"]}) + "\n" for p in world.prompts))
    study = {
        "study_name": "tiny-vl",
        "base_model": "base",
        "experts": [
            {"name": "lora", "kind": "lora", "path": "lora"},
            {"name": "full", "kind": "full", "path": "full"},
        ],
        "objective": {"type": "exact_match", "validation": {"vl": "val.jsonl"}, "max_new_tokens": 6},
        "backend": {"name": backend, "dtype": "float32", **backend_opts},
    }
    path = world.root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return load_config(path)
