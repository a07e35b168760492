"""The supervised training loop shared by the toy world's experts and promoted mixture SFT runs.

Rows are ``(token ids, number of prompt tokens)``, plus, for vision-language models, the processor's
image tensors (``pixel_values``, ``image_grid_thw``, ...) of the row's images: the loss covers the
answer tokens only (prompt tokens, image placeholders included, are masked with ``-100``). AdamW,
linear warmup over the first 10% of steps, cosine decay, gradient clipping at 1.0; batches are drawn
from a seeded reshuffled order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

__all__ = ["Row", "VisionRow", "batch_rows", "image_inputs", "train_loop"]

Row = tuple[list[int], int]
"""Token ids of prompt + answer (+ eos), and the number of prompt tokens."""

VisionRow = tuple[list[int], int, dict[str, torch.Tensor]]
"""A :data:`Row` with the processor's tensors for its images: per image (``pixel_values``,
``image_grid_thw``: first dimension patches or images) or per token (1-D, one entry per token id,
e.g. ``mm_token_type_ids``)."""


def image_inputs(rows: Sequence[Row | VisionRow]) -> dict[str, torch.Tensor]:
    """The rows' image tensors for one batch: per-image ones concatenated in row order (the order of
    the image placeholders in the batch), per-token ones right-padded with 0 like the token ids."""
    width = max(len(r[0]) for r in rows)
    per_image: dict[str, list[torch.Tensor]] = {}
    per_token: dict[str, torch.Tensor] = {}
    for i, row in enumerate(rows):
        if len(row) != 3:
            continue
        for key, value in row[2].items():
            if value.dim() == 1 and len(value) == len(row[0]):
                if key not in per_token:
                    per_token[key] = torch.zeros((len(rows), width), dtype=value.dtype)
                per_token[key][i, : len(value)] = value
            else:
                per_image.setdefault(key, []).append(value)
    return {**{key: torch.cat(values) for key, values in per_image.items()}, **per_token}


def batch_rows(rows: Sequence[Row | VisionRow], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask, labels)``, each ``len(rows) x max_len``; labels are
    ``-100`` on prompt and padding tokens."""
    plain: list[Row] = [(r[0], r[1]) for r in rows]
    width = max(len(ids) for ids, _ in plain)
    ids = torch.full((len(plain), width), pad_id, dtype=torch.long)
    labels = torch.full((len(plain), width), -100, dtype=torch.long)
    mask = torch.zeros((len(plain), width), dtype=torch.long)
    for i, (row, n_prompt) in enumerate(plain):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, n_prompt : len(row)] = torch.tensor(row[n_prompt:])
        mask[i, : len(row)] = 1
    return ids, mask, labels


def train_loop(
    model: torch.nn.Module,
    rows: Sequence[Row | VisionRow],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    pad_id: int,
    seed: int,
) -> float:
    """Train ``model`` in place on ``rows`` for ``steps`` optimizer steps; returns the last loss.

    Args:
        model: a causal LM (or a peft model around one); only parameters with ``requires_grad`` train.
        rows: the training rows (:data:`Row`, or :data:`VisionRow` for a vision-language model); not empty.
        steps: optimizer steps.
        lr: peak learning rate.
        batch_size: rows per step.
        pad_id: the padding token id.
        seed: seeds the order in which rows are drawn.

    Raises:
        ValueError: ``rows`` is empty or ``steps`` / ``batch_size`` is below 1.
    """
    if not rows:
        raise ValueError("no training rows; give each trained domain a non-empty training set")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps ({steps}) and batch_size ({batch_size}) must be >= 1")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    rng = random.Random(seed)
    order: list[int] = []
    model.train()
    loss_value = float("nan")
    for _ in range(steps):
        if len(order) < batch_size:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order.extend(more)
        idx, order = order[:batch_size], order[batch_size:]
        batch = [rows[i] for i in idx]
        ids, mask, labels = batch_rows(batch, pad_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, **image_inputs(batch)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value
