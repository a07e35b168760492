"""The ``lm_eval`` objective: lm-evaluation-harness tasks scored on the study's live backend.

Tasks are loaded once (``TaskManager``, with ``objective.include_path`` for local task YAMLs). Each
task's validation subset is a seeded random sample of its evaluation documents (``subset_size``,
``subset_seed``; lm-eval's ``limit`` would take the first N), fixed for the study and recorded in it;
lm-eval scores exactly those documents (its ``samples`` argument). Requests go through
:class:`~dmo_search.objectives.lm_eval_adapter.BackendLM`, so no engine is started per candidate and
no response is cached between candidates.

A task's score is its result key (``objective.tasks[i].metric``, default the task's first metric
under its first filter) divided by ``scale``; it must lie in [0, 1]. A task that fails, reports no
such key, or falls outside [0, 1] fails the trial: nothing is dropped from the mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dmo_search.objectives.base import ObjectiveError, ObjectiveResult, aggregate, bootstrap_se
from dmo_search.objectives.data import nested_subset, select_subset

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.config import LMEvalTaskConfig, ObjectiveConfig

__all__ = ["LMEvalObjective", "task_score"]


@dataclass(frozen=True)
class _Task:
    cfg: LMEvalTaskConfig
    task: Any  # lm_eval.api.task.Task
    n_total: int
    indices: tuple[int, ...]
    metric: str | list[str]  # "name,filter", or keys to sum
    greedy: bool  # output_type loglikelihood: lm-eval needs is_greedy


def _default_metric(task: Any) -> str:
    metrics = list(getattr(task, "_metric_fn_list", {}) or {})
    filters = [getattr(f, "name", "none") for f in getattr(task, "_filters", [])] or ["none"]
    if not metrics:
        raise ObjectiveError(f"task {task.config.task!r} defines no metric; set objective.tasks[].metric")
    return f"{metrics[0]},{filters[0]}"


class LMEvalObjective:
    """Scores the backend's current model on lm-eval tasks (see the module docstring).

    Args:
        cfg: the objective config (``type: lm_eval``).

    Raises:
        ObjectiveError: a task is unknown, or is a group (list its subtasks instead).
    """

    def __init__(self, cfg: ObjectiveConfig) -> None:
        try:
            from lm_eval.tasks import TaskManager
        except ImportError as e:
            raise ObjectiveError(f"objective.type lm_eval needs lm-eval: pip install lm-eval==0.4.13 ({e})") from e

        self.cfg = cfg
        self.domains = cfg.domains
        self.weights = cfg.aggregation if isinstance(cfg.aggregation, dict) else None
        self.fidelities = cfg.fidelities
        self.prune_z = cfg.prune_z
        include = str(cfg.include_path) if cfg.include_path else None
        # Indexing lm-eval's built-in tasks takes ~15 s: skip it when include_path holds every task.
        tm = TaskManager(include_path=include, include_defaults=False) if include else None
        if tm is None or any(n not in tm.all_tasks for n in self.domains):
            tm = TaskManager(include_path=include)
        unknown = [n for n in self.domains if n not in tm.all_tasks]
        if unknown:
            where = f" or in {cfg.include_path}" if cfg.include_path else "; set objective.include_path for local YAMLs"
            raise ObjectiveError(f"lm-eval knows no task {unknown}{where}")
        try:
            loaded = tm.load(self.domains)
        except Exception as e:
            raise ObjectiveError(f"lm-eval could not load tasks {self.domains}: {type(e).__name__}: {e}") from e
        if loaded.get("groups"):
            raise ObjectiveError(
                f"objective.tasks holds task groups {sorted(map(str, loaded['groups']))}; list their subtasks instead"
            )
        self.task_dict = loaded
        self.tasks: dict[str, _Task] = {}
        for tc in cfg.tasks or []:
            task = loaded["tasks"][tc.name]
            if cfg.num_fewshot is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=cfg.num_fewshot)
            elif task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=cfg.subset_seed)
            n_total = len(task.eval_docs)
            if n_total == 0:
                raise ObjectiveError(f"task {tc.name!r} has no evaluation documents")
            idx = tuple(select_subset(n_total, cfg.subset_size, seed=cfg.subset_seed, domain=tc.name))
            self.tasks[tc.name] = _Task(
                tc,
                task,
                n_total,
                idx,
                tc.metric or _default_metric(task),
                task.get_config("output_type") == "loglikelihood",
            )

    def record(self) -> dict[str, object]:
        """The tasks, their result keys and fixed document subsets (stored in the study)."""
        from importlib.metadata import version

        return {
            "type": "lm_eval",
            "lm_eval_version": version("lm_eval"),
            "subsets": {
                n: {"n_total": t.n_total, "indices": list(t.indices), "metric": t.metric, "scale": t.cfg.scale}
                for n, t in self.tasks.items()
            },
        }

    def evaluate(self, backend: Backend, *, n: int | None = None) -> ObjectiveResult:
        """Run every task through lm-eval on ``backend``; ``n`` scores a nested seeded sub-sample
        of each fixed subset (multi-fidelity)."""
        from lm_eval.evaluator import evaluate

        from dmo_search.objectives.lm_eval_adapter import BackendLM

        lm = BackendLM(
            backend,
            batch_size=self.cfg.batch_size,
            default_max_gen_toks=self.cfg.max_new_tokens,
            greedy_tasks=[n_ for n_, t in self.tasks.items() if t.greedy],
        )
        samples = {
            name: nested_subset(t.indices, n, seed=self.cfg.subset_seed, domain=name) for name, t in self.tasks.items()
        }
        try:
            res = evaluate(
                lm=lm,
                task_dict=self.task_dict,
                samples=samples,
                bootstrap_iters=0,
                log_samples=True,
                apply_chat_template=self.cfg.chat_template,
                fewshot_as_multiturn=self.cfg.chat_template,
            )
        except Exception as e:
            raise ObjectiveError(f"lm-eval failed on tasks {self.domains}: {type(e).__name__}: {e}") from e
        if res is None:
            raise ObjectiveError("lm-eval returned no results")
        scores: dict[str, float] = {}
        per_example: dict[str, list[float]] = {}
        for name, t in self.tasks.items():
            scores[name], per_example[name] = task_score(name, t.metric, t.cfg.scale, res)
        return ObjectiveResult(
            value=aggregate(scores, self.weights),
            scores=scores,
            value_se=bootstrap_se(per_example, self.weights),
            n_examples={d: len(v) for d, v in per_example.items()},
        )


def task_score(name: str, metric: str | list[str], scale: float, res: Any) -> tuple[float, list[float]]:
    """A task's normalised score from an lm-eval / lmms-eval results dict, and its per-document
    scores (for the bootstrap SE; ``[score]`` when the metric is not a per-document mean).

    Raises:
        ObjectiveError: no result for the task, a missing key, or a score outside [0, 1].
    """
    row = res.get("results", {}).get(name)
    if row is None:
        raise ObjectiveError(f"the harness reported no result for task {name!r}")
    keys = [metric] if isinstance(metric, str) else list(metric)
    missing = [k for k in keys if k not in row]
    if missing:
        known = sorted(k for k in row if "," in k and "_stderr" not in k)
        raise ObjectiveError(f"task {name!r} reports no {missing}; set objective.tasks[].metric to one of {known}")
    value = sum(float(row[k]) for k in keys) / scale
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ObjectiveError(
            f"task {name!r}: {' + '.join(keys)} / {scale} = {value} is outside [0, 1]; set objective.tasks[].scale"
        )
    per: list[float] = []
    if len(keys) == 1:
        m, filt = keys[0].split(",", 1) if "," in keys[0] else (keys[0], "none")
        per = [
            float(s[m]) / scale
            for s in res.get("samples", {}).get(name, [])
            if s.get("filter", filt) == filt and isinstance(s.get(m), (int, float))
        ]
    if not per or abs(sum(per) / len(per) - value) > 1e-9:
        # Not a per-document mean (e.g. a corpus-level metric or a sum of keys): the SE counts it as exact.
        per = [value]
    return value, per
