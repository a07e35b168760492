"""Inference engines that score merged models without a restart.

One small interface (:class:`Backend`): load the base and the experts once, apply a mixture in place,
generate greedily, and score log-likelihoods. :func:`make_backend` picks one by the config's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmo_search.backends.base import Backend, BackendError, BatchBackend, CheckpointBackend, MethodBackend

if TYPE_CHECKING:
    from dmo_search.config import StudyConfig

__all__ = ["Backend", "BackendError", "BatchBackend", "CheckpointBackend", "MethodBackend", "make_backend"]


def make_backend(cfg: StudyConfig) -> Backend:
    """Start the backend named by ``cfg.backend.name`` (it loads the base and experts once)."""
    if cfg.backend.name == "hf":
        from dmo_search.backends.hf import HFBackend

        return HFBackend(cfg)
    if cfg.backend.name == "vllm":
        from dmo_search.backends.vllm import VLLMBackend

        # lora mode: room for a whole worker batch of adapters in one engine batch
        return VLLMBackend(cfg, max_loras=max(4, cfg.worker.batch_size))
    raise ValueError(f"unknown backend {cfg.backend.name!r}; choose 'hf' or 'vllm'")
