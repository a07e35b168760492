"""The backend interface every inference engine implements."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from dmo_search.config import MergeConfig, StudyConfig

__all__ = [
    "Backend",
    "BackendError",
    "BatchBackend",
    "CheckpointBackend",
    "MethodBackend",
    "chat_prompt",
    "checked_checkpoint",
    "switched_merge",
]


class BackendError(RuntimeError):
    """The engine failed (died, ran out of memory, refused the weights)."""


def chat_prompt(tokenizer: Any, prompt: str, *, chat: bool, n_images: int = 0) -> str:
    """``prompt`` as one user turn through the tokenizer's chat template (with the generation
    prompt) when ``chat``; unchanged otherwise. With ``n_images`` the turn starts with that many image
    parts, which the template turns into the model's image placeholder tokens.

    Raises:
        BackendError: ``chat`` is set but the tokenizer has no chat template, or images without ``chat``.
    """
    if n_images and not chat:
        raise BackendError(
            "prompts with images need objective.chat_template: true (the chat template places the image tokens)"
        )
    if not chat:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(
            "objective.chat_template is true but the base tokenizer has no chat template; "
            "set objective.chat_template: false or add a template to the tokenizer"
        )
    content: Any = prompt
    if n_images:
        content = [*({"type": "image"} for _ in range(n_images)), {"type": "text", "text": prompt}]
    text: str = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    return text


@runtime_checkable
class Backend(Protocol):
    """A live engine holding the base model and the experts.

    Implementations load everything once in their constructor; ``set_mixture`` then swaps the
    weights in place for each candidate.
    """

    name: str
    expert_names: list[str]

    def set_mixture(self, weights: Sequence[float]) -> None:
        """Make the engine serve ``theta(w)`` for the mixture ``weights`` (K floats summing to 1)."""
        ...

    def restore_base(self) -> None:
        """Make the engine serve the base model ``theta_0`` again."""
        ...

    def format_prompt(self, prompt: str, *, chat: bool, n_images: int = 0) -> str:
        """The text fed to the model: ``prompt`` through the tokenizer's chat template if ``chat``,
        with ``n_images`` image placeholders (vision-language models)."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int,
        batch_size: int,
        images: Sequence[Sequence[Any]] | None = None,
    ) -> list[str]:
        """Greedy completions of already formatted prompts (special tokens removed, stripped).

        ``images[i]`` are the PIL images of prompt ``i`` (as many as its placeholders), for
        vision-language models."""
        ...

    def loglikelihood(
        self, prompts: Sequence[str], continuations: Sequence[str], *, batch_size: int
    ) -> list[tuple[float, int]]:
        """For each pair, the summed log-probability of ``continuation`` after ``prompt`` and its
        number of tokens."""
        ...

    def close(self) -> None:
        """Release the engine."""
        ...


@runtime_checkable
class BatchBackend(Backend, Protocol):
    """A backend that can score several mixtures in one call (vLLM: q LoRA adapters in one batch)."""

    @property
    def batches_mixtures(self) -> bool:
        """Whether :meth:`generate_many` and :meth:`loglikelihood_many` run their mixtures in one engine
        call (vLLM's ``lora`` mode); if not, they apply them one after another, and callers should score
        mixture by mixture instead."""
        ...

    def generate_many(
        self, mixtures: Sequence[Sequence[float]], prompts: Sequence[str], *, max_new_tokens: int
    ) -> list[list[str]]:
        """Greedy completions of ``prompts`` under each mixture: ``out[j][i]`` for mixture j, prompt i.
        The current mixture is unchanged afterwards."""
        ...

    def loglikelihood_many(
        self, mixtures: Sequence[Sequence[float]], prompts: Sequence[str], continuations: Sequence[str]
    ) -> list[list[tuple[float, int]]]:
        """Summed log-probability and token count of each continuation under each mixture: ``out[j][i]``
        for mixture j, pair i. The current mixture is unchanged afterwards."""
        ...


def checked_checkpoint(model_dir: str | Path, base: str | Path) -> Path:
    """``model_dir`` as a path, once it is a checkpoint folder of ``base``'s architecture.

    Raises:
        BackendError: no ``config.json``, or another architecture (the config field that differs).
    """
    from dmo_search.models import architecture_mismatch

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise BackendError(f"{path} has no config.json; point at a checkpoint folder")
    diff = architecture_mismatch(base, path)
    if diff is not None:
        raise BackendError(f"{path} is not a model of the base's architecture ({diff}); it needs a backend of its own")
    return path


@runtime_checkable
class CheckpointBackend(Backend, Protocol):
    """A backend that can serve a full checkpoint of the base's architecture in place of theta(w),
    without a restart (``hf``; vLLM in ``dense`` mode); ``set_mixture`` / ``restore_base`` serve the
    merge again."""

    @property
    def serves_checkpoints(self) -> bool:
        """Whether :meth:`serve_checkpoint` works in this backend's mode."""
        ...

    def serve_checkpoint(self, model_dir: str | Path) -> None:
        """Serve the checkpoint folder ``model_dir`` (raises ``BackendError`` if it cannot)."""
        ...


@runtime_checkable
class MethodBackend(Backend, Protocol):
    """A backend that can switch its merge method without loading the base and the experts again."""

    def set_merge(self, merge: MergeConfig) -> None:
        """Merge by ``merge.method`` / ``params`` / ``seed`` from now on and serve the base until the next
        mixture; raises ``BackendError`` if it cannot (other exclusions, vLLM's ``lora`` mode)."""
        ...


def switched_merge(cfg: StudyConfig, merge: MergeConfig) -> StudyConfig:
    """``cfg`` with ``merge``'s method, params and seed, once its exclusions (the plan) are ``cfg``'s.

    Raises:
        BackendError: the exclusions differ (they fix which tensors merge: start a new backend).
    """
    if (merge.exclude_lora, merge.exclude_full) != (cfg.merge.exclude_lora, cfg.merge.exclude_full):
        raise BackendError("a merge with other exclusions changes which tensors merge; start a new backend")
    return cfg.model_copy(update={"merge": merge})
