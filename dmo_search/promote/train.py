"""The supervised training loop shared by the toy world's experts and promoted mixture SFT runs.

Rows are ``(token ids, number of prompt tokens)``: the loss covers the answer tokens only (prompt
tokens are masked with ``-100``). AdamW, linear warmup over the first 10% of steps, cosine decay,
gradient clipping at 1.0; batches are drawn from a seeded reshuffled order.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

__all__ = ["Row", "batch_rows", "train_loop"]

Row = tuple[list[int], int]
"""Token ids of prompt + answer (+ eos), and the number of prompt tokens."""


def batch_rows(rows: Sequence[Row], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask, labels)``, each ``len(rows) x max_len``; labels are
    ``-100`` on prompt and padding tokens."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, n_prompt) in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, n_prompt : len(row)] = torch.tensor(row[n_prompt:])
        mask[i, : len(row)] = 1
    return ids, mask, labels


def train_loop(
    model: torch.nn.Module,
    rows: Sequence[Row],
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
        rows: the training rows (see :data:`Row`); must not be empty.
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
        ids, mask, labels = batch_rows([rows[i] for i in idx], pad_id)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value
