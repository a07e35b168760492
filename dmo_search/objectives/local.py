"""Local JSONL objectives: normalised exact match of greedy answers, and answer log-likelihood."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from dmo_search.objectives.base import ObjectiveError, ObjectiveResult, aggregate, bootstrap_se
from dmo_search.objectives.data import ValidationSet, load_validation_set, nested_subset
from dmo_search.objectives.metrics import GENERATION_METRICS

if TYPE_CHECKING:
    from dmo_search.backends import Backend, BatchBackend
    from dmo_search.config import ObjectiveConfig

__all__ = ["ExactMatchObjective", "LoglikObjective"]


class _LocalObjective(ABC):
    """Shared loading, subsetting and aggregation; subclasses score one domain's examples."""

    def __init__(self, cfg: ObjectiveConfig) -> None:
        self.cfg = cfg
        self.sets: dict[str, ValidationSet] = {
            d: load_validation_set(d, p, cfg.subset_size, cfg.subset_seed) for d, p in cfg.validation.items()
        }
        self.domains = list(self.sets)
        self.weights = cfg.aggregation if isinstance(cfg.aggregation, dict) else None
        self.fidelities = cfg.fidelities
        self.prune_z = cfg.prune_z

    def record(self) -> dict[str, object]:
        return {"type": self.cfg.type, "subsets": {d: s.record() for d, s in self.sets.items()}}

    @abstractmethod
    def _score_domain(self, backend: Backend, vs: ValidationSet) -> list[float]:
        """One score per example of ``vs`` for the model the backend serves."""

    @abstractmethod
    def _score_domain_many(
        self, backend: BatchBackend, vs: ValidationSet, mixtures: Sequence[Sequence[float]]
    ) -> list[list[float]]:
        """:meth:`_score_domain` under each mixture: ``out[j]`` for mixture j, in one backend call."""

    def evaluate_many(self, backend: BatchBackend, mixtures: Sequence[Sequence[float]]) -> list[ObjectiveResult]:
        """Score q mixtures with one backend call per domain (vLLM's ``lora`` mode: q adapters in one
        engine batch); ``out[j]`` is what :meth:`evaluate` gives with mixture j applied. The backend's
        current mixture is unchanged.

        Raises:
            ObjectiveError: a domain could not be scored (every mixture of the batch fails with it).
        """
        per_example: list[dict[str, list[float]]] = [{} for _ in mixtures]
        for d, vs in self.sets.items():
            try:
                for j, scores in enumerate(self._score_domain_many(backend, vs, mixtures)):
                    per_example[j][d] = scores
            except Exception as e:
                raise _domain_error(d, e) from e
        return [self._result(p) for p in per_example]

    def evaluate(self, backend: Backend, *, n: int | None = None) -> ObjectiveResult:
        """Score every domain; ``n`` scores a nested seeded sub-sample of each fixed subset."""
        per_example: dict[str, list[float]] = {}
        for d, vs in self._subsets(n).items():
            try:
                per_example[d] = self._score_domain(backend, vs)
            except Exception as e:
                raise _domain_error(d, e) from e
        return self._result(per_example)

    def _prompts(self, backend: Backend, vs: ValidationSet) -> list[str]:
        """The examples' prompts, formatted for the backend's model (chat template when configured)."""
        return [backend.format_prompt(ex.prompt, chat=self.cfg.chat_template) for ex in vs.examples]

    def _subsets(self, n: int | None) -> dict[str, ValidationSet]:
        """Each domain's fixed subset, or its nested seeded sub-sample of ``n`` examples."""
        out = {}
        for d, vs in self.sets.items():
            if n is not None and n < len(vs.examples):
                keep = nested_subset(range(len(vs.examples)), n, seed=self.cfg.subset_seed, domain=d)
                vs = replace(
                    vs, indices=tuple(vs.indices[i] for i in keep), examples=tuple(vs.examples[i] for i in keep)
                )
            out[d] = vs
        return out

    def _result(self, per_example: dict[str, list[float]]) -> ObjectiveResult:
        scores = {d: sum(v) / len(v) for d, v in per_example.items()}
        return ObjectiveResult(
            value=aggregate(scores, self.weights),
            scores=scores,
            value_se=bootstrap_se(per_example, self.weights),
            n_examples={d: len(v) for d, v in per_example.items()},
        )


def _domain_error(domain: str, e: Exception) -> ObjectiveError:
    return ObjectiveError(f"domain {domain!r} could not be scored: {type(e).__name__}: {e}")


class ExactMatchObjective(_LocalObjective):
    """Greedy answers scored against the reference answers by ``objective.metric`` (default normalised
    exact match; see :data:`~dmo_search.objectives.metrics.GENERATION_METRICS`)."""

    def _score_domain(self, backend: Backend, vs: ValidationSet) -> list[float]:
        preds = backend.generate(
            self._prompts(backend, vs), max_new_tokens=self.cfg.max_new_tokens, batch_size=self.cfg.batch_size
        )
        return self._scores(vs, preds)

    def _scores(self, vs: ValidationSet, preds: Sequence[str]) -> list[float]:
        score = GENERATION_METRICS[self.cfg.metric or "exact_match"]
        return [score(p, ex.answers) for p, ex in zip(preds, vs.examples, strict=True)]

    def _score_domain_many(
        self, backend: BatchBackend, vs: ValidationSet, mixtures: Sequence[Sequence[float]]
    ) -> list[list[float]]:
        outs = backend.generate_many(mixtures, self._prompts(backend, vs), max_new_tokens=self.cfg.max_new_tokens)
        return [self._scores(vs, preds) for preds in outs]


class LoglikObjective(_LocalObjective):
    """Mean per-token log-probability of the first reference answer (no generation)."""

    def _score_domain(self, backend: Backend, vs: ValidationSet) -> list[float]:
        return self._per_token(backend.loglikelihood(*self._pairs(backend, vs), batch_size=self.cfg.batch_size))

    def _score_domain_many(
        self, backend: BatchBackend, vs: ValidationSet, mixtures: Sequence[Sequence[float]]
    ) -> list[list[float]]:
        return [self._per_token(res) for res in backend.loglikelihood_many(mixtures, *self._pairs(backend, vs))]

    def _pairs(self, backend: Backend, vs: ValidationSet) -> tuple[list[str], list[str]]:
        return self._prompts(backend, vs), [ex.answers[0] for ex in vs.examples]

    @staticmethod
    def _per_token(res: Sequence[tuple[float, int]]) -> list[float]:
        if any(n == 0 for _, n in res):
            raise ObjectiveError("an answer has no tokens")
        return [lp / n for lp, n in res]
