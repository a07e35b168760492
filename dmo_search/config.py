"""The study config: one frozen pydantic schema for a study YAML.

Every error names the field, the bad value and the fix (see :class:`ConfigError`). Paths in a YAML
file are relative to that file's folder and are resolved to absolute paths on load, so a config
stored in the study DB means the same thing from any working directory.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dmo_search import simplex
from dmo_search.constraints import DataCaps, MixtureConstraints
from dmo_search.merge_params import MergeMethodName, ParamValue, resolve_params
from dmo_search.promote.config import PromotionConfig
from dmo_search.sampling import CONSTRAINED_SAMPLERS, SamplerName

__all__ = [
    "DEFAULT_EXCLUDE_FULL",
    "DEFAULT_EXCLUDE_LORA",
    "BackendConfig",
    "ConfigError",
    "ConstraintsConfig",
    "DataCapsConfig",
    "ExpertConfig",
    "LMEvalTaskConfig",
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

# Every way to name a design in `search.designs` (resolve_design parses 'grid' and 'dirichlet' itself),
# for the field's description and the unknown-design error.
_DESIGN_SPELLINGS = ", ".join([*(repr(n) for n in simplex.NAMED_DESIGNS), "'grid:STEP'", "'dirichlet:N[:SEED]'"])


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


_TASK_TYPES = ("lm_eval", "lmms_eval")


class LMEvalTaskConfig(_Frozen):
    """One lm-eval task of an ``lm_eval`` objective: its name, result key and normalisation."""

    name: str = Field(description="the lm-eval task name (built in, or from objective.include_path)")
    metric: str | list[str] | None = Field(
        default=None,
        description="result key, e.g. 'acc,none'; a list is summed (MME: cognition + perception); default the first",
    )
    scale: float = Field(default=1.0, gt=0, description="the score is value / scale and must lie in [0, 1]")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


class ObjectiveConfig(_Frozen):
    """What a candidate is scored on: local JSONL validation sets (one per domain) or lm-eval tasks."""

    type: Literal["exact_match", "loglik", "lm_eval", "lmms_eval"] = "exact_match"
    validation: dict[str, Path] = Field(
        default_factory=dict, description="domain -> JSONL file of {prompt, answers} (exact_match, loglik)"
    )
    # None, not []: configs stored by earlier versions have no such key, and the study compares configs.
    tasks: list[LMEvalTaskConfig] | None = Field(default=None, description="lm_eval: the tasks, names or mappings")
    include_path: Path | None = Field(default=None, description="lm_eval: a folder of extra task YAMLs")
    metric: (
        Literal["exact_match", "exact_match_hf", "vqa_accuracy", "anls", "relaxed_accuracy", "choice_letter"] | None
    ) = Field(default=None, description="exact_match type: how an answer is scored; null = exact_match")
    num_fewshot: int | None = Field(default=None, ge=0, description="lm_eval: override the tasks' few-shot count")
    fidelities: list[int] | None = Field(
        default=None,
        description="[n_small, ..., n_full]: score on nested subsets of these sizes and prune hopeless candidates",
    )
    prune_z: float | None = Field(
        default=None, ge=0, description="fidelities: standard errors of benefit of the doubt before pruning; null = 2"
    )
    subset_size: int | None = Field(default=100, ge=1, description="examples per domain; null = all")
    subset_seed: int = 0
    aggregation: Literal["mean"] | dict[str, float] = Field(
        default="mean", description="'mean' (unweighted) or {domain: weight} for a weighted mean"
    )
    chat_template: bool = True
    max_new_tokens: int = Field(default=32, ge=1)
    batch_size: int = Field(default=64, ge=1)

    @property
    def domains(self) -> list[str]:
        """What is scored and aggregated: the validation domains, or the lm-eval task names."""
        return [t.name for t in self.tasks or []] if self.type in _TASK_TYPES else list(self.validation)

    @model_validator(mode="after")
    def _sources_match_type(self) -> ObjectiveConfig:
        if self.type in _TASK_TYPES:
            if not self.tasks:
                raise ValueError(f"objective.type is {self.type} but objective.tasks is empty; list task names")
            if self.validation:
                raise ValueError(f"objective.validation is for exact_match/loglik; {self.type} scores objective.tasks")
            names = self.domains
            if len(set(names)) != len(names):
                raise ValueError(f"objective.tasks repeat a task: {names}; list each task once")
        else:
            if not self.validation:
                raise ValueError("objective.validation is empty; map each domain to a JSONL file")
            if self.tasks or self.include_path is not None or self.num_fewshot is not None:
                raise ValueError("objective.tasks/include_path/num_fewshot need objective.type: lm_eval or lmms_eval")
        if self.metric not in (None, "exact_match") and self.type != "exact_match":
            raise ValueError("objective.metric scores generated answers: it needs objective.type: exact_match")
        if self.fidelities is not None:
            f = self.fidelities
            if len(f) < 2 or any(x < 1 for x in f) or any(f[i + 1] <= f[i] for i in range(len(f) - 1)):
                raise ValueError(f"objective.fidelities must be >= 2 increasing positive sizes, got {f}")
            if self.subset_size is not None and f[-1] != self.subset_size:
                raise ValueError(
                    f"objective.fidelities must end at objective.subset_size ({self.subset_size}), got {f}"
                )
        return self

    @model_validator(mode="after")
    def _aggregation_matches(self) -> ObjectiveConfig:
        if isinstance(self.aggregation, dict):
            extra = sorted(set(self.aggregation) - set(self.domains))
            missing = sorted(set(self.domains) - set(self.aggregation))
            if extra or missing:
                raise ValueError(
                    f"aggregation weights must name exactly the scored domains "
                    f"{sorted(self.domains)}; unknown {extra}, missing {missing}"
                )
            if any(x < 0 for x in self.aggregation.values()) or sum(self.aggregation.values()) <= 0:
                raise ValueError("aggregation weights must be >= 0 with a positive sum")
        return self


DesignSpec = str | list[float] | dict[str, float]


class DataCapsConfig(_Frozen):
    """Finite-data caps: ``w_j <= max_epochs * domain_sizes[j] / sft_samples``."""

    domain_sizes: dict[str, int] | None = Field(
        default=None,
        description="examples per domain (experts not listed are not capped); null = count the lines of "
        "promotion.train_data",
    )
    sft_samples: int | None = Field(
        default=None, ge=1, description="R, examples of the planned mixture-SFT run; null = promotion.n_examples"
    )
    max_epochs: float = Field(default=1.0, gt=0, description="E, the most passes over one domain's data")

    @field_validator("domain_sizes")
    @classmethod
    def _positive(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        bad = {k: n for k, n in (v or {}).items() if n < 1}
        if bad:
            raise ValueError(f"domain_sizes must be >= 1 examples, got {bad}")
        return v


class GroupConstraintConfig(_Frozen):
    """A linear constraint on the total weight of a group of domains."""

    domains: list[str] = Field(min_length=1, description="expert names")
    min: float | None = Field(default=None, ge=0, le=1, description="the group's total weight is at least this")
    max: float | None = Field(default=None, ge=0, le=1, description="the group's total weight is at most this")


class ConstraintsConfig(_Frozen):
    """Hard constraints on the mixture weights (every proposal, design and exported mixture obeys them)."""

    min_weight: dict[str, float] = Field(default_factory=dict, description="{expert: minimum weight}")
    max_weight: dict[str, float] = Field(default_factory=dict, description="{expert: maximum weight}")
    data_caps: DataCapsConfig | None = Field(default=None, description="caps from finite domain data")
    groups: list[GroupConstraintConfig] = Field(default_factory=list, description="sum of a group's weights")


class SearchConfig(_Frozen):
    """How mixtures are proposed."""

    sampler: SamplerName = "gp-simplex"
    n_trials: int = Field(default=20, ge=1, description="completed trials the study aims at in total")
    seed: int = 0
    designs: list[DesignSpec] = Field(
        default_factory=list,
        description=(
            f"mixtures enqueued as the first trials: {_DESIGN_SPELLINGS}, a list of K weights, or {{expert: weight}}"
        ),
    )
    # None, not an empty section: configs stored by earlier versions have no such key.
    constraints: ConstraintsConfig | None = Field(
        default=None, description="hard constraints on the weights: bounds, data caps, groups (README: Constraints)"
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
    max_consecutive_failures: int = Field(
        default=3,
        ge=1,
        description="stop after this many failed trials in a row (a batch failed by one engine call counts once)",
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description="trials a worker claims and scores at once (exact_match on vllm: one engine call per domain)",
    )

    @model_validator(mode="after")
    def _grace_exceeds_interval(self) -> WorkerConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"worker.grace_period ({self.grace_period}) must exceed worker.heartbeat_interval "
                f"({self.heartbeat_interval}), or live trials would be failed; raise grace_period"
            )
        return self


class MergeConfig(_Frozen):
    """How theta(w) is built: the merge method and which parameters stay at base values (substring
    match), per expert kind. Unset exclusions take the base model family's defaults (``families.py``)."""

    exclude_lora: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_LORA))
    exclude_full: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDE_FULL))
    method: MergeMethodName = Field(
        default="linear",
        description="linear (the paper's), ties, dare_linear, dare_ties, tsv, iso, wudi, wudi2 (README: Merge methods)",
    )
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="the method's hyper-parameters; unset ones take the paper code's defaults"
    )
    seed: int = Field(default=0, description="seeds DARE's random drops (the same drops for every candidate)")

    @model_validator(mode="after")
    def _params_ok(self) -> MergeConfig:
        resolve_params(self.method, self.params)
        return self


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
    promotion: PromotionConfig | None = Field(default=None, description="how `promote` trains mixtures (optional)")

    @field_validator("study_name")
    @classmethod
    def _study_name_ok(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError(f"study_name {v!r} may only hold letters, digits, '_', '.', '-'")
        return v

    @model_validator(mode="before")
    @classmethod
    def _family_exclusions(cls, data: Any) -> Any:
        """Unset ``merge.exclude_lora`` / ``exclude_full`` take the base family's defaults (stored explicitly)."""
        if not isinstance(data, dict) or not isinstance(data.get("base_model"), str | Path):
            return data
        merge = data.get("merge")
        merge = {} if merge is None else merge
        if not isinstance(merge, dict) or ("exclude_lora" in merge and "exclude_full" in merge):
            return data
        from dmo_search.families import default_exclusions

        lora, full = default_exclusions(data["base_model"])
        return {**data, "merge": {"exclude_lora": lora, "exclude_full": full, **merge}}

    @model_validator(mode="before")
    @classmethod
    def _count_domain_sizes(cls, data: Any) -> Any:
        """Unset ``data_caps.domain_sizes`` / ``sft_samples`` come from the promotion section (stored explicitly)."""
        try:
            caps = data["search"]["constraints"]["data_caps"]
        except (KeyError, TypeError):
            return data
        if not isinstance(caps, dict):
            return data
        promo = data.get("promotion") if isinstance(data.get("promotion"), dict) else {}
        caps = dict(caps)
        if caps.get("sft_samples") is None and promo.get("n_examples") is not None:
            caps["sft_samples"] = promo["n_examples"]
        if caps.get("domain_sizes") is None and isinstance(promo.get("train_data"), dict):
            caps["domain_sizes"] = {name: _count_lines(Path(path)) for name, path in promo["train_data"].items()}
        search = dict(data["search"])
        search["constraints"] = {**search["constraints"], "data_caps": caps}
        return {**data, "search": search}

    @model_validator(mode="after")
    def _experts_ok(self) -> StudyConfig:
        if len(self.experts) < 2:
            raise ValueError(f"a mixture needs at least 2 experts, got {len(self.experts)}; add experts")
        names = [e.name for e in self.experts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"expert names must be unique, {dupes} repeat; rename them")
        constraints = self.constraints()
        if constraints is not None and self.search.sampler not in CONSTRAINED_SAMPLERS:
            raise ValueError(
                f"search.sampler {self.search.sampler!r} samples the whole simplex and cannot respect "
                f"search.constraints; use {' or '.join(CONSTRAINED_SAMPLERS)}"
            )
        for i, spec in enumerate(self.search.designs):
            for w in resolve_design(spec, names, where=f"search.designs[{i}]"):
                if constraints is not None and not isinstance(spec, str):
                    constraints.check(w, f"search.designs[{i}]")
        if self.worker.batch_size > 1 and self.objective.fidelities:
            raise ValueError(
                f"worker.batch_size {self.worker.batch_size} scores whole batches, but objective.fidelities prunes "
                "one trial at a time; set worker.batch_size: 1 or remove objective.fidelities"
            )
        missing = [n for n in names if self.promotion is not None and n not in self.promotion.train_data]
        if missing:  # entries for other domains are allowed (a shared promotion section) and unused
            raise ValueError(
                f"promotion.train_data has no training JSONL for the experts {missing}; "
                "map each expert name to its training JSONL"
            )
        return self

    @property
    def expert_names(self) -> list[str]:
        """Names of the experts, in mixture-weight order."""
        return [e.name for e in self.experts]

    @property
    def n_domains(self) -> int:
        """K, the number of mixture weights."""
        return len(self.experts)

    def constraints(self) -> MixtureConstraints | None:
        """``search.constraints`` over the experts (None when there are none).

        Raises:
            ValueError: an unknown expert name, missing data-cap inputs, or constraints no mixture satisfies
                (:class:`dmo_search.constraints.InfeasibleConstraintsError`, with the arithmetic).
        """
        c = self.search.constraints
        if c is None:
            return None
        caps = None
        if c.data_caps is not None:
            if c.data_caps.sft_samples is None:
                raise ValueError(
                    "search.constraints.data_caps needs sft_samples (R, the planned SFT examples) "
                    "or promotion.n_examples"
                )
            if c.data_caps.domain_sizes is None:
                raise ValueError(
                    "search.constraints.data_caps needs domain_sizes {expert: examples} "
                    "or promotion.train_data to count"
                )
            caps = DataCaps(c.data_caps.domain_sizes, c.data_caps.sft_samples, c.data_caps.max_epochs)
        groups = [(g.domains, g.min, g.max) for g in c.groups]
        built = MixtureConstraints.build(
            self.expert_names, min_weight=c.min_weight, max_weight=c.max_weight, data_caps=caps, groups=groups
        )
        return None if built.is_trivial else built

    def storage_url(self) -> str:
        """The study DB URL: ``storage`` or the default SQLite file under ``studies/<name>/``."""
        return self.storage or default_storage(self.study_name)

    def designs(self) -> list[list[float]]:
        """All configured designs resolved to weight vectors, in order, duplicates removed.

        With constraints, a named design ('paper', 'grid:8', ...) loses its infeasible mixtures (logged)
        and 'centre' is the feasible centre; listed mixtures were checked at load time.
        """
        from dmo_search.sampler import feasible_designs

        constraints = self.constraints()
        out: list[list[float]] = []
        for i, spec in enumerate(self.search.designs):
            points = resolve_design(spec, self.expert_names, where=f"search.designs[{i}]")
            if constraints is not None and isinstance(spec, str):
                if spec == "centre":
                    points = [constraints.centre()]
                else:
                    points = feasible_designs(points, constraints, f"search.designs[{i}] {spec!r}")
            for w in points:
                if not any(simplex.simplex_distance(w, o) < 1e-9 for o in out):
                    out.append(w)
        return out

    def to_json(self) -> str:
        """The config as JSON (absolute paths), as stored in the study DB."""
        return self.model_dump_json()


def _count_lines(path: Path) -> int:
    """Non-empty lines of a JSONL file (its examples), for data caps."""
    if not path.is_file():
        raise ValueError(
            f"search.constraints.data_caps counts promotion.train_data, but {path} does not exist; "
            "fix the path or give data_caps.domain_sizes"
        )
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


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
        if token in simplex.NAMED_DESIGNS and not args:
            return simplex.NAMED_DESIGNS[token](k)
        if token == "grid" and len(args) <= 1:
            return simplex.grid_design(k, int(args[0]) if args else 8, interior=False)
        if token == "dirichlet" and 1 <= len(args) <= 2:
            seed = int(args[1]) if len(args) == 2 else 42
            return simplex.dirichlet_design(k, int(args[0]), seed=seed)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    raise ValueError(
        f"{where}: unknown design {spec!r}; use {_DESIGN_SPELLINGS}, a list of weights or {{expert: weight}}"
    )


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed next to the unknown key at ``loc`` (for a did-you-mean hint)."""
    model: Any = StudyConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        stack, model = [field.annotation], None
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                model = t
                break
            stack += list(get_args(t))
        if model is None:
            return []
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


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
            close = difflib.get_close_matches(str(e["loc"][-1]), _known_keys(e["loc"]), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            msg = f"unknown key; {hint}remove it or fix its spelling (see README: Study config)"
        elif e["type"] == "missing":
            msg = "required key is missing; add it"
            shown = "(absent)"
        lines.append(f"  - {loc} = {shown}: {msg}")
    return "\n".join(lines)


def _resolve_paths(raw: dict[str, Any], base_dir: Path, source: str = "config") -> dict[str, Any]:
    def res(p: Any) -> Any:
        if isinstance(p, str):
            if "\0" in p:  # the OS refuses such a path with a bare ValueError; say which value it is
                raise ConfigError(
                    f"{source}: invalid study config: the path {json.dumps(p)} contains a NUL character, which no "
                    "file name can hold; fix the path"
                )
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
        out["objective"] = obj = {**obj, "validation": {k: res(v) for k, v in obj["validation"].items()}}
    if isinstance(obj, dict) and obj.get("include_path") is not None:
        out["objective"] = {**obj, "include_path": res(obj["include_path"])}
    promo = out.get("promotion")
    if isinstance(promo, dict):
        if isinstance(promo.get("train_data"), dict):
            promo = {**promo, "train_data": {k: res(v) for k, v in promo["train_data"].items()}}
        if promo.get("output_dir") is not None:
            promo = {**promo, "output_dir": res(promo["output_dir"])}
        out["promotion"] = promo
    return out


def parse_config(raw: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "config") -> StudyConfig:
    """Validate a config mapping; relative paths resolve against ``base_dir`` (default: cwd).

    Raises:
        ConfigError: listing every bad field with its value and the fix.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a study config must be a mapping of keys, got {type(raw).__name__}")
    data = _resolve_paths(dict(raw), (base_dir or Path.cwd()).resolve(), source)
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

    Known keys: ``storage``, ``study_name``, ``backend``, ``seed``, ``n_trials``, ``sampler``, ``batch_size``.
    """
    data = json.loads(cfg.model_dump_json())
    mapping = {
        "storage": ("storage",),
        "study_name": ("study_name",),
        "backend": ("backend", "name"),
        "seed": ("search", "seed"),
        "n_trials": ("search", "n_trials"),
        "sampler": ("search", "sampler"),
        "batch_size": ("worker", "batch_size"),
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
