"""Load the base and the K experts once, validate them against the base, expose their deltas.

LoRA experts stay low rank: each adapted linear layer keeps its factors ``A`` (``r x in``), ``B``
(``out x r``) and ``scale`` (``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA); the dense
``scale * B @ A`` is formed only inside the merge, one parameter at a time. Full fine-tunes give dense
task vectors ``theta_i - theta_0`` (float32), kept only for parameters that changed.

Adapters are read through peft itself (``PeftModel.from_pretrained``), so every peft convention
(key layout, ``rank_pattern`` / ``alpha_pattern``, rsLoRA, ``fan_in_fan_out``) is honoured, then the
base model is unloaded back to its original modules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from dmo_search.config import ExpertConfig

__all__ = [
    "DenseDelta",
    "Expert",
    "ExpertError",
    "ExpertSet",
    "LowRankDelta",
    "fingerprint",
    "load_expert_set",
]


class ExpertError(ValueError):
    """An expert cannot be used with this base; the message names both paths and the mismatch."""


@dataclass(frozen=True)
class LowRankDelta:
    """``scale * B @ A`` for one weight of shape ``out x in``; A is ``r x in``, B is ``out x r``."""

    A: torch.Tensor
    B: torch.Tensor
    scale: float
    transpose: bool = False

    @property
    def rank(self) -> int:
        """The adapter's rank r."""
        return int(self.A.shape[0])

    def add_to(self, acc: torch.Tensor, weight: float, *, overwrite: bool = False) -> None:
        """``acc += weight * scale * B @ A`` in place (acc is float32); ``acc = ...`` when ``overwrite``."""
        beta = 0.0 if overwrite else 1.0  # beta 0: acc's old contents are not read
        if self.transpose:
            acc.addmm_(self.A.T, self.B.T, beta=beta, alpha=weight * self.scale)
        else:
            acc.addmm_(self.B, self.A, beta=beta, alpha=weight * self.scale)

    def dense(self) -> torch.Tensor:
        """The dense delta in float32."""
        d = (self.B @ self.A) * self.scale
        return d.T.contiguous() if self.transpose else d

    def to(self, device: torch.device) -> LowRankDelta:
        """This delta with its factors on ``device``."""
        return replace(self, A=self.A.to(device), B=self.B.to(device))


@dataclass(frozen=True)
class DenseDelta:
    """A dense task vector ``theta_i - theta_0`` for one parameter (float32)."""

    tensor: torch.Tensor

    def add_to(self, acc: torch.Tensor, weight: float, *, overwrite: bool = False) -> None:
        """``acc += weight * delta`` in place; ``acc = weight * delta`` when ``overwrite``."""
        if overwrite:
            torch.mul(self.tensor, weight, out=acc)
        else:
            acc.add_(self.tensor, alpha=weight)

    def dense(self) -> torch.Tensor:
        """The dense delta in float32."""
        return self.tensor

    def to(self, device: torch.device) -> DenseDelta:
        """This delta on ``device``."""
        return DenseDelta(self.tensor.to(device))


Delta = LowRankDelta | DenseDelta


@dataclass
class Expert:
    """One expert: its config and its per-parameter deltas against the base."""

    name: str
    kind: str
    path: Path
    deltas: dict[str, Delta] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Bytes held by this expert's deltas."""
        total = 0
        for d in self.deltas.values():
            if isinstance(d, LowRankDelta):
                total += d.A.nbytes + d.B.nbytes
            else:
                total += d.tensor.nbytes
        return total


@dataclass
class ExpertSet:
    """The base path and the K experts, in mixture-weight order."""

    base_path: Path
    experts: list[Expert]

    @property
    def names(self) -> list[str]:
        """Expert names in weight order."""
        return [e.name for e in self.experts]

    def __len__(self) -> int:
        return len(self.experts)


def _state_dict_fp32(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def _load_lora(model: torch.nn.Module, cfg: ExpertConfig, base_path: Path) -> Expert:
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    adapter_cfg_path = cfg.path / "adapter_config.json"
    if not adapter_cfg_path.is_file():
        raise ExpertError(
            f"expert {cfg.name!r}: {cfg.path} has no adapter_config.json, so it is not a peft LoRA "
            "adapter; set kind: full for a full checkpoint, or point path at the adapter folder"
        )
    acfg = json.loads(adapter_cfg_path.read_text())
    if acfg.get("peft_type", "LORA") != "LORA":
        raise ExpertError(f"expert {cfg.name!r}: adapter type {acfg.get('peft_type')!r} is not LoRA")
    if acfg.get("use_dora"):
        raise ExpertError(
            f"expert {cfg.name!r}: DoRA adapters are not linear in their factors and cannot be merged "
            "as task vectors; train the expert with use_dora=False or merge it and use kind: full"
        )
    if acfg.get("modules_to_save"):
        raise ExpertError(
            f"expert {cfg.name!r}: adapter trains full modules {acfg['modules_to_save']} "
            "(modules_to_save); fold it with peft merge_and_unload, save the model and use kind: full"
        )
    names_before = {n for n, _ in model.named_parameters()}
    _check_lora_shapes(model, cfg, base_path)
    adapter_name = f"dmo_{cfg.name}"
    try:
        peft_model = PeftModel.from_pretrained(model, str(cfg.path), adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError) as e:
        _strip_lora(model)
        raise ExpertError(
            f"expert {cfg.name!r} ({cfg.path}) does not fit the base {base_path}: {str(e)[:500]}\n"
            "Was it trained from a different base model? Experts must share the study's base."
        ) from None
    deltas: dict[str, Delta] = {}
    try:
        for mod_name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer) or adapter_name not in module.lora_A:
                continue
            if adapter_name in getattr(module, "lora_embedding_A", {}):
                raise ExpertError(f"expert {cfg.name!r}: LoRA on embeddings ({mod_name}) is not supported")
            base_name = mod_name.removeprefix("base_model.model.") + ".weight"
            if base_name not in names_before:
                raise ExpertError(f"expert {cfg.name!r}: adapted module {base_name} is not in the base")
            lora_a: Any = module.lora_A[adapter_name]
            lora_b: Any = module.lora_B[adapter_name]
            a = lora_a.weight.detach().to(torch.float32).clone()
            b = lora_b.weight.detach().to(torch.float32).clone()
            if a.dim() != 2 or b.dim() != 2:
                raise ExpertError(f"expert {cfg.name!r}: {mod_name} is not a linear LoRA layer")
            deltas[base_name] = LowRankDelta(
                A=a,
                B=b,
                scale=float(module.scaling[adapter_name]),
                transpose=bool(getattr(module, "fan_in_fan_out", False)),
            )
    finally:
        peft_model.unload()
    if not deltas:
        raise ExpertError(f"expert {cfg.name!r}: the adapter at {cfg.path} adapts no layer of the base")
    return Expert(name=cfg.name, kind="lora", path=cfg.path, deltas=deltas)


def _strip_lora(model: torch.nn.Module) -> None:
    """Put back the base layers of any LoRA layer a failed adapter load left in ``model``."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())


def _check_lora_shapes(model: torch.nn.Module, cfg: ExpertConfig, base_path: Path) -> None:
    """Compare the adapter's factor shapes with the base's linear layers before peft touches the model."""
    from safetensors import safe_open

    f = cfg.path / "adapter_model.safetensors"
    if not f.is_file():
        return  # peft also reads adapter_model.bin; it reports problems itself
    modules = dict(model.named_modules())
    with safe_open(str(f), framework="pt") as st:
        for key in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if ".lora_A." not in key and ".lora_B." not in key:
                continue
            mod = key.removeprefix("base_model.model.").split(".lora_")[0]
            base_mod = modules.get(mod)
            if base_mod is None or not hasattr(base_mod, "in_features"):
                continue  # name layouts peft remaps itself
            shape = tuple(st.get_slice(key).get_shape())
            want_in, want_out = int(base_mod.in_features), int(base_mod.out_features)
            bad = (".lora_A." in key and shape[-1] != want_in) or (".lora_B." in key and shape[0] != want_out)
            if bad:
                raise ExpertError(
                    f"expert {cfg.name!r} ({cfg.path}) does not fit the base {base_path}: {key} has shape "
                    f"{shape}, but {mod} in the base is {want_in} -> {want_out}.\n"
                    "Was it trained from a different base model? Experts must share the study's base."
                )


def _check_full_shapes(base: dict[str, torch.Tensor], cfg: ExpertConfig, base_path: Path) -> None:
    """Compare tensor shapes in the checkpoint's safetensors headers with the base, before loading it
    (transformers would only say "mismatched sizes")."""
    from safetensors import safe_open

    for f in sorted(cfg.path.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118  (safe_open is not a mapping)
                t0 = base.get(key)
                shape = tuple(fh.get_slice(key).get_shape())
                if t0 is not None and shape != tuple(t0.shape):
                    raise ExpertError(
                        f"expert {cfg.name!r}: parameter {key} has shape {shape} in {f} but "
                        f"{tuple(t0.shape)} in the base {base_path}; it was not fine-tuned from this base"
                    )


def _load_full(base: dict[str, torch.Tensor], cfg: ExpertConfig, base_path: Path) -> Expert:
    from dmo_search.models import load_model

    if not (cfg.path / "config.json").is_file():
        hint = " (it looks like a LoRA adapter: set kind: lora)" if (cfg.path / "adapter_config.json").is_file() else ""
        raise ExpertError(f"expert {cfg.name!r}: {cfg.path} has no config.json, so it is not a checkpoint{hint}")
    _check_full_shapes(base, cfg, base_path)
    model = load_model(cfg.path)
    theirs = _state_dict_fp32(model)
    missing = sorted(set(base) - set(theirs))
    extra = sorted(set(theirs) - set(base))
    if missing or extra:
        raise ExpertError(
            f"expert {cfg.name!r} ({cfg.path}) has other parameters than the base {base_path}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"extra {extra[:5]}{'...' if len(extra) > 5 else ''}; it was not fine-tuned from this base"
        )
    deltas: dict[str, Delta] = {}
    for name, t0 in base.items():
        t1 = theirs[name]
        if t1.shape != t0.shape:
            raise ExpertError(
                f"expert {cfg.name!r}: parameter {name} has shape {tuple(t1.shape)} in {cfg.path} but "
                f"{tuple(t0.shape)} in the base {base_path}; it was not fine-tuned from this base"
            )
        d = t1.to(torch.float32) - t0.to(torch.float32)
        if torch.count_nonzero(d):
            deltas[name] = DenseDelta(d)
    del model
    return Expert(name=cfg.name, kind="full", path=cfg.path, deltas=deltas)


def load_expert_set(model: torch.nn.Module, base_path: Path, experts: Sequence[ExpertConfig]) -> ExpertSet:
    """Read every expert against the loaded base ``model`` and validate it.

    Args:
        model: the base model, already loaded (its parameters are left unchanged).
        base_path: where the base came from (for messages).
        experts: the experts' configs, in mixture-weight order.

    Raises:
        ExpertError: an expert is missing, of the wrong kind, or does not fit the base.
    """
    base = _state_dict_fp32(model)
    out: list[Expert] = []
    for cfg in experts:
        if not cfg.path.exists():
            raise ExpertError(f"expert {cfg.name!r}: path {cfg.path} does not exist; fix experts[].path")
        try:
            expert = _load_lora(model, cfg, base_path) if cfg.kind == "lora" else _load_full(base, cfg, base_path)
        except ExpertError:
            raise
        except Exception as e:  # a truncated or corrupt file: safetensors / json / torch errors
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            raise ExpertError(
                f"expert {cfg.name!r}: cannot load {cfg.path} ({type(e).__name__}: {first}); its files are corrupt, "
                "incomplete or not made from this base: copy, re-export or retrain the expert"
            ) from None
        _check_finite(expert)
        out.append(expert)
    return ExpertSet(base_path=base_path, experts=out)


def _check_finite(expert: Expert) -> None:
    """Refuse an expert holding NaN or inf: every mixture with it would score NaN."""
    for name, d in expert.deltas.items():
        parts = (d.A, d.B) if isinstance(d, LowRankDelta) else (d.tensor,)
        if not all(bool(torch.isfinite(t).all()) for t in parts):
            raise ExpertError(
                f"expert {expert.name!r}: {name} in {expert.path} holds NaN or inf values, so every mixture "
                "with it would score NaN; retrain or re-export the expert"
            )


def fingerprint(path: str | Path, *, full_limit: int = 64 << 20, edge: int = 8 << 20) -> str:
    """A SHA-256 fingerprint of a model or adapter folder (or file).

    Covers every file's relative name and size; files up to ``full_limit`` bytes are hashed whole,
    larger ones by their first and last ``edge`` bytes (a 15 GB checkpoint fingerprints in a second).
    """
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        if f.name.startswith(".") or "__pycache__" in f.parts:
            continue
        size = f.stat().st_size
        h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{size}\n".encode())
        with f.open("rb") as fh:
            if size <= full_limit:
                h.update(fh.read())
            else:
                h.update(fh.read(edge))
                fh.seek(size - edge)
                h.update(fh.read(edge))
    return h.hexdigest()
