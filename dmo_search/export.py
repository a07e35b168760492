"""Write a merged model to disk as a normal checkpoint (transformers and vLLM load it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmo_search.config import StudyConfig

__all__ = ["export_merged"]


def export_merged(cfg: StudyConfig, weights: Sequence[float], out_dir: Path) -> Path:
    """Merge ``weights`` on the transformers backend and save model + tokenizer to ``out_dir``.

    The mixture is recorded in ``out_dir/dmo_mixture.json``.

    Raises:
        FileExistsError: ``out_dir`` is a file, or a folder that is not empty.
        OSError: writing failed (e.g. a full disk); the partial files are removed (the model is written to
            ``OUT_DIR.partial`` and renamed at the end, so a killed export leaves no ``OUT_DIR`` either).
    """
    import json

    from safetensors import SafetensorError

    from dmo_search.atomic import atomic_folder
    from dmo_search.backends.hf import HFBackend

    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder; choose a new OUT_DIR")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new OUT_DIR")
    backend = HFBackend(cfg)
    try:
        backend.set_mixture(weights)
        # written beside OUT_DIR and renamed at the end: a killed export leaves no folder that looks whole
        with atomic_folder(out_dir) as tmp:
            backend.model.save_pretrained(str(tmp))
            backend.tokenizer.padding_side = "right"
            backend.tokenizer.save_pretrained(str(tmp))
            mixture = {"experts": cfg.expert_names, "weights": list(weights), "base_model": str(cfg.base_model)}
            (tmp / "dmo_mixture.json").write_text(json.dumps(mixture, indent=2))
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error
        reason = (e.strerror if isinstance(e, OSError) else None) or str(e)
        raise OSError(
            f"writing the merged model to {out_dir} failed ({reason}); the partial files were removed. "
            "Free disk space or choose an OUT_DIR on a disk with room, then export again"
        ) from None
    finally:
        backend.close()
    return out_dir
