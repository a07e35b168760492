"""The transformers backend: the reference engine, and the one that needs nothing but torch.

The base model is loaded once; each mixture is written into its parameters in place by
:class:`~dmo_search.merge.InPlaceMerger`, and a full checkpoint of the same architecture can be served
in their place (:meth:`HFBackend.serve_checkpoint`). Generation is batched greedy decoding with left
padding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dmo_search.backends.base import BackendError, chat_prompt, checked_checkpoint, switched_merge
from dmo_search.experts import ExpertError, load_expert_set
from dmo_search.merge import InPlaceMerger
from dmo_search.merge_methods import MergeMethod
from dmo_search.models import is_vision_language, load_model

if TYPE_CHECKING:
    from dmo_search.config import MergeConfig, StudyConfig

__all__ = ["HFBackend", "resolve_device"]

_log = logging.getLogger(__name__)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(spec: str) -> torch.device:
    """``'auto'`` -> cuda when available, else cpu; anything else as torch reads it."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"backend.device is {spec!r} but no CUDA GPU is visible; use 'cpu' or 'auto'")
    return dev


class HFBackend:
    """transformers model + in-place merger.

    Args:
        cfg: the study config (``base_model``, ``experts``, ``backend``, ``merge``).
    """

    name = "hf"

    def __init__(self, cfg: StudyConfig) -> None:
        from transformers import AutoTokenizer

        base = Path(cfg.base_model)
        if not (base / "config.json").is_file():
            raise ExpertError(f"base_model {base} has no config.json; point base_model at a checkpoint folder")
        self.cfg = cfg
        self.base = base
        self.serving: Path | None = None  # a checkpoint served in place of theta(w) (serve_checkpoint)
        self.processor: Any = None
        self.device = resolve_device(cfg.backend.device)
        self.dtype = _DTYPES[cfg.backend.dtype]
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(base))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Experts are read against a float32 copy on the CPU so the deltas are exact; the live model
        # then holds the configured dtype on the configured device.
        model: Any = load_model(base)
        self.experts = load_expert_set(model, base, cfg.experts)
        self.expert_names = self.experts.names
        self.model: Any = model.to(device=self.device, dtype=self.dtype)
        if self.device.type != "cpu":
            for e in self.experts.experts:
                e.deltas = {k: d.to(self.device) for k, d in e.deltas.items()}
        self.merger = InPlaceMerger(
            self.model,
            self.experts,
            exclude_lora=cfg.merge.exclude_lora,
            exclude_full=cfg.merge.exclude_full,
            method=MergeMethod.from_config(cfg.merge),
        )

    def set_mixture(self, weights: Sequence[float]) -> None:
        """Write ``theta(w)`` into the live model."""
        self._base_back()
        self.merger.apply(weights)

    def restore_base(self) -> None:
        """Restore the base weights bit for bit."""
        self._base_back()
        self.merger.restore()

    def set_merge(self, merge: MergeConfig) -> None:
        """Merge by ``merge.method`` / ``params`` / ``seed`` from now on (base and experts stay loaded);
        serves the base until the next :meth:`set_mixture`.

        Raises:
            BackendError: ``merge`` has other exclusions than the backend's (start a new backend).
        """
        self.cfg = switched_merge(self.cfg, merge)
        self.restore_base()
        self.merger.set_method(MergeMethod.from_config(merge))

    @property
    def serves_checkpoints(self) -> bool:
        """Always: :meth:`serve_checkpoint` loads a checkpoint into the live model."""
        return True

    def serve_checkpoint(self, model_dir: str | Path) -> None:
        """Serve the full checkpoint at ``model_dir`` (a model of the base's architecture, such as a
        mixture-SFT run's) in place of theta(w): its parameters are loaded into the live model, without
        loading the base or the experts again. :meth:`set_mixture` or :meth:`restore_base` puts the base
        back first.

        Raises:
            BackendError: not a checkpoint folder, or a checkpoint of another architecture (the field named).
        """
        path = checked_checkpoint(model_dir, self.base)
        self.serving = path  # first: a load that fails half-way also brings the base back next time
        self._load_parameters(path)

    def _load_parameters(self, path: Path) -> None:
        """Copy every parameter of the checkpoint at ``path`` into the live model (cast to its dtype and
        device), loaded by transformers as the base was, so that names and layouts match."""
        other = load_model(path)
        self.model.load_state_dict(other.state_dict(), strict=True)
        del other

    def _base_back(self) -> None:
        """After :meth:`serve_checkpoint`: load the base's parameters again (the merger restores only
        those it merges)."""
        if self.serving is not None:
            self._load_parameters(self.base)
            self.serving = None

    def format_prompt(self, prompt: str, *, chat: bool, n_images: int = 0) -> str:
        """Apply the tokenizer's chat template (one user turn, generation prompt) when ``chat``."""
        return chat_prompt(self.tokenizer, prompt, chat=chat, n_images=n_images)

    def _processor(self) -> Any:
        """The checkpoint's multimodal processor (image preprocessing), loaded on first use."""
        if self.processor is None:
            from transformers import AutoProcessor

            if not is_vision_language(self.base):
                raise BackendError(f"images were given but {self.base} is not a vision-language model")
            self.processor = AutoProcessor.from_pretrained(str(self.base))
            self.processor.tokenizer.padding_side = "left"
        return self.processor

    def _encode(self, texts: list[str], images: list[Sequence[Any]] | None) -> dict[str, Any]:
        if images is None or not any(images):
            return dict(self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False))
        flat = [im for ims in images for im in ims]
        enc = self._processor()(text=texts, images=flat, return_tensors="pt", padding=True, add_special_tokens=False)
        return dict(enc)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        batch_size: int,
        images: Sequence[Sequence[Any]] | None = None,
    ) -> list[str]:
        """Batched greedy decoding; prompts are sorted by length to pad little. ``images[i]``: the
        images of prompt ``i`` (vision-language models)."""
        if images is not None and len(images) != len(prompts):
            raise ValueError(f"{len(images)} image lists for {len(prompts)} prompts")
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        tok = self.tokenizer
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = self._encode([prompts[i] for i in idx], None if images is None else [images[i] for i in idx])
            enc = {k: v.to(self.device) for k, v in enc.items()}
            gen = self.model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            for i, text in zip(idx, tok.batch_decode(new, skip_special_tokens=True), strict=True):
                out[i] = text.strip()
        return out

    @torch.no_grad()
    def loglikelihood(
        self, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int
    ) -> list[tuple[float, int]]:
        """Summed log-probability of each continuation given its prompt (teacher forcing)."""
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations must have the same length")
        tok = self.tokenizer
        seqs: list[tuple[list[int], int]] = []
        for p, c in zip(prompts, continuations, strict=True):
            p_ids = tok(p, add_special_tokens=False)["input_ids"]
            c_ids = tok(c, add_special_tokens=False)["input_ids"]
            if not c_ids:
                raise ValueError(f"continuation {c!r} tokenizes to nothing")
            seqs.append((p_ids + c_ids, len(c_ids)))
        out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
        pad = tok.pad_token_id
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                s = seqs[i][0]
                ids[row, width - len(s) :] = torch.tensor(s)
                mask[row, width - len(s) :] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                n = seqs[i][1]
                target = ids[row, width - n :].to(self.device)
                lp = logp[row, width - n - 1 : width - 1].gather(-1, target[:, None]).sum()
                out[i] = (float(lp), n)
        return out

    def close(self) -> None:
        """Drop the model."""
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
