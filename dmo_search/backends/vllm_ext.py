"""The vLLM worker extension: in-place merging inside vLLM's worker process.

vLLM mixes :class:`MergeWorkerExtension` into its worker class when the engine is started with
``worker_extension_cls="dmo_search.backends.vllm_ext.MergeWorkerExtension"``; the backend then calls
its methods by name through ``LLM.collective_rpc``. The worker loads the base and the experts ONCE
(:meth:`~MergeWorkerExtension.dmo_init_merge`, which uses the project's own
:func:`~dmo_search.experts.load_expert_set` and :class:`~dmo_search.merge.InPlaceMerger` on a float32
transformers copy of the base), so per candidate only the K mixture weights cross the RPC ("control,
not data"; see vLLM's ``examples/offline_inference/rlhf_utils.py``).

theta(w) enters the engine through vLLM's own weight loading, which maps checkpoint names onto fused
layers (``q/k/v_proj -> qkv_proj``, ``gate/up_proj -> gate_up_proj``):

* where the engine computes with its ``weight`` parameters (GPU; bf16 on AVX2 CPUs),
  ``model.load_weights`` copies into the existing storage;
* where vLLM repacked linear weights for its CPU kernels and emptied ``weight`` (float32 on CPU: oneDNN),
  the worker's ``reload_weights`` path restores the layers, loads and repacks them. A fused layer is
  processed only when all its parts arrive, so every part of each touched layer (sibling projections,
  biases) is sent, at its current value.

:meth:`~MergeWorkerExtension.dmo_checksums` reads back the weights the engine actually computes with
(a linear layer is read by applying it to the identity, which is exact in any float format) and
returns (sum, sum of squares) per checkpoint tensor: small floats, never tensors.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["MergeWorkerExtension", "tensor_checksum"]

# vLLM's reload warns about every layer that a partial reload leaves alone; that is the point here. The
# worker process silences these loggers below ERROR once, at dmo_init_merge: setting a logger's level
# clears every logger's level cache, which cost ~2.4 ms per swap when done around each push.
_QUIET_LOGGERS = ("vllm.model_executor.model_loader.reload",)
_CHUNK = 4096


def tensor_checksum(t: torch.Tensor) -> tuple[float, float]:
    """(sum, sum of squares) of ``t`` in float64: what both sides of an exactness test compare.

    Independent of strides and thread counts (a plain ``sum`` splits work by thread and rounds
    differently): rows of 4096 elements are summed one per thread, then the row sums exactly (``fsum``).
    Equal tensors give bit-equal checksums in any process.
    """
    flat = t.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    rows = torch.nn.functional.pad(flat, (0, -flat.numel() % _CHUNK)).view(-1, _CHUNK)
    return math.fsum(rows.sum(dim=1).tolist()), math.fsum(rows.square().sum(dim=1).tolist())


class MergeWorkerExtension:
    """Methods vLLM adds to its worker; ``self`` is the worker (``self.model_runner.model`` is the model).

    Call them through ``llm.collective_rpc("dmo_<name>", args=(...))``.
    """

    # Set by vLLM's worker, and by dmo_init_merge (declared for readers and type checkers).
    model_runner: Any
    _dmo_merger: Any
    _dmo_send: list[tuple[str, torch.Tensor]]
    _dmo_reload: bool
    _dmo_dependents: list[torch.nn.Module]
    _dmo_base: Path
    _dmo_serving: str | None

    # ------------------------------------------------------------------------------------ helpers
    def _dmo_model(self) -> torch.nn.Module:
        model: torch.nn.Module = self.model_runner.get_model()
        return model

    def _dmo_packed_leaves(self) -> dict[str, tuple[str, int]]:
        """Checkpoint leaf module -> (fused vLLM module, index of its part), e.g. k_proj -> (qkv_proj, 1)."""
        packed: dict[str, list[str]] = {}
        for m in self._dmo_model().modules():  # a VLM keeps the mapping on its language model
            packed.update(getattr(m, "packed_modules_mapping", None) or {})
        return {leaf: (fused, i) for fused, leaves in packed.items() for i, leaf in enumerate(leaves)}

    def _dmo_engine_name(self, hf_name: str) -> str:
        """The vLLM module path of checkpoint module ``hf_name``: the prefix renames of the model's
        ``hf_to_vllm_mapper``, applied in order as vLLM does (Qwen2-VL: ``model.language_model.x`` ->
        ``language_model.model.x``). Fused layers are resolved by :meth:`_dmo_packed_leaves`."""
        mapper = getattr(self._dmo_model(), "hf_to_vllm_mapper", None)
        prefixes: dict[str, str | None] = getattr(mapper, "orig_to_new_prefix", None) or {}
        name = hf_name + "."
        for old, new in prefixes.items():
            if new is not None and name.startswith(old):
                name = new + name[len(old) :]
        return name[:-1]

    def _dmo_engine_module(self, hf_module: str) -> tuple[torch.nn.Module, int | None]:
        """The vLLM module that holds checkpoint module ``hf_module``, and the part index if fused."""
        model = self._dmo_model()
        parent, _, leaf = self._dmo_engine_name(hf_module).rpartition(".")
        fused = self._dmo_packed_leaves().get(leaf)
        if fused is not None:
            name = f"{parent}.{fused[0]}" if parent else fused[0]
            return model.get_submodule(name), fused[1]
        return model.get_submodule(f"{parent}.{leaf}" if parent else leaf), None

    def _dmo_needs_reload(self) -> bool:
        """True when vLLM repacked linear weights for its CPU kernels (``weight`` emptied)."""
        from vllm.model_executor.layers.linear import LinearBase

        for m in self._dmo_model().modules():
            w = getattr(m, "weight", None)
            if isinstance(m, LinearBase) and isinstance(w, torch.Tensor) and w.numel() == 0:
                return True
        return False

    def _dmo_find_dependents(self, touched: set[int]) -> list[torch.nn.Module]:
        """Untouched modules that share a parameter with a touched one (a tied ``lm_head``).

        Their kernels were built from the shared tensor at load time (on CPU, a packed copy), so they
        are re-processed after every swap.
        """
        modules = dict(self._dmo_model().named_modules())
        ptrs = {
            p.data_ptr()
            for m in modules.values()
            if id(m) in touched
            for p in m.parameters(recurse=False)
            if p.numel() > 0
        }
        return [
            m
            for m in modules.values()
            if id(m) not in touched
            and hasattr(m, "quant_method")
            and any(p.numel() > 0 and p.data_ptr() in ptrs for p in m.parameters(recurse=False))
        ]

    def _dmo_load(self, tensors: Sequence[tuple[str, torch.Tensor]], dependents: Sequence[torch.nn.Module]) -> None:
        """Load checkpoint-named tensors into the engine, then re-process the modules that share them."""
        if self._dmo_reload:
            worker: Any = self
            worker.reload_weights(weights_iterator=iter(tensors), is_checkpoint_format=True)
        else:
            self._dmo_model().load_weights(iter(tensors))  # type: ignore[operator]
        for m in dependents:
            qm: Any = getattr(m, "quant_method", None)
            if qm is not None and hasattr(qm, "process_weights_after_loading"):
                qm.process_weights_after_loading(m)

    def _dmo_touched(self, names: Sequence[str]) -> set[int]:
        """Ids of the engine modules that checkpoint tensors ``names`` load into."""
        touched = set()
        for name in names:
            try:
                touched.add(id(self._dmo_engine_module(name.rpartition(".")[0])[0]))
            except AttributeError:
                continue  # a tensor the engine has no module for (vLLM's loader skips it too)
        return touched

    def _dmo_load_folder(self, path: Path) -> int:
        """Load every tensor of the checkpoint folder ``path`` (its ``*.safetensors``); their count."""
        from safetensors.torch import load_file

        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"{path} holds no *.safetensors checkpoint")
        tensors = [kv for f in files for kv in load_file(str(f)).items()]
        self._dmo_load(tensors, self._dmo_find_dependents(self._dmo_touched([n for n, _ in tensors])))
        return len(tensors)

    def _dmo_push(self) -> None:
        """Load the current values of the planned tensors into the engine (after the base itself, when
        a checkpoint was served since: the plan sends only the tensors the merge touches)."""
        if self._dmo_serving is not None:
            self._dmo_load_folder(self._dmo_base)
            self._dmo_serving = None
        self._dmo_load(self._dmo_send, self._dmo_dependents)

    # ----------------------------------------------------------------------------------- RPC API
    def dmo_init_merge(
        self,
        base_path: str,
        experts_json: str,
        exclude_lora: Sequence[str],
        exclude_full: Sequence[str],
        method_json: str | None = None,
    ) -> dict[str, Any]:
        """Load the float32 base and the experts once and plan the merge.

        Args:
            base_path: the base checkpoint folder (the one the engine serves).
            experts_json: the experts' configs, a JSON list of ``ExpertConfig`` dicts in weight order.
            exclude_lora: parameter name patterns kept at base values for LoRA experts.
            exclude_full: parameter name patterns kept at base values for full fine-tunes.
            method_json: the merge method (:meth:`~dmo_search.merge_methods.MergeMethod.to_json`); default linear.

        Returns:
            ``{"n_tensors": tensors sent per swap, "n_merged": merged tensors, "nbytes": bytes held,
            "path": "reload_weights" or "load_weights", "seconds": load time}``.
        """
        from dmo_search.config import ExpertConfig
        from dmo_search.experts import load_expert_set
        from dmo_search.merge import InPlaceMerger
        from dmo_search.merge_methods import MergeMethod
        from dmo_search.models import load_model

        t0 = time.perf_counter()
        cfgs = [ExpertConfig.model_validate(e) for e in json.loads(experts_json)]
        base = Path(base_path)
        model: Any = load_model(base)
        experts = load_expert_set(model, base, cfgs)
        method = MergeMethod.from_json(method_json) if method_json else None
        merger = InPlaceMerger(model, experts, exclude_lora=exclude_lora, exclude_full=exclude_full, method=method)
        # Every tensor of every engine layer the merge touches: a fused layer is loaded whole.
        touched = {id(self._dmo_engine_module(e.name.rpartition(".")[0])[0]) for e in merger.entries}
        send: list[tuple[str, torch.Tensor]] = []
        for name, p in model.named_parameters():
            mod_name = name.rpartition(".")[0]
            try:
                mod, _ = self._dmo_engine_module(mod_name)
            except AttributeError:
                continue
            if id(mod) in touched:
                send.append((name, p.detach()))
        self._dmo_merger = merger
        self._dmo_send = send
        self._dmo_reload = self._dmo_needs_reload()
        self._dmo_base, self._dmo_serving = base, None
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        self._dmo_dependents = self._dmo_find_dependents(touched)
        del model  # the plan keeps only the tensors it sends
        gc.collect()
        nbytes = merger.nbytes() + sum(t.nbytes for _, t in send)
        return {
            "n_tensors": len(send),
            "n_merged": len(merger.entries),
            "nbytes": nbytes,
            "path": "reload_weights" if self._dmo_reload else "load_weights",
            "dependents": [n for n, m in self._dmo_model().named_modules() if m in self._dmo_dependents],
            "seconds": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def dmo_apply(self, weights: Sequence[float]) -> dict[str, float]:
        """Write theta(w) into the engine. Returns ``{"merge_s": ..., "load_s": ...}``."""
        t0 = time.perf_counter()
        self._dmo_merger.apply(list(weights))
        t1 = time.perf_counter()
        self._dmo_push()
        return {"merge_s": t1 - t0, "load_s": time.perf_counter() - t1}

    @torch.no_grad()
    def dmo_restore(self) -> dict[str, float]:
        """Put the base weights back (bit for bit on the transformers side, then loaded)."""
        t0 = time.perf_counter()
        self._dmo_merger.restore()
        t1 = time.perf_counter()
        self._dmo_push()
        return {"merge_s": t1 - t0, "load_s": time.perf_counter() - t1}

    @torch.no_grad()
    def dmo_serve_checkpoint(self, path: str) -> dict[str, float]:
        """Load every tensor of the full checkpoint folder ``path`` (the base's architecture) into the
        engine: it then serves that model. The next :meth:`dmo_apply` or :meth:`dmo_restore` loads the
        base back first. Returns ``{"load_s": ..., "n_tensors": ...}``."""
        t0 = time.perf_counter()
        self._dmo_serving = path  # first: a load that fails half-way also makes the next push reload the base
        n = self._dmo_load_folder(Path(path))
        return {"load_s": time.perf_counter() - t0, "n_tensors": float(n)}

    def dmo_set_method(self, method_json: str) -> None:
        """Merge with this method (:meth:`~dmo_search.merge_methods.MergeMethod.to_json`) from the next
        :meth:`dmo_apply` on; the base, the experts and the plan stay."""
        from dmo_search.merge_methods import MergeMethod

        self._dmo_merger.set_method(MergeMethod.from_json(method_json))

    def dmo_planned_names(self) -> list[str]:
        """Checkpoint names of the tensors each swap loads (merged ones and their layer siblings)."""
        return [n for n, _ in self._dmo_send]

    @torch.no_grad()
    def dmo_checksums(self, names: Sequence[str]) -> dict[str, tuple[float, float]]:
        """(sum, sum of squares) of the engine's operative value of each checkpoint tensor ``names``.

        Linear weights (and ``lm_head.weight``, tied or not) are read by running the layer's own kernel
        on the identity (``x W^T`` with ``x = I``), so repacked CPU weights are read too; other tensors
        are read from their parameter. Padded rows (vocabulary padding) are cut to the checkpoint's
        shape when known (the planned tensors; ``lm_head`` to the embedding's rows).
        """
        from vllm.model_executor.layers.linear import LinearBase
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

        shapes = {n: tuple(t.shape) for n, t in getattr(self, "_dmo_send", [])}
        for n, shape in list(shapes.items()):
            if n.endswith("embed_tokens.weight"):
                shapes.setdefault("lm_head.weight", shape)
        out: dict[str, tuple[float, float]] = {}
        cache: dict[int, torch.Tensor] = {}
        for name in names:
            mod_name, _, pname = name.rpartition(".")
            mod, part = self._dmo_engine_module(mod_name)
            if isinstance(mod, LinearBase | ParallelLMHead) and pname == "weight":
                key = id(mod)
                if key not in cache:
                    qm: Any = mod.quant_method
                    k = int(getattr(mod, "input_size_per_partition", 0) or getattr(mod, "embedding_dim", 0))
                    dev = next((b.device for b in mod.parameters()), torch.device("cpu"))
                    dtype: Any = getattr(mod, "params_dtype", None) or next(mod.parameters()).dtype
                    eye = torch.eye(k, dtype=dtype, device=dev)
                    cache[key] = qm.apply(mod, eye, None).T  # out x in
                t = cache[key]
            else:
                t = getattr(mod, pname)
            if part is not None:
                sizes: list[int] = list(getattr(mod, "output_sizes", []))
                start = sum(sizes[:part])
                t = t[start : start + sizes[part]]
            if name in shapes and tuple(t.shape) != shapes[name]:
                t = t[tuple(slice(0, s) for s in shapes[name])]
            out[name] = tensor_checksum(t)
        return out
