"""Comparing a vLLM engine's operative weights with the transformers-side merge, by checksums."""

from __future__ import annotations

import math
from typing import Any

import torch

from dmo_search.backends.vllm_ext import tensor_checksum


def close(a: tuple[float, float], b: tuple[float, float], numel: int) -> bool:
    """Checksums equal up to float32 rounding of the merge (thread counts change matmul rounding)."""
    (s1, q1), (s2, q2) = a, b
    return abs(q1 - q2) <= 1e-6 * max(q2, 1e-30) and abs(s1 - s2) <= 1e-6 * math.sqrt(numel * max(q2, 1e-30))


def assert_engine_computes_with(
    engine: Any, params: dict[str, torch.Tensor], names: list[str], what: str
) -> dict[str, tuple[float, float]]:
    """Each tensor ``names`` of the engine equals ``params[name]`` (float32 rounding apart); the engine's
    checksums, for further comparisons."""
    got: dict[str, tuple[float, float]] = engine.weight_checksums(names)
    for n in names:
        want = tensor_checksum(params[n])
        assert close(got[n], want, params[n].numel()), f"{n} ({what}): engine {got[n]} != merge {want}"
    return got
