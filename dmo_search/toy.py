"""The embedded default "toy world": a tiny but real data-mixture problem, built offline on a CPU.

:func:`build_toy_world` makes, in a few minutes on 2 cores:

* three synthetic domains (prompt -> short answer) that need different skills: ``add`` (3-digit plus
  1-digit), ``shift`` (each letter to the next one) and ``sort`` (letters in alphabetical order),
* a tokenizer (byte-level BPE trained on the domains' text) with a chat template,
* a tiny random-init Qwen2 base, briefly trained on all domains: it knows the format and part of
  each domain (how much varies with the seed and the machine's floating point),
* one expert per domain trained from the base (LoRA and full fine-tunes) until it solves its domain
  and forgets some of the others,
* train/validation JSONL files, the study config ``toy.yaml`` and ``manifest.json``.

The manifest records measured facts that make the world a real DMO problem: every expert is best on
its own domain, and the best linear merge on a grid of mixtures is not a vertex. Those numbers come from
the small private merge/evaluate helpers here, which exist only for the manifest.
"""

from __future__ import annotations

import copy
import itertools
import json
import random
import string
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from dmo_search.promote.train import train_loop

__all__ = [
    "DOMAINS",
    "ToyWorld",
    "build_toy_world",
    "domain_examples",
    "normalize_answer",
    "toy_config",
]

EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (PAD_TOKEN, "<|im_start|>", EOS_TOKEN)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Example = dict[str, Any]
Generator = Callable[[random.Random], Example]


# --------------------------------------------------------------------------------------------- domains


def _spaced(chars: Iterable[object]) -> str:
    return " ".join(str(c) for c in chars)


def _gen_add(rng: random.Random) -> Example:
    a, b = rng.randint(100, 999), rng.randint(1, 9)
    return {"prompt": f"{a}+{b}=", "answers": [str(a + b)]}


def _gen_shift(rng: random.Random) -> Example:
    letters = string.ascii_lowercase
    s = [rng.choice(letters[:12]) for _ in range(rng.randint(3, 5))]
    return {"prompt": f"shift: {_spaced(s)}", "answers": [_spaced(letters[letters.index(c) + 1] for c in s)]}


def _gen_sort(rng: random.Random) -> Example:
    s = rng.sample(string.ascii_lowercase[:12], rng.randint(3, 5))
    return {"prompt": f"sort: {_spaced(s)}", "answers": [_spaced(sorted(s))]}


DOMAINS: dict[str, Generator] = {"add": _gen_add, "shift": _gen_shift, "sort": _gen_sort}
"""Domain name -> generator of one ``{"prompt", "answers"}`` example."""


def domain_examples(domain: str, n: int, *, seed: int = 0, exclude: set[str] | None = None) -> list[Example]:
    """Draw ``n`` examples of ``domain`` with distinct prompts, deterministic per ``seed``.

    Args:
        domain: a key of :data:`DOMAINS`.
        n: how many examples.
        seed: seeds the generator (mixed with the domain name).
        exclude: prompts to skip (keeps train and validation disjoint).

    Raises:
        ValueError: the domain cannot supply ``n`` distinct prompts.
    """
    gen = DOMAINS[domain]
    rng = random.Random(f"{domain}:{seed}")
    seen = set(exclude or ())
    out: list[Example] = []
    misses = 0
    while len(out) < n:
        ex = gen(rng)
        if ex["prompt"] in seen:
            misses += 1
            if misses > 50 * n + 1000:
                raise ValueError(f"domain {domain!r} cannot supply {n} distinct prompts")
            continue
        seen.add(ex["prompt"])
        out.append(ex)
    return out


_PUNCT = string.punctuation + " "


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace and strip punctuation at both ends."""
    return " ".join(text.lower().split()).strip(_PUNCT)


def _is_correct(output: str, answers: Sequence[str]) -> bool:
    out = normalize_answer(output)
    return any(out == normalize_answer(a) for a in answers)


# ------------------------------------------------------------------------------------------- tokenizer


def _train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def _chat_prompt(tokenizer: Any, prompt: str) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return str(text)


# ------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class _Recipe:
    """Sizes and training schedules of the world (defaults are the shipped design)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    vocab_size: int = 320
    n_train: int = 3000
    n_val: int = 200
    batch_size: int = 32
    base_steps: int = 400
    base_lr: float = 2e-3
    expert_steps: dict[str, int] = field(default_factory=lambda: {"add": 600, "shift": 250, "sort": 250})
    expert_kind: dict[str, str] = field(default_factory=lambda: {"add": "lora", "shift": "lora", "sort": "full"})
    # Every expert is trained well past the point where it solves its domain, so that "each expert is best on
    # its own domain and a mixture beats every vertex" holds on any machine: addition is learned by a LoRA
    # between 250 and 500 steps (a sharp transition), letters in under 250. An earlier "count the letter"
    # domain sat on such a transition for the whole budget and was learned on some machines only.
    lora_lr: float = 2e-3
    full_lr: float = 5e-4
    grid_step: int = 8


def _encode(tokenizer: Any, examples: Sequence[Example]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + answer + eos, and the number of prompt tokens (masked from the loss)."""
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    out = []
    for ex in examples:
        p = tokenizer(_chat_prompt(tokenizer, ex["prompt"]), add_special_tokens=False)["input_ids"]
        a = tokenizer(ex["answers"][0], add_special_tokens=False)["input_ids"]
        out.append(([*p, *a, eos], len(p)))
    return out


# The training loop is shared with promoted mixture SFT runs (dmo_search.promote.train).
_train = train_loop


# ----------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _accuracy(
    model: Any, tokenizer: Any, examples: Sequence[Example], *, max_new_tokens: int, batch_size: int = 256
) -> float:
    """Exact-match accuracy of greedy decoding of the chat-templated prompts."""
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model.eval()
    hits = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        enc = tokenizer(
            [_chat_prompt(tokenizer, ex["prompt"]) for ex in chunk],
            add_special_tokens=False,
            padding=True,
            return_tensors="pt",
        )
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        hits += sum(_is_correct(t.strip(), ex["answers"]) for t, ex in zip(texts, chunk, strict=True))
    return hits / max(1, len(examples))


def _task_vector(base: torch.nn.Module, expert_dir: Path, kind: str) -> dict[str, torch.Tensor]:
    """Expert minus base in the base's parameter names (LoRA folded as ``alpha/r * B @ A``)."""
    from safetensors.torch import load_file

    base_sd = base.state_dict()
    if kind == "full":
        expert_sd = load_file(str(expert_dir / "model.safetensors"))
        return {k: expert_sd[k].float() - v.float() for k, v in base_sd.items() if k in expert_sd}
    cfg = json.loads((expert_dir / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    ad = load_file(str(expert_dir / "adapter_model.safetensors"))
    delta: dict[str, torch.Tensor] = {}
    for key, a in ad.items():
        if ".lora_A." not in key:
            continue
        b = ad[key.replace(".lora_A.", ".lora_B.")]
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        delta[f"{module}.weight"] = scale * (b.float() @ a.float())
    missing = set(delta) - set(base_sd)
    if missing:
        raise KeyError(f"LoRA targets not in the base model: {sorted(missing)[:3]}")
    return delta


def _merge_into(
    model: torch.nn.Module,
    base_sd: dict[str, torch.Tensor],
    vectors: Sequence[dict[str, torch.Tensor]],
    weights: Sequence[float],
) -> None:
    merged = {k: v.clone() for k, v in base_sd.items()}
    for vec, w in zip(vectors, weights, strict=True):
        if w:
            for k, d in vec.items():
                merged[k] += w * d
    model.load_state_dict(merged)


def _grid(k: int, step: int) -> list[tuple[float, ...]]:
    pts = [c for c in itertools.product(range(step + 1), repeat=k) if sum(c) == step]
    return [tuple(x / step for x in c) for c in sorted(pts, reverse=True)]


# ---------------------------------------------------------------------------------------------- world


@dataclass(frozen=True)
class ToyWorld:
    """A built toy world on disk.

    Attributes:
        root: the build directory.
        config_path: its study config (``toy.yaml``).
        domains: domain names, in expert order.
        build_seconds: wall time of the build.
        manifest: the contents of ``manifest.json``.
    """

    root: Path
    config_path: Path
    domains: list[str]
    build_seconds: float
    manifest: dict[str, Any]

    @classmethod
    def load(cls, root: str | Path) -> ToyWorld:
        """Open a world built earlier (reads ``manifest.json``)."""
        r = Path(root)
        manifest = json.loads((r / "manifest.json").read_text())
        return cls(r, r / "toy.yaml", list(manifest["domains"]), float(manifest["build_seconds"]), manifest)


def toy_config(
    root: Path,
    relative_to: Path,
    *,
    domains: Sequence[str] | None = None,
    kinds: dict[str, str] | None = None,
    max_new_tokens: int = 12,
) -> dict[str, Any]:
    """The toy world's study config with paths under ``root`` written relative to ``relative_to``."""
    names = list(domains or DOMAINS)
    kind = kinds or _Recipe().expert_kind

    def rel(*parts: str) -> str:
        return Path(_relpath(root.joinpath(*parts), relative_to)).as_posix()

    return {
        "study_name": "toy",
        "base_model": rel("base"),
        "experts": [{"name": d, "domain": d, "kind": kind[d], "path": rel("experts", d)} for d in names],
        "objective": {
            "type": "exact_match",
            "validation": {d: rel("data", "val", f"{d}.jsonl") for d in names},
            "subset_size": 100,
            "subset_seed": 0,
            "aggregation": "mean",
            "chat_template": True,
            "max_new_tokens": max_new_tokens,
            "batch_size": 64,
        },
        "search": {"sampler": "gp-simplex", "n_trials": 20, "seed": 0, "designs": ["centre"]},
        "backend": {"name": "hf", "dtype": "float32"},
        # `dmo-search promote`: mixture SFT with the LoRA experts' recipe (rank, alpha, lr, steps, batch)
        "promotion": {
            "train_data": {d: rel("data", "train", f"{d}.jsonl") for d in names},
            "mode": "exact",
            "n_examples": _Recipe().n_train,
            "seed": 0,
            "recipe": {
                "rank": 16,
                "alpha": 32,
                "lr": _Recipe().lora_lr,
                "steps": max(_Recipe().expert_steps.values()),
                "batch_size": _Recipe().batch_size,
            },
            "min_distance": 0.1,
        },
    }


def _relpath(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def _write_jsonl(path: Path, rows: Iterable[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def build_toy_world(
    out_dir: str | Path,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    _recipe: _Recipe | None = None,
) -> ToyWorld:
    """Build the toy world under ``out_dir`` (tokenizer, base, experts, data, config, manifest).

    Args:
        out_dir: the directory to write (created; existing files are overwritten). Its ``toy.yaml``, written
            last, marks a finished world; an old one is removed first.
        seed: seeds data, initialisation and training; the same seed gives the same world.
        progress: called with one line per stage.

    Returns:
        The built world; its manifest holds build times and the measured accuracies.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    t_start = time.perf_counter()
    recipe = _recipe or _Recipe()
    say = progress or (lambda _msg: None)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    # toy.yaml (written last) says the world is whole (`make demo`, DMO_TOY_DIR): a rebuild stopped half-way
    # must not leave the old one beside a new base and old experts.
    for marker in ("toy.yaml", "manifest.json"):
        (root / marker).unlink(missing_ok=True)
    torch.set_num_threads(2)
    names = list(recipe.expert_kind)
    times: dict[str, float] = {}

    # data
    val = {d: domain_examples(d, recipe.n_val, seed=seed + 1000) for d in names}
    train = {d: domain_examples(d, recipe.n_train, seed=seed, exclude={e["prompt"] for e in val[d]}) for d in names}
    for d in names:
        _write_jsonl(root / "data" / "train" / f"{d}.jsonl", train[d])
        _write_jsonl(root / "data" / "val" / f"{d}.jsonl", val[d])

    # tokenizer
    t0 = time.perf_counter()
    texts = [t for d in names for e in train[d] for t in (e["prompt"], *e["answers"])]
    tokenizer = _train_tokenizer([*texts, *(["user", "assistant"] * 100)], recipe.vocab_size)
    times["tokenizer"] = time.perf_counter() - t0
    say(f"tokenizer: {len(tokenizer)} tokens in {times['tokenizer']:.1f}s")
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    pad = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    max_answer = max(
        len(tokenizer(a, add_special_tokens=False)["input_ids"]) for d in names for e in val[d] for a in e["answers"]
    )
    max_new_tokens = max_answer + 2
    rows = {d: _encode(tokenizer, train[d]) for d in names}

    # base
    t0 = time.perf_counter()
    _seed_all(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden,
        intermediate_size=recipe.intermediate,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.kv_heads,
        head_dim=recipe.hidden // recipe.heads,  # type: ignore[call-arg]  # accepted via **kwargs
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=None,
    )
    base = Qwen2ForCausalLM(cfg).float()
    base.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False)
    all_rows = [r for d in names for r in rows[d]]
    loss = _train(
        base, all_rows, steps=recipe.base_steps, lr=recipe.base_lr, batch_size=recipe.batch_size, pad_id=pad, seed=seed
    )
    base_dir = root / "base"
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    times["base"] = time.perf_counter() - t0
    say(f"base: {base.num_parameters():,} parameters, loss {loss:.3f}, {times['base']:.1f}s")

    # experts
    for i, d in enumerate(names):
        t0 = time.perf_counter()
        _seed_all(seed + 1 + i)
        kind = recipe.expert_kind[d]
        model: Any = Qwen2ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        if kind == "lora":
            lcfg = LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"
            )
            model = get_peft_model(model, lcfg)
            lr = recipe.lora_lr
        else:
            lr = recipe.full_lr
        loss = _train(
            model,
            rows[d],
            steps=recipe.expert_steps[d],
            lr=lr,
            batch_size=recipe.batch_size,
            pad_id=pad,
            seed=seed + 1 + i,
        )
        out = root / "experts" / d
        model.save_pretrained(out)
        if kind == "full":
            tokenizer.save_pretrained(out)
        times[f"expert_{d}"] = time.perf_counter() - t0
        say(f"expert {d} ({kind}): loss {loss:.3f}, {times[f'expert_{d}']:.1f}s")

    # measurements
    t0 = time.perf_counter()
    base = Qwen2ForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    vectors = [_task_vector(base, root / "experts" / d, recipe.expert_kind[d]) for d in names]
    probe = copy.deepcopy(base)

    budget = {
        d: 2 + max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for e in val[d] for a in e["answers"])
        for d in names
    }

    def score(weights: Sequence[float]) -> list[float]:
        _merge_into(probe, base_sd, vectors, weights)
        return [_accuracy(probe, tokenizer, val[d], max_new_tokens=budget[d]) for d in names]

    base_acc = score([0.0] * len(names))
    grid = {w: score(w) for w in _grid(len(names), recipe.grid_step)}
    times["evaluation"] = time.perf_counter() - t0
    say(f"evaluation: {len(grid)} grid mixtures in {times['evaluation']:.1f}s")
    vertices = {w: s for w, s in grid.items() if max(w) == 1.0}
    centre_w = tuple([1 / len(names)] * len(names))
    centre = score(centre_w)
    mean = {w: sum(s) / len(s) for w, s in grid.items()}
    best = max(mean, key=lambda w: mean[w])
    best_vertex = max(vertices, key=lambda w: mean[w])

    build_seconds = time.perf_counter() - t_start
    manifest: dict[str, Any] = {
        "seed": seed,
        "domains": names,
        "experts": {d: {"kind": recipe.expert_kind[d], "path": f"experts/{d}"} for d in names},
        "parameters": base.num_parameters(),
        "vocab_size": len(tokenizer),
        "max_new_tokens": max_new_tokens,
        "n_train": recipe.n_train,
        "n_val": recipe.n_val,
        "times": times,
        "build_seconds": build_seconds,
        "accuracy": {
            "base": dict(zip(names, base_acc, strict=True)),
            "experts": {
                d: dict(zip(names, vertices[tuple(float(j == i) for j in range(len(names)))], strict=True))
                for i, d in enumerate(names)
            },
            "centre": {
                "weights": list(centre_w),
                "mean": sum(centre) / len(centre),
                "per_domain": dict(zip(names, centre, strict=True)),
            },
            "best_vertex": {"weights": list(best_vertex), "mean": mean[best_vertex]},
            "best_grid": {
                "weights": list(best),
                "mean": mean[best],
                "per_domain": dict(zip(names, grid[best], strict=True)),
            },
            "grid": [
                {"weights": list(w), "mean": mean[w], "per_domain": dict(zip(names, s, strict=True))}
                for w, s in grid.items()
            ],
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    config_path = root / "toy.yaml"
    cfg_dict = toy_config(root, root, domains=names, kinds=recipe.expert_kind, max_new_tokens=max_new_tokens)
    config_path.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    return ToyWorld(root, config_path, names, build_seconds, manifest)
