"""The study config: one frozen pydantic schema for a study YAML.

Every error names the field, the bad value and the fix (see :class:`ConfigError`). Paths in a YAML
file are relative to that file's folder and are resolved to absolute paths on load, so a config
stored in the study DB means the same thing from any working directory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dmo_search import simplex
from dmo_search.sampling import SamplerName

__all__ = [
    "DEFAULT_EXCLUDE_FULL",
    "DEFAULT_EXCLUDE_LORA",
    "BackendConfig",
    "ConfigError",
    "ExpertConfig",
    "MergeConfig",
    "ObjectiveConfig",
    "SearchConfig",
    "StudyConfig",
    "WorkerConfig",
    "apply_overrides",
    "default_storage",
    "load_config",
]

# The paper's code keeps these parameters at base values (substring match on the parameter name).
# LoRA mode: everything outside the language model's linear layers.
DEFAULT_EXCLUDE_LORA: tuple[str, ...] = (
    "visual",
    "embed_tokens",
    "lm_head",
    "norm",
    "bias",
    "vision_tower",
    "multi_modal_projector",
)
# Full fine-tune mode: only the vision encoder's blocks and patch embedding.
DEFAULT_EXCLUDE_FULL: tuple[str, ...] = ("visual.blocks", "visual.patch_embed", "vision_tower")


class ConfigError(ValueError):
    """A study config is invalid; the message lists each bad field, its value and the fix."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExpertConfig(_Frozen):
    """One domain expert fine-tuned from the base."""

    name: str = Field(description="unique name; also the key of its weight in a mixture")
    path: Path = Field(description="a peft LoRA adapter dir (kind lora) or a full checkpoint (kind full)")
    kind: Literal["lora", "full"]
    domain: str | None = Field(default=None, description="the training domain; defaults to name")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"expert name {v!r} may only hold letters, digits, '_', '.', '-'")
        return v


class ObjectiveConfig(_Frozen):
    """What a candidate is scored on: local JSONL validation sets, one per domain."""

    type: Literal["exact_match", "loglik"] = "exact_match"
    validation: dict[str, Path] = Field(description="domain -> JSONL file of {prompt, answers}")
    subset_size: int | None = Field(default=100, ge=1, description="examples per domain; null = all")
    subset_seed: int = 0
    aggregation: Literal["mean"] | dict[str, float] = Field(
        default="mean", description="'mean' (unweighted) or {domain: weight} for a weighted mean"
    )
    chat_template: bool = True
    max_new_tokens: int = Field(default=32, ge=1)
    batch_size: int = Field(default=64, ge=1)

    @field_validator("validation")
    @classmethod
    def _non_empty(cls, v: dict[str, Path]) -> dict[str, Path]:
        if not v:
            raise ValueError("objective.validation is empty; map each domain to a JSONL file")
        return v

    @model_validator(mode="after")
    def _aggregation_matches(self) -> ObjectiveConfig:
        if isinstance(self.aggregation, dict):
            extra = sorted(set(self.aggregation) - set(self.validation))
            missing = sorted(set(self.validation) - set(self.aggregation))
            if extra or missing:
                raise ValueError(
                    f"aggregation weights must name exactly the validation domains "
                    f"{sorted(self.validation)}; unknown {extra}, missing {missing}"
                )
            if any(x < 0 for x in self.aggregation.values()) or sum(self.aggregation.values()) <= 0:
                raise ValueError("aggregation weights must be >= 0 with a positive sum")
        return self


DesignSpec = str | list[float] | dict[str, float]


class SearchConfig(_Frozen):
    """How mixtures are proposed."""

    sampler: SamplerName = "gp-simplex"
    n_trials: int = Field(default=20, ge=1, description="completed trials the study aims at in total")
    seed: int = 0
    designs: list[DesignSpec] = Field(
        default_factory=list,
        description=(
            "mixtures enqueued as the first trials: 'centre', 'vertices', 'paper', 'grid:STEP', "
            "'dirichlet:N[:SEED]', a list of K weights, or {expert: weight}"
        ),
    )


class BackendConfig(_Frozen):
    """The inference engine that scores merged models."""

    name: Literal["hf", "vllm"] = "hf"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field(default="cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto'")
    mode: Literal["auto", "dense", "lora"] = Field(
        default="auto",
        description=(
            "vllm only: 'dense' writes theta(w) into the engine's weights; 'lora' serves the LoRA experts' merge "
            "as one adapter of rank sum(r_i); 'auto' = lora when every expert is LoRA, sum(r_i) <= 512 and vLLM "
            "runs on a GPU, else dense"
        ),
    )
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="vllm only: share of GPU memory (on CPU: of host RAM) vLLM may take; null = vLLM's default on GPU",
    )
    kv_cache_gb: float | None = Field(
        default=None,
        gt=0,
        description="vllm only: KV cache size in GiB (overrides gpu_memory_utilization); null = 1 GiB on CPU",
    )


class WorkerConfig(_Frozen):
    """How a worker process runs trials."""

    heartbeat_interval: int = Field(default=5, ge=1, description="seconds between a running trial's heartbeats")
    grace_period: int = Field(
        default=15, ge=2, description="seconds without heartbeat after which a RUNNING trial counts as dead"
    )
    max_consecutive_failures: int = Field(default=3, ge=1, description="stop after this many failed trials in a row")

    @model_validator(mode="after")
    def _grace_exceeds_interval(self) -> WorkerConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"worker.grace_period ({self.grace_period}) must exceed worker.heartbeat_interval "
                f"({self.heartbeat_interval}), or live trials would be failed; raise grace_period"
            )
        return self


class MergeConfig(_Frozen):
    """Which parameters stay at base values (substring match), per expert kind."""

    exclude_lora: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_LORA))
    exclude_full: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_FULL))


class StudyConfig(_Frozen):
    """A whole study: base, experts, objective, search, backend, storage and merge options."""

    study_name: str
    base_model: Path
    experts: list[ExpertConfig]
    objective: ObjectiveConfig
    search: SearchConfig = Field(default_factory=SearchConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    storage: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite:///studies/<name>/study.db")
    merge: MergeConfig = Field(default_factory=MergeConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)

    @field_validator("study_name")
    @classmethod
    def _study_name_ok(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"study_name {v!r} may only hold letters, digits, '_', '.', '-'")
        return v

    @model_validator(mode="after")
    def _experts_ok(self) -> StudyConfig:
        if len(self.experts) < 2:
            raise ValueError(f"a mixture needs at least 2 experts, got {len(self.experts)}; add experts")
        names = [e.name for e in self.experts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"expert names must be unique, {dupes} repeat; rename them")
        for i, spec in enumerate(self.search.designs):
            resolve_design(spec, names, where=f"search.designs[{i}]")
        return self

    @property
    def expert_names(self) -> list[str]:
        """Names of the experts, in mixture-weight order."""
        return [e.name for e in self.experts]

    @property
    def n_domains(self) -> int:
        """K, the number of mixture weights."""
        return len(self.experts)

    def storage_url(self) -> str:
        """The study DB URL: ``storage`` or the default SQLite file under ``studies/<name>/``."""
        return self.storage or default_storage(self.study_name)

    def designs(self) -> list[list[float]]:
        """All configured designs resolved to weight vectors, in order, duplicates removed."""
        out: list[list[float]] = []
        for i, spec in enumerate(self.search.designs):
            for w in resolve_design(spec, self.expert_names, where=f"search.designs[{i}]"):
                if not any(simplex.simplex_distance(w, o) < 1e-9 for o in out):
                    out.append(w)
        return out

    def to_json(self) -> str:
        """The config as JSON (absolute paths), as stored in the study DB."""
        return self.model_dump_json()


def default_storage(study_name: str) -> str:
    """``sqlite:///studies/<study_name>/study.db`` under the current directory, as an absolute URL."""
    return f"sqlite:///{(Path.cwd() / 'studies' / study_name / 'study.db').resolve()}"


def resolve_design(spec: DesignSpec, names: list[str], *, where: str = "design") -> list[list[float]]:
    """Turn one design entry into weight vectors (see :class:`SearchConfig`)."""
    k = len(names)
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise ValueError(f"{where}: unknown experts {unknown}; known: {names}")
        return [simplex.check_weights([float(spec.get(n, 0.0)) for n in names], k)]
    if isinstance(spec, list):
        try:
            return [simplex.check_weights(spec, k)]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    token, *args = spec.split(":")
    try:
        if token == "centre" and not args:
            return [simplex.centre(k)]
        if token == "vertices" and not args:
            return simplex.vertices(k)
        if token == "paper" and not args:
            return simplex.paper_design(k)
        if token == "grid" and len(args) <= 1:
            return simplex.grid_design(k, int(args[0]) if args else 8, interior=False)
        if token == "dirichlet" and 1 <= len(args) <= 2:
            seed = int(args[1]) if len(args) == 2 else 42
            return simplex.dirichlet_design(k, int(args[0]), seed=seed)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    raise ValueError(
        f"{where}: unknown design {spec!r}; use 'centre', 'vertices', 'paper', 'grid:STEP', "
        "'dirichlet:N[:SEED]', a list of weights or {expert: weight}"
    )


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid study config ({err.error_count()} problem(s)):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = json.dumps(value, default=str)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or fix its spelling (see README: Study config)"
        elif e["type"] == "missing":
            msg = "required key is missing; add it"
            shown = "(absent)"
        lines.append(f"  - {loc} = {shown}: {msg}")
    return "\n".join(lines)


def _resolve_paths(raw: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    def res(p: Any) -> Any:
        if isinstance(p, str):
            q = Path(os.path.expanduser(p))
            return str(q if q.is_absolute() else (base_dir / q).resolve())
        return p

    out = dict(raw)
    if "base_model" in out:
        out["base_model"] = res(out["base_model"])
    if isinstance(out.get("experts"), list):
        out["experts"] = [
            {**e, "path": res(e["path"])} if isinstance(e, dict) and "path" in e else e for e in out["experts"]
        ]
    obj = out.get("objective")
    if isinstance(obj, dict) and isinstance(obj.get("validation"), dict):
        out["objective"] = {**obj, "validation": {k: res(v) for k, v in obj["validation"].items()}}
    return out


def parse_config(raw: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "config") -> StudyConfig:
    """Validate a config mapping; relative paths resolve against ``base_dir`` (default: cwd).

    Raises:
        ConfigError: listing every bad field with its value and the fix.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a study config must be a mapping of keys, got {type(raw).__name__}")
    data = _resolve_paths(dict(raw), (base_dir or Path.cwd()).resolve())
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: str | Path) -> StudyConfig:
    """Load and validate a study YAML file.

    Raises:
        ConfigError: the file is missing, is not YAML, or a field is invalid.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass the path of a study YAML")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    return parse_config(raw or {}, base_dir=p.parent, source=str(p))


def apply_overrides(cfg: StudyConfig, **overrides: Any) -> StudyConfig:
    """Return ``cfg`` with CLI overrides applied (``None`` values are ignored).

    Known keys: ``storage``, ``study_name``, ``backend``, ``seed``, ``n_trials``, ``sampler``.
    """
    data = json.loads(cfg.model_dump_json())
    mapping = {
        "storage": ("storage",),
        "study_name": ("study_name",),
        "backend": ("backend", "name"),
        "seed": ("search", "seed"),
        "n_trials": ("search", "n_trials"),
        "sampler": ("search", "sampler"),
    }
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in mapping:
            raise ValueError(f"unknown override {key!r}; known: {sorted(mapping)}")
        *parents, leaf = mapping[key]
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    return parse_config(data, source="config with command-line overrides")
