"""Model families: which parameters the merge keeps at base values, per family, by default.

The family comes from the base checkpoint's ``config.json`` ``model_type``. The lists keep the paper's
semantics (``model_merging.py`` in BerasiDavide/mLLMs_merging_4_DMO): in LoRA mode only the language
model's linear layers are merged (vision encoder, projector, embeddings, head, norms and biases stay
at base); in full mode only the vision encoder stays at base. Patterns are substrings of the
parameter names of the transformers classes:

- Qwen2-VL / Qwen2.5-VL (``Qwen2VLForConditionalGeneration``): ``model.visual.*`` (encoder and its
  ``merger`` projector), ``model.language_model.*``.
- InternVL3 / 3.5 in the Hugging Face format (``InternVLForConditionalGeneration``):
  ``model.vision_tower.*``, ``model.multi_modal_projector.*``, ``model.language_model.*``.

InternVL's own format (``model_type: internvl_chat``, ``vision_model.*``, ``mlp1.*``,
``language_model.model.*``) is refused with the conversion to use (see README: Model families).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["FAMILY_EXCLUSIONS", "default_exclusions", "detect_family"]

# family -> (exclude_lora, exclude_full)
FAMILY_EXCLUSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "qwen2_vl": (
        ("visual", "embed_tokens", "lm_head", "norm", "bias"),
        ("visual.blocks", "visual.patch_embed"),
    ),
    "internvl": (
        ("vision_tower", "multi_modal_projector", "embed_tokens", "lm_head", "norm", "bias"),
        ("vision_tower",),
    ),
    # Any other model: the paper's lists, which name both families' vision parts.
    "generic": (
        ("visual", "embed_tokens", "lm_head", "norm", "bias", "vision_tower", "multi_modal_projector"),
        ("visual.blocks", "visual.patch_embed", "vision_tower"),
    ),
}
_MODEL_TYPES = {"qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_vl", "internvl": "internvl"}
_INTERNVL_NATIVE = ("internvl_chat",)


def detect_family(base_model: str | Path) -> str:
    """``'qwen2_vl'``, ``'internvl'`` or ``'generic'``, from ``base_model/config.json``'s ``model_type``
    (``'generic'`` when the file is absent or unreadable).

    Raises:
        ValueError: the base is an InternVL checkpoint in InternVL's own format.
    """
    cfg_file = Path(base_model) / "config.json"
    try:
        model_type = str(json.loads(cfg_file.read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError):
        return "generic"
    if model_type in _INTERNVL_NATIVE:
        raise ValueError(
            f"base_model {Path(base_model)} is an InternVL checkpoint in InternVL's own format "
            f"(model_type {model_type!r}); convert it and its experts to the Hugging Face format "
            "(transformers' models/internvl/convert_internvl_weights_to_hf.py, or use the '-HF' "
            "checkpoints such as OpenGVLab/InternVL3_5-2B-HF) and point base_model at the result"
        )
    return _MODEL_TYPES.get(model_type, "generic")


def default_exclusions(base_model: str | Path) -> tuple[list[str], list[str]]:
    """``(exclude_lora, exclude_full)`` for the base's family (see :data:`FAMILY_EXCLUSIONS`)."""
    lora, full = FAMILY_EXCLUSIONS[detect_family(base_model)]
    return list(lora), list(full)
