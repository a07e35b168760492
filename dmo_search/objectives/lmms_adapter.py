"""An lmms-eval (0.7.3) ``lmms`` model that runs on the study's live backend.

The same pattern as :mod:`dmo_search.objectives.lm_eval_adapter`: lmms-eval's own task code builds
the requests, :class:`BackendLMMS` sends them to the engine that already serves the candidate (no new
engine, no response cache), images included (``doc_to_visual`` of the request's document, placed by
the chat template). Used by the ``lmms_eval`` objective (:mod:`dmo_search.objectives.lmms`).

The set-up installs lmms-eval ``--no-deps`` (plus loguru and tenacity) next to torch + torchvision;
its evaluator needs ``filelock < 4`` (pinned in ``pyproject.toml``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from lmms_eval.api.model import lmms

from dmo_search.objectives.lm_eval_adapter import cut_at_stop

if TYPE_CHECKING:
    from dmo_search.backends import Backend

__all__ = ["BackendLMMS"]


class BackendLMMS(lmms):
    """lmms-eval's simple-model interface over a live dmo-search backend.

    Args:
        backend: the engine serving the current candidate.
        batch_size: passed to the backend.
        default_max_new_tokens: for tasks that set no ``max_new_tokens``.
    """

    is_simple = True

    def __init__(self, backend: Backend, *, batch_size: int = 64, default_max_new_tokens: int = 256) -> None:
        super().__init__()
        self.backend = backend
        self.batch_size = batch_size
        self.default_max_new_tokens = default_max_new_tokens

    def _visuals(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> list[Any]:
        if doc_to_visual is None:
            return []
        return [v for v in (doc_to_visual(self.task_dict[task][split][doc_id]) or []) if v is not None]

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Greedy chat completions with the request's images, cut at the task's ``until`` strings."""
        out = [""] * len(requests)
        groups: dict[int, list[int]] = defaultdict(list)
        prompts: list[str] = []
        images: list[list[Any]] = []
        stops: list[list[str]] = []
        for i, req in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            kw = dict(gen_kwargs or {})
            if kw.get("do_sample") or float(kw.get("temperature", 0) or 0) > 0:
                raise ValueError(f"task {task!r} asks for sampling; the live backend decodes greedily")
            visuals = self._visuals(doc_to_visual, doc_id, task, split)
            prompts.append(self.backend.format_prompt(context, chat=True, n_images=len(visuals)))
            images.append(visuals)
            until = kw.get("until") or []
            stops.append([until] if isinstance(until, str) else list(until))
            groups[int(kw.get("max_new_tokens") or self.default_max_new_tokens)].append(i)
        for max_new, idx in groups.items():
            texts = self.backend.generate(
                [prompts[i] for i in idx],
                max_new_tokens=max_new,
                batch_size=self.batch_size,
                images=[images[i] for i in idx] if any(images[i] for i in idx) else None,
            )
            for i, t in zip(idx, texts, strict=True):
                out[i] = cut_at_stop(t, stops[i])
        return out

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """Summed log-probability of each target after its chat-formatted context (text-only tasks).

        Raises:
            ValueError: a request carries images (the backends score log-likelihoods on text only).
        """
        prompts, conts = [], []
        for req in requests:
            context, target, doc_to_visual, doc_id, task, split = req.args
            doc = self.task_dict[task][split][doc_id]
            if self._visuals(doc_to_visual, doc_id, task, split):
                raise ValueError(f"task {task!r}: log-likelihood with images is not supported on the live backend")
            prompts.append(self.backend.format_prompt(context, chat=True))
            conts.append(target(doc) if callable(target) else str(target))
        res = self.backend.loglikelihood(prompts, conts, batch_size=self.batch_size)
        return [(lp, False) for lp, _ in res]

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:
        """Not supported (multi-round tasks)."""
        raise NotImplementedError("multi-round lmms-eval tasks are not supported on the live backend")
