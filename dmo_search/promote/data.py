"""Mixture SFT data: the domains' training sets combined in proportions ``w``, seeded, with counts.

Two modes:

``paper``
    Interleave the shuffled domains: at each step draw domain ``i`` with probability ``w_i`` and take
    its next example; stop at the first draw of an exhausted domain (Hugging Face ``interleave_datasets``
    with ``stopping_strategy="first_exhausted"``). ``n_examples`` optionally caps the total.
``exact``
    ``round(w_i * n_examples)`` examples of each domain, drawn without replacement, then shuffled.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["MixtureData", "build_mixture", "load_train_set", "write_jsonl"]

Example = dict[str, Any]


@dataclass(frozen=True)
class MixtureData:
    """A built mixture: the examples (each with its ``domain``) and how many came from each domain."""

    examples: list[Example]
    counts: dict[str, int]


def load_train_set(path: Path) -> list[Example]:
    """Read a training JSONL of ``{"prompt": str, "answers": [str, ...]}`` (``answer``/``answers`` str ok).

    Vision-language rows add ``"images": [path, ...]`` (or ``"image": path``); relative paths are
    resolved against the JSONL's folder and must exist.

    Raises:
        ValueError: the file is missing, empty, or a line is malformed (names the file and line).
    """
    if not path.is_file():
        raise ValueError(f"training file {path} does not exist; fix promotion.train_data")
    out: list[Example] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        answers = row.get("answers", row.get("answer")) if isinstance(row, dict) else None
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not answers:
            raise ValueError(f'{path}:{n}: each line needs "prompt" (a string) and "answers" (a non-empty list)')
        example: Example = {"prompt": row["prompt"], "answers": [str(a) for a in answers]}
        images = row.get("images", [row["image"]] if "image" in row else [])
        if images:
            if isinstance(images, str) or not all(isinstance(i, str) for i in images):
                raise ValueError(f'{path}:{n}: "images" must be a list of image paths')
            resolved = [str(p if (p := Path(i)).is_absolute() else (path.parent / p).resolve()) for i in images]
            missing = [i for i in resolved if not Path(i).is_file()]
            if missing:
                raise ValueError(f"{path}:{n}: image files not found: {missing}")
            example["images"] = resolved
        out.append(example)
    if not out:
        raise ValueError(f"training file {path} holds no examples; fix promotion.train_data")
    return out


def build_mixture(
    train: Mapping[str, Sequence[Example]],
    weights: Mapping[str, float],
    *,
    mode: Literal["exact", "paper"],
    n_examples: int | None,
    seed: int,
) -> MixtureData:
    """Combine the domains' examples in proportions ``weights``.

    Args:
        train: domain -> its training examples.
        weights: domain -> mixture weight (the same domains; summing to 1).
        mode: ``'exact'`` or ``'paper'`` (see the module docstring).
        n_examples: the total for ``exact`` (required); an optional cap for ``paper``.
        seed: seeds the shuffles and draws; the same seed gives the same data.

    Raises:
        ValueError: domains differ, ``exact`` without ``n_examples``, or a domain has fewer examples
            than ``round(w_i * n_examples)``.
    """
    if set(train) != set(weights):
        raise ValueError(f"weights name domains {sorted(weights)} but training sets are {sorted(train)}")
    domains = list(weights)
    rng = random.Random(seed)
    shuffled = {d: rng.sample(list(train[d]), len(train[d])) for d in domains}
    counts = dict.fromkeys(domains, 0)
    out: list[Example] = []
    if mode == "exact":
        if n_examples is None:
            raise ValueError("mode 'exact' needs n_examples")
        for d in domains:
            want = round(weights[d] * n_examples)
            if want > len(shuffled[d]):
                raise ValueError(
                    f"domain {d!r} has {len(shuffled[d])} training examples but the mixture needs {want} "
                    f"(round({weights[d]:.4f} * {n_examples})); lower promotion.n_examples or use mode: paper"
                )
            out += [{**ex, "domain": d} for ex in shuffled[d][:want]]
            counts[d] = want
        rng.shuffle(out)
        return MixtureData(out, counts)
    if mode != "paper":
        raise ValueError(f"unknown mode {mode!r}; choose 'exact' or 'paper'")
    probs = [max(0.0, float(weights[d])) for d in domains]
    if sum(probs) <= 0:
        raise ValueError("mixture weights sum to 0")
    cursor = dict.fromkeys(domains, 0)
    while n_examples is None or len(out) < n_examples:
        d = rng.choices(domains, weights=probs)[0]
        if cursor[d] >= len(shuffled[d]):
            break  # the first exhausted domain ends the mixture
        out.append({**shuffled[d][cursor[d]], "domain": d})
        cursor[d] += 1
        counts[d] += 1
    return MixtureData(out, counts)


def write_jsonl(path: Path, rows: Sequence[Example]) -> None:
    """Write ``rows`` as JSON lines (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
