"""The ``promotion:`` section of a study config: how promoted mixtures are trained for real.

Example (paths relative to the YAML file, like every path of a study config)::

    promotion:
      train_data: {add: data/train/add.jsonl, shift: data/train/shift.jsonl}  # expert name -> JSONL
      mode: exact              # exact: round(w_i * n_examples) per domain; paper: interleave, stop at first exhausted
      n_examples: 3000
      seed: 0
      recipe: {rank: 16, alpha: 32, lr: 0.002, steps: 250, batch_size: 32}
      output_dir: promotions   # default: promotions/ next to the study DB
      command: null            # or e.g. "llamafactory-cli train ... {data} {output_dir} {weights}"
      min_distance: 0.1        # minimum Euclidean distance between promoted mixtures
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["COMMAND_PLACEHOLDERS", "PromotionConfig", "RecipeConfig"]

COMMAND_PLACEHOLDERS = ("data", "output_dir", "weights", "base_model")
"""Placeholders an external training command may use; ``{data}`` and ``{output_dir}`` are required."""

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecipeConfig(_Frozen):
    """The LoRA SFT recipe of a promoted run (the experts' recipe, so proxy and SFT are comparable)."""

    rank: int = Field(default=16, ge=1, description="LoRA rank r")
    alpha: float = Field(default=32.0, gt=0, description="LoRA alpha (scale alpha / r)")
    dropout: float = Field(default=0.0, ge=0, lt=1)
    lr: float = Field(default=2e-3, gt=0, description="peak learning rate (warmup 10%, cosine decay)")
    steps: int = Field(default=250, ge=1, description="optimizer steps")
    batch_size: int = Field(default=32, ge=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), min_length=1)


class PromotionConfig(_Frozen):
    """How ``dmo-search promote`` builds mixture data and trains each promoted mixture."""

    train_data: dict[str, Path] = Field(description="expert name -> training JSONL of {prompt, answers}")
    mode: Literal["exact", "paper"] = Field(
        default="exact",
        description="exact: round(w_i * n_examples) examples per domain; paper: interleave the domains with "
        "sampling probabilities w and stop at the first exhausted one (n_examples caps the total)",
    )
    n_examples: int | None = Field(default=None, ge=1, description="examples per mixture (required for exact)")
    seed: int = Field(default=0, description="seeds the data draw and the training order")
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
    output_dir: Path | None = Field(default=None, description="default: promotions/ next to the study DB")
    command: str | None = Field(
        default=None, description="external training command with {data} {output_dir} {weights} placeholders"
    )
    min_distance: float = Field(
        default=0.1, ge=0, description="minimum Euclidean distance between top picks (vertices are sqrt(2) apart)"
    )

    @field_validator("train_data")
    @classmethod
    def _non_empty(cls, v: dict[str, Path]) -> dict[str, Path]:
        if not v:
            raise ValueError("promotion.train_data is empty; map each expert name to its training JSONL")
        return v

    @field_validator("command")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as e:
            raise ValueError(
                f"promotion.command is not a valid template ({e}); write {{{{ }}}} for a literal brace"
            ) from None
        unknown = sorted(names - set(COMMAND_PLACEHOLDERS))
        if unknown:
            known = list(COMMAND_PLACEHOLDERS)
            raise ValueError(f"promotion.command uses unknown placeholders {unknown}; known: {known}")
        missing = sorted({"data", "output_dir"} - names)
        if missing:
            raise ValueError(f"promotion.command must use {{data}} and {{output_dir}}; missing {missing}")
        return v

    @model_validator(mode="after")
    def _exact_needs_count(self) -> PromotionConfig:
        if self.mode == "exact" and self.n_examples is None:
            raise ValueError("promotion.mode 'exact' needs promotion.n_examples (examples per mixture); set it")
        return self
