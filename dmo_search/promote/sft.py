"""One promoted SFT run: local LoRA SFT with peft, or an external training command; and turning
what a run (or another machine) produced into a checkpoint the study's backend loads.

The local run uses the experts' loop (:func:`dmo_search.promote.train.train_loop`): answer tokens
only, prompts through the same chat template the objective uses. Vision-language bases (Qwen2-VL,
...) train the same way on rows that carry ``images``: the base's processor expands each image into
its placeholder tokens and pixel tensors, the LoRA covers the recipe's target modules (by default the
language model's linear layers). The LoRA is merged into the base and saved as a full checkpoint
(``model/``, with the tokenizer and, for vision-language models, the processor) next to the adapter
(``adapter/``).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from dmo_search import reaper
from dmo_search.atomic import atomic_folder
from dmo_search.promote.config import RecipeConfig
from dmo_search.promote.train import Row, VisionRow, train_loop

__all__ = [
    "SFTError",
    "SFTResult",
    "encode_examples",
    "encode_vision_examples",
    "materialize_model",
    "run_external",
    "train_lora_sft",
]


class SFTError(RuntimeError):
    """A training run failed or produced no usable model; the message says what to fix."""


@dataclass(frozen=True)
class SFTResult:
    """A finished training run: the checkpoint to score, its wall time and the last training loss."""

    model_dir: Path
    train_seconds: float
    final_loss: float | None


def _eos(tokenizer: Any) -> int:
    """The token that ends each answer."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise SFTError("the base tokenizer has no eos token; SFT needs one to end answers")
    return int(eos)


def encode_examples(tokenizer: Any, examples: Sequence[Mapping[str, Any]], *, chat: bool) -> list[Row]:
    """Token ids of (formatted prompt, first answer, eos) and the prompt length, per example."""
    from dmo_search.backends.base import chat_prompt

    eos = _eos(tokenizer)
    rows: list[Row] = []
    for ex in examples:
        p = tokenizer(chat_prompt(tokenizer, str(ex["prompt"]), chat=chat), add_special_tokens=False)["input_ids"]
        a = tokenizer(str(ex["answers"][0]), add_special_tokens=False)["input_ids"]
        rows.append(([*p, *a, eos], len(p)))
    return rows


def encode_vision_examples(processor: Any, examples: Sequence[Mapping[str, Any]], *, chat: bool) -> list[VisionRow]:
    """As :func:`encode_examples` for a vision-language model: the prompt (with one image part per
    image of the row) goes through the processor, which expands each image into its placeholder
    tokens and returns its pixel tensors."""
    import torch
    from PIL import Image

    from dmo_search.backends.base import chat_prompt

    tokenizer = processor.tokenizer
    eos = _eos(tokenizer)
    rows: list[VisionRow] = []
    for ex in examples:
        images = [Image.open(p).convert("RGB") for p in ex.get("images") or []]
        text = chat_prompt(tokenizer, str(ex["prompt"]), chat=chat, n_images=len(images))
        enc = processor(text=[text], images=images or None, return_tensors="pt", add_special_tokens=False)
        p = [int(t) for t in enc["input_ids"][0]]
        a = tokenizer(str(ex["answers"][0]), add_special_tokens=False)["input_ids"]
        ids = [*p, *a, eos]
        extras = {}
        for key, value in enc.items():
            if key in ("input_ids", "attention_mask") or not hasattr(value, "shape"):
                continue
            if value.dim() == 2 and value.shape == (1, len(p)):  # per token (mm_token_type_ids): 0 on the answer
                value = torch.cat([value[0], value.new_zeros(len(ids) - len(p))])
            extras[key] = value
        rows.append((ids, len(p), extras))
    return rows


def _save_checkpoint(model: Any, tokenizer: Any, dest: Path, processor: Any = None) -> Path:
    """Save to ``dest`` atomically (:func:`dmo_search.atomic.atomic_folder`): a crash leaves no half model,
    and a failed save (a full disk) no half-written copy beside it."""
    with atomic_folder(dest) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.padding_side = "left"
        if processor is not None:
            processor.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return dest


def _processor(base_model: Path) -> Any:
    """The base's processor when it is a vision-language model, else None."""
    from dmo_search.models import is_vision_language

    if not is_vision_language(base_model):
        return None
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(base_model))


def train_lora_sft(
    base_model: Path,
    examples: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    recipe: RecipeConfig,
    chat: bool,
    seed: int,
) -> SFTResult:
    """Train a LoRA on ``examples`` from ``base_model`` and save the merged checkpoint.

    Args:
        base_model: the study's base checkpoint (a causal LM, or a vision-language model).
        examples: ``{"prompt", "answers"}`` rows (the first answer is the target), with ``images``
            (paths) for a vision-language base.
        out_dir: the run folder; gets ``adapter/`` and ``model/`` (merged, with the tokenizer).
        recipe: rank, alpha, dropout, target modules, learning rate, steps, batch size.
        chat: wrap prompts in the tokenizer's chat template (the objective's ``chat_template``).
        seed: seeds LoRA initialisation and the batch order.

    Raises:
        SFTError: no example, or images for a text-only base.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from dmo_search.models import load_model

    if not examples:
        raise SFTError("the mixture has no training example; check the weights and promotion.train_data")
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    processor = _processor(base_model)
    rows: list[Row] | list[VisionRow]
    if processor is not None:
        tokenizer: Any = processor.tokenizer
        rows = encode_vision_examples(processor, examples, chat=chat)
    else:
        if any(ex.get("images") for ex in examples):
            raise SFTError(f"training rows carry images but {base_model} is not a vision-language model")
        tokenizer = AutoTokenizer.from_pretrained(str(base_model))
        rows = encode_examples(tokenizer, examples, chat=chat)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model: Any = load_model(base_model)
    lcfg = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        lora_dropout=recipe.dropout,
        target_modules=list(recipe.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lcfg)
    loss = train_loop(
        model, rows, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size, pad_id=pad, seed=seed
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "adapter", ignore_errors=True)
    model.save_pretrained(str(out_dir / "adapter"))
    merged = model.merge_and_unload()
    model_dir = _save_checkpoint(merged, tokenizer, out_dir / "model", processor)
    return SFTResult(model_dir, time.perf_counter() - t0, loss)


def materialize_model(path: Path, base_model: Path, dest: Path) -> Path:
    """A checkpoint folder the backend loads: ``path`` itself when it holds ``config.json``; a peft
    adapter (``adapter_config.json``) is merged into ``base_model`` and saved to ``dest``.

    Raises:
        SFTError: ``path`` is neither a checkpoint nor an adapter.
    """
    if (path / "config.json").is_file():
        return path
    if not (path / "adapter_config.json").is_file():
        raise SFTError(
            f"{path} holds neither a checkpoint (config.json) nor a peft adapter (adapter_config.json); "
            "point --model (or the command's {output_dir}) at the trained model"
        )
    from peft import PeftModel
    from transformers import AutoTokenizer

    from dmo_search.models import load_model

    base: Any = load_model(base_model)
    merged = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    tokenizer: Any = AutoTokenizer.from_pretrained(str(base_model))
    return _save_checkpoint(merged, tokenizer, dest, _processor(base_model))


def run_external(
    template: str,
    *,
    data: Path,
    output_dir: Path,
    weights: Mapping[str, float],
    base_model: Path,
    log_path: Path,
) -> SFTResult:
    """Run an external training command and return the checkpoint it wrote.

    The template's ``{data}``, ``{output_dir}``, ``{weights}`` (``name=w,...``) and ``{base_model}``
    are filled in (shell-quoted) and the command runs through the shell; its output goes to
    ``log_path``. What it writes under ``output_dir/trained`` (a checkpoint or an adapter) is the model.
    If this process dies while the command runs, a watchdog (:mod:`dmo_search.reaper`) stops the command
    and what it started (SIGTERM, SIGKILL 10 s later), so that a resumed promotion does not train a second
    copy into the same folder beside it.

    Raises:
        SFTError: the command exits non-zero (the message names the log) or writes no model.
    """
    trained = output_dir / "trained"
    trained.mkdir(parents=True, exist_ok=True)
    cmd = template.format(
        data=shlex.quote(str(data)),
        output_dir=shlex.quote(str(trained)),
        weights=shlex.quote(",".join(f"{k}={v:.6g}" for k, v in weights.items())),
        base_model=shlex.quote(str(base_model)),
    )
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        # If this process dies (SIGKILL, OOM), the command must not train on: a resumed `promote`
        # retrains this run into the same folder. The watchdog starts first and adopts the command from
        # its first instant (no watchdog, no command).
        watchdog = reaper.watch([], adopt=True)
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(cmd, shell=True, stdout=log, stderr=subprocess.STDOUT)
            watchdog.set_watched([proc.pid])
            proc.wait()
        finally:
            if proc is not None and proc.poll() is None:
                # interrupted here (Ctrl-C), or the watchdog is gone: the command and its children go with us
                reaper.stop_tree([psutil.Process(proc.pid)])
                proc.wait()
            watchdog.release()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SFTError(f"promotion.command exited with {proc.returncode}; see {log_path}")
    return SFTResult(materialize_model(trained, base_model, output_dir / "model"), seconds, None)
