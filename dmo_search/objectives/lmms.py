"""The ``lmms_eval`` objective: lmms-eval (0.7.3) tasks scored on the study's live backend.

As :mod:`dmo_search.objectives.harness` for lm-eval: tasks loaded once, requests sent to the running
engine through :class:`~dmo_search.objectives.lmms_adapter.BackendLMMS` (no new engine, the response
cache off), each task's result key divided by ``scale`` must lie in [0, 1], a list of keys is summed
(MME: ``[mme_cognition_score,none, mme_perception_score,none]`` with ``scale: 2800``), and a missing
or failing task fails the trial.

lmms-eval 0.7.3 selects documents only by ``limit`` (the first N). Here each task's evaluation split
is replaced, before every run, by the seeded subset (``Dataset.select``; in ``dataset`` and in the
copy without images that lmms-eval iterates), so lmms-eval scores exactly the recorded documents and
its ``doc_to_visual`` lookups index the same subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dmo_search.objectives.base import ObjectiveError, ObjectiveResult, aggregate, bootstrap_se
from dmo_search.objectives.data import nested_subset, select_subset
from dmo_search.objectives.harness import task_score

if TYPE_CHECKING:
    from dmo_search.backends import Backend
    from dmo_search.config import LMEvalTaskConfig, ObjectiveConfig

__all__ = ["LMMSEvalObjective"]

_INSTALL = (
    "objective.type lmms_eval needs lmms-eval 0.7.3, which needs torchvision: install torch and torchvision "
    "as a pair that loads together (see the Makefile's TORCH) and then `pip install lmms-eval==0.7.3`"
)


@dataclass
class _Task:
    cfg: LMEvalTaskConfig
    task: Any  # lmms_eval.api.task.Task
    split: str
    full: Any  # the whole evaluation split (datasets.Dataset)
    full_no_media: Any  # lmms-eval's copy without image columns, which it iterates
    indices: tuple[int, ...]


class LMMSEvalObjective:
    """Scores the backend's current model on lmms-eval tasks (see the module docstring).

    Args:
        cfg: the objective config (``type: lmms_eval``).

    Raises:
        ObjectiveError: lmms-eval is missing, a task is unknown, or has no evaluation split.
    """

    def __init__(self, cfg: ObjectiveConfig) -> None:
        try:
            from lmms_eval.tasks import TaskManager, get_task_dict
        except ImportError as e:
            raise ObjectiveError(f"{_INSTALL} ({e})") from e
        self.cfg = cfg
        self.domains = cfg.domains
        self.weights = cfg.aggregation if isinstance(cfg.aggregation, dict) else None
        self.fidelities = cfg.fidelities
        self.prune_z = cfg.prune_z
        self.manager = TaskManager(include_path=str(cfg.include_path) if cfg.include_path else None)
        unknown = [n for n in self.domains if n not in self.manager.all_tasks]
        if unknown:
            raise ObjectiveError(f"lmms-eval knows no task {unknown}; check the names or objective.include_path")
        try:
            loaded = get_task_dict(self.domains, self.manager)
        except Exception as e:
            raise ObjectiveError(f"lmms-eval could not load {self.domains}: {type(e).__name__}: {e}") from e
        self.tasks: dict[str, _Task] = {}
        for tc in cfg.tasks or []:
            task = loaded.get(tc.name)
            if task is None or isinstance(task, dict):
                raise ObjectiveError(f"objective.tasks: {tc.name!r} is a group; list its subtasks instead")
            split = task.config.test_split or task.config.validation_split
            if split is None:
                raise ObjectiveError(f"task {tc.name!r} has no test or validation split")
            full = task.dataset[split]
            no_media = getattr(task, "dataset_no_image", None)
            full_no_media = no_media[split] if no_media is not None and no_media is not task.dataset else None
            if cfg.num_fewshot is not None and task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=cfg.num_fewshot)
            idx = tuple(select_subset(len(full), cfg.subset_size, seed=cfg.subset_seed, domain=tc.name))
            self.tasks[tc.name] = _Task(tc, task, split, full, full_no_media, idx)

    def record(self) -> dict[str, object]:
        """The tasks, their result keys and fixed document subsets (stored in the study)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("lmms_eval")
        except PackageNotFoundError:  # imported from a folder on sys.path, not installed
            ver = "unknown"
        return {
            "type": "lmms_eval",
            "lmms_eval_version": ver,
            "subsets": {
                n: {"n_total": len(t.full), "indices": list(t.indices), "metric": t.cfg.metric, "scale": t.cfg.scale}
                for n, t in self.tasks.items()
            },
        }

    def evaluate(self, backend: Backend, *, n: int | None = None) -> ObjectiveResult:
        """Run every task through lmms-eval on ``backend``; ``n``: a nested sub-sample per task."""
        from lmms_eval import evaluator

        from dmo_search.objectives.lmms_adapter import BackendLMMS

        for name, t in self.tasks.items():
            keep = nested_subset(t.indices, n, seed=self.cfg.subset_seed, domain=name)
            t.task.dataset[t.split] = t.full.select(keep)
            if t.full_no_media is not None:
                t.task.dataset_no_image[t.split] = t.full_no_media.select(keep)
        lm = BackendLMMS(backend, batch_size=self.cfg.batch_size, default_max_new_tokens=self.cfg.max_new_tokens)
        try:
            res = evaluator.simple_evaluate(
                model=lm,
                tasks=[t.task for t in self.tasks.values()],
                task_manager=self.manager,
                use_cache=None,
                bootstrap_iters=0,
                log_samples=True,
            )
        except Exception as e:
            raise ObjectiveError(f"lmms-eval failed on tasks {self.domains}: {type(e).__name__}: {e}") from e
        if res is None:
            raise ObjectiveError("lmms-eval returned no results")
        scores: dict[str, float] = {}
        per_example: dict[str, list[float]] = {}
        for name, t in self.tasks.items():
            metric = t.cfg.metric or _first_metric(res, name)
            scores[name], per_example[name] = task_score(name, metric, t.cfg.scale, res)
        return ObjectiveResult(
            value=aggregate(scores, self.weights),
            scores=scores,
            value_se=bootstrap_se(per_example, self.weights),
            n_examples={name: min(n or len(t.indices), len(t.indices)) for name, t in self.tasks.items()},
        )


def _first_metric(res: Any, name: str) -> str:
    row = res.get("results", {}).get(name, {})
    keys = [k for k in row if "," in k and "_stderr" not in k]
    if not keys:
        raise ObjectiveError(f"task {name!r} reports no metric; set objective.tasks[].metric")
    return str(keys[0])
