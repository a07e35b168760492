"""The vLLM backend against the transformers reference.

(a) after a dense swap the engine computes with exactly the transformers-side merge (per-tensor
checksums of the weights the engine's kernels use); (b) ``hf`` and ``vllm`` give the same greedy
answers and scores; (c) the rank-concatenated LoRA adapter gives the dense merge's log-probs;
(d) q candidates in one ``generate`` or prompt-log-prob call equal one by one, in a batch worker
too, and a failed shared call fails its batch once; (e) a killed engine raises ``BackendError`` and
``restart`` works.

Engines start in 35-80 s on CPU, so the module keeps at most ONE alive at a time (the dense one for
(a)-(b), then the LoRA one for (c)-(e)). The world is the session's ``toy_world`` when
``tests/conftest.py`` provides it, else a tiny random Qwen2 (head_dim 64, as vLLM's CPU attention needs)
with a tokenizer, two LoRA experts and one full fine-tune, built here in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from optuna.trial import TrialState

try:
    import vllm  # noqa: F401
except Exception as e:  # ImportError, or a vLLM build that cannot load here
    pytest.skip(f"vLLM is not importable in this environment ({type(e).__name__}: {e})", allow_module_level=True)

from dmo_search.backends.base import BackendError
from dmo_search.backends.hf import HFBackend
from dmo_search.backends.vllm import VLLMBackend, lora_rank_sum, resolve_mode
from dmo_search.backends.vllm_ext import tensor_checksum
from dmo_search.config import StudyConfig, load_config
from dmo_search.objectives.base import aggregate
from dmo_search.objectives.data import load_validation_set
from dmo_search.objectives.metrics import exact_match
from dmo_search.study import StudyError
from tests.backends._checksums import assert_engine_computes_with, close

pytestmark = pytest.mark.slow

_CHAT = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _build_tiny_world(root: Path, seed: int = 0) -> Path:
    """A tiny random world: base (head_dim 64) + tokenizer, LoRA r=4 and r=8, one full fine-tune."""
    import yaml
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    rng = random.Random(seed)
    data: dict[str, list[dict[str, Any]]] = {"add": [], "sort": []}
    while len(data["add"]) < 40:
        a, b = rng.randint(10, 99), rng.randint(1, 9)
        data["add"].append({"prompt": f"{a}+{b}=", "answers": [str(a + b)]})
        s = rng.sample("abcdefgh", 4)
        data["sort"].append({"prompt": "sort: " + " ".join(s), "answers": [" ".join(sorted(s))]})
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [e["prompt"] + " " + e["answers"][0] for rows in data.values() for e in rows]
    tok.train_from_iterator([*texts, *(["user assistant"] * 20)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = _CHAT
    torch.manual_seed(seed)
    cfg = Qwen2Config(  # type: ignore[call-arg]  # head_dim is a config kwarg the stubs do not list
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    base = Qwen2ForCausalLM(cfg)
    with torch.no_grad():  # larger weights: peaked next-token distributions, few greedy near-ties
        for p in base.parameters():
            if p.dim() == 2:
                p.mul_(3.0)
    base.save_pretrained(root / "base")
    fast.save_pretrained(root / "base")
    experts: list[dict[str, str]] = []
    for i, r in enumerate([4, 8]):
        lcfg = LoraConfig(r=r, lora_alpha=2 * r, target_modules=_TARGETS, init_lora_weights=False, lora_dropout=0.0)
        pm = get_peft_model(Qwen2ForCausalLM.from_pretrained(root / "base"), lcfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.mul_(3.0)
        pm.save_pretrained(str(root / f"lora{i}"))
        experts.append({"name": f"lora{i}", "kind": "lora", "path": f"lora{i}"})
    full = Qwen2ForCausalLM.from_pretrained(root / "base")
    with torch.no_grad():
        for p in full.parameters():
            p.add_(0.02 * torch.randn_like(p))
    full.save_pretrained(root / "full")
    experts.append({"name": "full", "kind": "full", "path": "full"})
    (root / "data").mkdir()
    for d, rows in data.items():
        (root / "data" / f"{d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    study = {
        "study_name": "vllm-tiny",
        "base_model": "base",
        "experts": experts,
        "objective": {
            "type": "exact_match",
            "validation": {d: f"data/{d}.jsonl" for d in data},
            "subset_size": None,
            "max_new_tokens": 8,
        },
    }
    (root / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return root / "study.yaml"


def _with(cfg: StudyConfig, **backend: Any) -> StudyConfig:
    data = json.loads(cfg.model_dump_json())
    data["backend"] = {**data["backend"], **backend}
    return StudyConfig.model_validate(data)


@pytest.fixture(scope="module")
def cfg(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    """The study config (float32) of the toy world, or of the tiny world built here."""
    try:
        path = Path(request.getfixturevalue("toy_world").config_path)
    except pytest.FixtureLookupError:
        path = _build_tiny_world(tmp_path_factory.mktemp("vllm-world"))
    return _with(load_config(path), dtype="float32")


def _lora_only(cfg: StudyConfig) -> StudyConfig | None:
    """The same world with only its LoRA experts (served as one merged adapter); None if fewer than 2."""
    data = json.loads(cfg.model_dump_json())
    data["experts"] = [e for e in data["experts"] if e["kind"] == "lora"]
    data["search"]["designs"] = []
    return StudyConfig.model_validate(data) if len(data["experts"]) >= 2 else None


@pytest.fixture(scope="module")
def lora_cfg(cfg: StudyConfig) -> StudyConfig:
    out = _lora_only(cfg)
    if out is None:
        pytest.skip("the world has fewer than 2 LoRA experts")
    return out


class _Engines:
    """At most one live vLLM engine: asking for another closes the current one. ``dense`` and ``lora``
    serve the world's experts in that mode; ``dense-lora-only`` its LoRA experts densely (a merge plan
    that leaves most tensors alone)."""

    def __init__(self, cfg: StudyConfig, lora_cfg_: StudyConfig | None) -> None:
        self.cfgs = {"dense": _with(cfg, name="vllm", mode="dense")}
        if lora_cfg_ is not None:
            self.cfgs["lora"] = _with(lora_cfg_, name="vllm", mode="lora")
            self.cfgs["dense-lora-only"] = _with(lora_cfg_, name="vllm", mode="dense")
        self.live: VLLMBackend | None = None
        self.live_key = ""
        self.starts: dict[str, float] = {}

    def get(self, key: str) -> VLLMBackend:
        if self.live is not None and self.live_key == key:
            return self.live
        self.close()
        t0 = time.perf_counter()
        self.live, self.live_key = VLLMBackend(self.cfgs[key]), key
        self.starts[key] = time.perf_counter() - t0
        print(f"\n[vllm] {key} engine started in {self.starts[key]:.1f}s ({self.live.init_info})")
        return self.live

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live = None


@pytest.fixture(scope="module")
def engines(cfg: StudyConfig) -> Iterator[_Engines]:
    pool = _Engines(cfg, _lora_only(cfg))
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def hf(cfg: StudyConfig) -> HFBackend:
    return HFBackend(cfg)


@pytest.fixture(scope="module")
def examples(cfg: StudyConfig) -> dict[str, list[Any]]:
    """Each domain's scored examples (the objective's fixed subset)."""
    o = cfg.objective
    return {d: list(load_validation_set(d, p, o.subset_size, o.subset_seed).examples) for d, p in o.validation.items()}


@pytest.fixture(scope="module")
def prompts(hf: HFBackend, examples: dict[str, list[Any]], cfg: StudyConfig) -> list[str]:
    return [hf.format_prompt(e.prompt, chat=cfg.objective.chat_template) for ex in examples.values() for e in ex]


@pytest.fixture(scope="module")
def few(hf: HFBackend, examples: dict[str, list[Any]], cfg: StudyConfig) -> tuple[list[str], list[str]]:
    """20 prompts per domain and their first answers, for the LoRA-path tests (LoRA decoding is slower)."""
    chat = cfg.objective.chat_template
    pairs = [(hf.format_prompt(e.prompt, chat=chat), e.answers[0]) for ex in examples.values() for e in ex[:20]]
    return [p for p, _ in pairs], [a for _, a in pairs]


def _mixtures(k: int) -> list[list[float]]:
    """Centre, one vertex and two skewed interior points of the K-simplex."""
    skew = [float(i + 1) for i in range(k)]
    rev = skew[::-1]
    return [
        [1 / k] * k,
        [1.0] + [0.0] * (k - 1),
        [x / sum(skew) for x in skew],
        [x**2 / sum(y**2 for y in rev) for x in rev],
    ]


def _lora_index(cfg: StudyConfig) -> list[int]:
    return [i for i, e in enumerate(cfg.experts) if e.kind == "lora"]


def _embed(cfg: StudyConfig, w_lora: list[float]) -> list[float]:
    """A LoRA-only mixture as a mixture of all experts (zero weight on full fine-tunes)."""
    out = [0.0] * cfg.n_domains
    for i, x in zip(_lora_index(cfg), w_lora, strict=True):
        out[i] = x
    return out


# ------------------------------------------------------------------------------------------- dense


def test_dense_swap_writes_the_transformers_merge_into_the_engine(
    engines: _Engines, hf: HFBackend, cfg: StudyConfig
) -> None:
    vb = engines.get("dense")
    assert vb.mode == "dense"
    assert not vb.batches_mixtures  # a worker batch is scored mixture by mixture (each applied once)
    params = dict(hf.model.named_parameters())
    names = [n for n in vb.weight_checksums() if n in params]
    tied = bool(getattr(hf.model.config, "tie_word_embeddings", False))
    if tied:
        names.append("lm_head.weight")  # its CPU kernel packs a copy of the embedding: must follow swaps
        params["lm_head.weight"] = hf.model.lm_head.weight
    assert names, "the swap loads no tensor"
    hf.restore_base()
    vb.restore_base()
    base = vb.weight_checksums(names)
    for n in names:
        assert base[n] == tensor_checksum(params[n]), f"{n}: engine differs from the base"
    for w in _mixtures(cfg.n_domains):
        hf.set_mixture(w)
        vb.set_mixture(w)
        got = assert_engine_computes_with(vb, params, names, f"w={w}")
        moved = [n for n in names if not close(base[n], got[n], params[n].numel())]
        assert moved, f"w={w}: no tensor changed"
    hf.restore_base()
    vb.restore_base()
    assert vb.weight_checksums(names) == base  # the base comes back bit for bit


def test_a_merge_method_is_switched_in_the_running_engine(engines: _Engines, hf: HFBackend, cfg: StudyConfig) -> None:
    """``set_merge`` switches the engine's merge method without a restart (``report --compare-methods``
    scores every method on one engine): after TIES the engine computes with the transformers-side TIES
    merge, and back on linear with the linear one again."""
    from dmo_search.proxies import config_with_method

    vb = engines.get("dense")
    params = dict(hf.model.named_parameters())
    names = [n for n in vb.planned_names() if n in params]
    w = _mixtures(cfg.n_domains)[2]
    vb.set_mixture(w)
    linear = vb.weight_checksums(names)
    for method in ("ties", "linear"):
        merge = config_with_method(cfg, method).merge
        vb.set_merge(merge)
        hf.set_merge(merge)
        assert vb.current is None and vb.cfg.merge.method == method
        vb.set_mixture(w)
        hf.set_mixture(w)
        got = assert_engine_computes_with(vb, params, names, method)
        assert (got != linear) == (method == "ties")
    hf.restore_base()
    vb.restore_base()


def _checkpoint_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(path.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def test_a_checkpoint_is_served_in_place_and_the_base_comes_back(
    engines: _Engines, cfg: StudyConfig, few: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """``serve_checkpoint`` loads a full checkpoint (the world's full fine-tune) into the running engine:
    the engine then computes with exactly its tensors and answers as the one-hot mixture on that expert
    does; the next ``set_mixture`` / ``restore_base`` computes with the base's again, bit for bit."""
    full = next((i for i, e in enumerate(cfg.experts) if e.kind == "full"), None)
    if full is None:
        pytest.skip("the world has no full fine-tune to serve")
    vb = engines.get("dense")
    ckpt = Path(cfg.experts[full].path)
    tensors = _checkpoint_tensors(ckpt)
    names = list(tensors)
    if "lm_head.weight" not in tensors and "model.embed_tokens.weight" in tensors:  # tied: the head follows
        names.append("lm_head.weight")
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    prompts = few[0][:12]
    n_tok = cfg.objective.max_new_tokens
    vb.restore_base()
    base = vb.weight_checksums(names)
    mixes = _mixtures(cfg.n_domains)
    vb.set_mixture(mixes[2])
    merged = vb.weight_checksums(names)
    one_hot = [float(i == full) for i in range(cfg.n_domains)]
    vb.set_mixture(one_hot)
    vertex_answers = vb.generate(prompts, max_new_tokens=n_tok)

    vb.serve_checkpoint(ckpt)
    assert vb.serving == ckpt and vb.current is None
    got = vb.weight_checksums(names)
    for n in names:
        assert got[n] == tensor_checksum(tensors[n]), f"{n}: the engine does not compute with the checkpoint's"
    assert vb.generate(prompts, max_new_tokens=n_tok) == vertex_answers
    print(f"serve_checkpoint: {len(tensors)} tensors in {vb.last_swap['total_s']:.2f}s")

    vb.set_mixture(mixes[2])  # the base is loaded back under the merge
    assert vb.serving is None and vb.weight_checksums(names) == merged
    vb.serve_checkpoint(ckpt)
    vb.restore_base()
    assert vb.weight_checksums(names) == base

    other = tmp_path / "other"
    other.mkdir()
    conf = json.loads((ckpt / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**conf, "hidden_size": 2 * conf["hidden_size"]}))
    with pytest.raises(BackendError, match=r"not a model of the base's architecture \(hidden_size: "):
        vb.serve_checkpoint(other)
    with pytest.raises(BackendError, match=r"has no config\.json"):
        vb.serve_checkpoint(tmp_path)
    assert vb.weight_checksums(names) == base  # refused before anything was loaded


def test_hf_and_vllm_agree_on_greedy_answers_and_scores(
    engines: _Engines, hf: HFBackend, cfg: StudyConfig, examples: dict[str, list[Any]], prompts: list[str]
) -> None:
    vb = engines.get("dense")
    n_tok = cfg.objective.max_new_tokens
    weights = cfg.objective.aggregation if isinstance(cfg.objective.aggregation, dict) else None
    for w in _mixtures(cfg.n_domains):
        hf.set_mixture(w)
        vb.set_mixture(w)
        a = hf.generate(prompts, max_new_tokens=n_tok, batch_size=cfg.objective.batch_size)
        b = vb.generate(prompts, max_new_tokens=n_tok)
        same = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
        scores = {}
        start = 0
        for d, ex in examples.items():
            outs = (a[start : start + len(ex)], b[start : start + len(ex)])
            start += len(ex)
            scores[d] = [sum(exact_match(o, e.answers) for o, e in zip(out, ex, strict=True)) / len(ex) for out in outs]
        agg_hf = aggregate({d: s[0] for d, s in scores.items()}, weights)
        agg_vllm = aggregate({d: s[1] for d, s in scores.items()}, weights)
        print(f"w={[round(x, 3) for x in w]}: same answers {same:.3f}, aggregate hf {agg_hf:.4f} vllm {agg_vllm:.4f}")
        assert same >= 0.95, f"w={w}: only {same:.1%} identical greedy answers"
        assert abs(agg_hf - agg_vllm) <= 0.02
    # log-likelihoods: same numbers as the transformers forward (float32)
    conts = [e.answers[0] for ex in examples.values() for e in ex][:16]
    la = hf.loglikelihood(prompts[:16], conts, batch_size=16)
    lb = vb.loglikelihood(prompts[:16], conts)
    assert [n for _, n in la] == [n for _, n in lb]
    assert max(abs(x - y) for (x, _), (y, _) in zip(la, lb, strict=True)) < 1e-4


def test_dense_many_calls_apply_each_mixture_in_turn_and_keep_the_current_one(
    engines: _Engines, cfg: StudyConfig, few: tuple[list[str], list[str]]
) -> None:
    """Dense mode has no batched engine call: ``generate_many`` / ``loglikelihood_many`` apply each mixture
    in turn, give what each gives alone, and leave the served mixture as it was (base, or a mixture)."""
    vb = engines.get("dense")
    prompts, conts = few[0][:6], few[1][:6]
    mixes = _mixtures(cfg.n_domains)[1:3]
    n_tok = cfg.objective.max_new_tokens
    alone = []
    for w in mixes:
        vb.set_mixture(w)
        alone.append((vb.generate(prompts, max_new_tokens=n_tok), vb.loglikelihood(prompts, conts)))
    vb.restore_base()
    base = vb.weight_checksums()
    assert vb.generate_many(mixes, prompts, max_new_tokens=n_tok) == [a for a, _ in alone]
    assert vb.current is None and vb.weight_checksums() == base  # the base is served again
    vb.set_mixture(mixes[0])
    many = vb.loglikelihood_many(mixes, prompts, conts)
    assert vb.current == pytest.approx(mixes[0])
    for got, (_, ref) in zip(many, alone, strict=True):
        assert [n for _, n in got] == [n for _, n in ref]
        assert max(abs(x - y) for (x, _), (y, _) in zip(got, ref, strict=True)) < 1e-5
    assert many[0] != many[1], "the two mixtures should score differently"
    vb.restore_base()


@pytest.fixture(scope="module")
def dense_reference(
    engines: _Engines, lora_cfg: StudyConfig, cfg: StudyConfig, few: tuple[list[str], list[str]]
) -> dict[str, Any]:
    """Per-token log-probs and greedy answers of the dense merge, for the LoRA-only mixtures."""
    vb = engines.get("dense")
    prompts, conts = few
    mixes = _mixtures(lora_cfg.n_domains)
    ref: dict[str, Any] = {"mixes": mixes, "conts": conts, "logprobs": [], "answers": []}
    for w in mixes:
        vb.set_mixture(_embed(cfg, w))
        ref["logprobs"].append(vb.token_logprobs(prompts, conts))
        ref["answers"].append(vb.generate(prompts, max_new_tokens=cfg.objective.max_new_tokens))
    return ref


def test_after_a_checkpoint_tensors_outside_the_merge_plan_are_the_base_again(
    engines: _Engines, cfg: StudyConfig, lora_cfg: StudyConfig, dense_reference: dict[str, Any]
) -> None:
    """A merge of LoRA experts only swaps their target layers; a served full checkpoint also changed
    the embeddings and norms. The next ``set_mixture`` loads the base back first, so every tensor is
    the merge's again, not the checkpoint's. (``dense_reference`` is built first, on the dense engine.)"""
    assert dense_reference["mixes"]
    full = next((e for e in cfg.experts if e.kind == "full"), None)
    if full is None:
        pytest.skip("the world has no full fine-tune to serve")
    vb = engines.get("dense-lora-only")
    tensors = _checkpoint_tensors(Path(full.path))
    names = list(tensors)
    outside = [n for n in names if n not in set(vb.planned_names())]
    assert outside, "the LoRA-only merge plan should leave some tensors alone"
    w = _mixtures(lora_cfg.n_domains)[2]
    vb.set_mixture(w)
    merged = vb.weight_checksums(names)
    vb.serve_checkpoint(full.path)
    served = vb.weight_checksums(names)
    assert all(served[n] == tensor_checksum(tensors[n]) for n in names)
    assert [n for n in outside if served[n] != merged[n]], "the checkpoint should differ outside the plan"
    vb.set_mixture(w)
    assert vb.weight_checksums(names) == merged
    print(f"{len(outside)} of {len(names)} tensors outside the plan; the base reload took {vb.last_swap}")
    vb.restore_base()


# -------------------------------------------------------------------------------------------- LoRA


def test_lora_adapter_equals_the_dense_merge(
    engines: _Engines,
    dense_reference: dict[str, Any],
    few: tuple[list[str], list[str]],
    cfg: StudyConfig,
    lora_cfg: StudyConfig,
) -> None:
    prompts = few[0]
    vb = engines.get("lora")
    assert vb.mode == "lora" and vb.lora is not None
    assert vb.lora.rank == lora_rank_sum(lora_cfg.experts)  # one adapter of rank sum(r_i)
    diffs: list[float] = []
    for w, ref_lp, ref_ans in zip(
        dense_reference["mixes"], dense_reference["logprobs"], dense_reference["answers"], strict=True
    ):
        vb.set_mixture(w)
        got = vb.token_logprobs(prompts, dense_reference["conts"])
        d = [abs(x - y) for g, r in zip(got, ref_lp, strict=True) for x, y in zip(g, r, strict=True)]
        diffs += d
        ans = vb.generate(prompts, max_new_tokens=cfg.objective.max_new_tokens)
        same = sum(x == y for x, y in zip(ans, ref_ans, strict=True)) / len(ans)
        print(
            f"lora w={[round(x, 3) for x in w]}: |dlogprob| vs dense mean {sum(d) / len(d):.2e} max {max(d):.2e}, "
            f"same answers {same:.3f}"
        )
        assert same >= 0.95
    # float32: the adapter computes x W^T + (x A^T) B^T, the dense merge x (W + B A)^T. Rounding in a
    # different order gives ~1e-6 per token on average, a few 1e-5 at worst for large log-probs.
    mean = sum(diffs) / len(diffs)
    assert mean <= 1e-5, f"LoRA-path log-probs differ from the dense merge by {mean:.2e} on average"
    assert max(diffs) <= 1e-4, f"LoRA-path log-probs differ from the dense merge by up to {max(diffs):.2e}"
    vb.restore_base()


def test_q_candidates_in_one_generate_equal_one_by_one(
    engines: _Engines, few: tuple[list[str], list[str]], lora_cfg: StudyConfig
) -> None:
    prompts = few[0]
    vb = engines.get("lora")
    mixes = _mixtures(lora_cfg.n_domains)
    n_tok = lora_cfg.objective.max_new_tokens
    one = []
    for w in mixes:
        vb.set_mixture(w)
        one.append(vb.generate(prompts, max_new_tokens=n_tok))
    vb.set_mixture(mixes[0])
    many = vb.generate_many(mixes, prompts, max_new_tokens=n_tok)
    assert many == one
    assert vb.current == pytest.approx(mixes[0])  # the current mixture is untouched
    assert len({tuple(o) for o in one}) > 1, "the mixtures should not all give the same answers"
    assert not vb.serves_checkpoints
    with pytest.raises(BackendError, match="lora mode merges linearly only"):
        vb.set_merge(lora_cfg.merge)
    with pytest.raises(BackendError, match=r"needs backend\.mode: dense; in lora mode start an engine on it"):
        vb.serve_checkpoint(lora_cfg.base_model)


def test_q_candidates_in_one_loglikelihood_call_equal_one_by_one(
    engines: _Engines, few: tuple[list[str], list[str]], lora_cfg: StudyConfig, dense_reference: dict[str, Any]
) -> None:
    """q adapters in one prompt-log-prob call give each mixture's log-likelihoods: those of its adapter
    alone and those of the dense merge (float32 rounding apart)."""
    prompts, conts = few
    vb = engines.get("lora")
    mixes = dense_reference["mixes"]
    vb.set_mixture(mixes[1])
    many = vb.loglikelihood_many(mixes, prompts, conts)
    assert vb.current == pytest.approx(mixes[1])  # the current mixture is untouched
    for j, w in enumerate(mixes):
        vb.set_mixture(w)
        alone = vb.loglikelihood(prompts, conts)
        dense = [(sum(lps), len(lps)) for lps in dense_reference["logprobs"][j]]
        for ref, tol in ((alone, 1e-4), (dense, 1e-3)):
            assert [n for _, n in many[j]] == [n for _, n in ref]
            gap = max(abs(x - y) for (x, _), (y, _) in zip(many[j], ref, strict=True))
            assert gap < tol, f"mixture {j}: batched log-likelihoods differ by up to {gap:.2e}"
    assert len({tuple(round(x, 3) for x, _ in m) for m in many}) == len(mixes)


@pytest.mark.parametrize(
    ("objective_type", "method"), [("exact_match", "generate_many"), ("loglik", "loglikelihood_many")]
)
def test_a_batch_worker_scores_q_mixtures_in_one_engine_call_per_domain(
    engines: _Engines, lora_cfg: StudyConfig, tmp_path: Path, objective_type: str, method: str
) -> None:
    """``worker.batch_size: 3`` on the LoRA engine: each batch of 3 trials is one batched engine call
    per domain (``generate_many`` for exact match, ``loglikelihood_many`` for log-likelihood), and every
    trial gets the score its mixture gets alone."""
    from dmo_search.objectives import make_objective
    from dmo_search.study import prepare_study
    from dmo_search.worker import run_trials

    vb = engines.get("lora")
    assert vb.batches_mixtures
    data = json.loads(lora_cfg.model_dump_json())
    data.update(study_name="lorabatch", storage=f"sqlite:///{tmp_path / 'batch.db'}")
    data["objective"].update(type=objective_type, subset_size=4)
    data["search"].update(sampler="gp-simplex", n_trials=6, designs=[])
    data["worker"]["batch_size"] = 3
    cfg = StudyConfig.model_validate(data)
    objective = make_objective(cfg.objective)
    calls: list[int] = []
    real = getattr(vb, method)

    def counted(mixtures: Any, *args: Any, **kw: Any) -> Any:
        calls.append(len(mixtures))
        return real(mixtures, *args, **kw)

    setattr(vb, method, counted)  # counts the real calls, passes them through
    try:
        study = prepare_study(cfg)
        report = run_trials(study, cfg, vb, objective)
    finally:
        delattr(vb, method)
    assert (report.completed, report.failed, report.study_complete) == (6, 0, 6)
    assert calls == [3] * (2 * len(cfg.objective.validation))  # 2 batches, one call per domain each
    trials = study.get_trials(deepcopy=False)
    assert [t.user_attrs["batch_size"] for t in trials] == [3] * 6
    assert len({tuple(t.user_attrs["weights"]) for t in trials}) == 6
    tol = 0.0 if objective_type == "exact_match" else 1e-5  # log-probs: float32 rounding of the batch
    for t in (trials[0], trials[4]):
        vb.set_mixture(t.user_attrs["weights"])
        alone = objective.evaluate(vb)
        assert t.value == pytest.approx(alone.value, abs=tol)
        assert t.user_attrs["scores"] == pytest.approx(alone.scores, abs=tol)
    vb.restore_base()


def test_a_failed_batch_call_fails_its_trials_once_and_the_engine_serves_on(
    engines: _Engines, lora_cfg: StudyConfig, tmp_path: Path
) -> None:
    """One domain's prompts are longer than the model's context: vLLM refuses the batched engine call,
    which fails all 3 trials of the batch with the domain named, and counts ONCE towards
    ``max_consecutive_failures`` (2): the worker stops after the second failed batch, 6 trials failed,
    and the engine still serves."""
    from dmo_search.objectives import make_objective
    from dmo_search.study import prepare_study
    from dmo_search.worker import run_trials

    vb = engines.get("lora")
    data = json.loads(lora_cfg.model_dump_json())
    long = tmp_path / "long.jsonl"
    long.write_text("".join(json.dumps({"prompt": "12+3= " * 400, "answers": ["15"]}) + "\n" for _ in range(4)))
    data.update(study_name="lorafail", storage=f"sqlite:///{tmp_path / 'fail.db'}")
    data["objective"].update(subset_size=4, validation={**data["objective"]["validation"], "long": str(long)})
    data["search"].update(sampler="gp-simplex", n_trials=6, designs=[])
    data["worker"].update(batch_size=3, max_consecutive_failures=2)
    cfg = StudyConfig.model_validate(data)
    study = prepare_study(cfg)
    with pytest.raises(StudyError, match=r"2 failed trials in a row \(a batch failed by one shared engine call"):
        run_trials(study, cfg, vb, make_objective(cfg.objective))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * 6
    assert all(t.user_attrs["error"].startswith("ObjectiveError: domain 'long' could not be scored") for t in trials)
    print(trials[0].user_attrs["error"][:300])
    assert vb.is_alive()
    vb.set_mixture(trials[0].user_attrs["weights"])
    assert len(vb.generate(["1+2="], max_new_tokens=2)) == 1
    vb.restore_base()


def test_engine_death_raises_backend_error_and_restart_recovers(
    engines: _Engines, few: tuple[list[str], list[str]], lora_cfg: StudyConfig
) -> None:
    import psutil

    prompts = few[0]
    vb = engines.get("lora")
    w = _mixtures(lora_cfg.n_domains)[2]
    vb.set_mixture(w)
    before = vb.generate(prompts[:8], max_new_tokens=lora_cfg.objective.max_new_tokens)
    old_sockets = _ipc_sockets(vb)
    pids = vb.engine_core_pids()
    assert pids, "no engine-core process to kill (is VLLM_ENABLE_V1_MULTIPROCESSING=0?)"
    children = [c for pid in pids for c in psutil.Process(pid).children(recursive=True)]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while vb.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    with pytest.raises(BackendError, match="restart"):
        vb.generate(prompts[:8], max_new_tokens=4)
    with pytest.raises(BackendError, match="restart"):
        vb.set_mixture(w)
    with pytest.raises(BackendError):
        vb.loglikelihood(prompts[:1], ["1"])
    vb.restart()
    assert vb.is_alive() and vb.current == pytest.approx(w)
    assert _ipc_sockets(vb).isdisjoint(old_sockets), "the dead engine's IPC sockets were not removed"
    assert vb.generate(prompts[:8], max_new_tokens=lora_cfg.objective.max_new_tokens) == before
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"the dead engine's workers are still running: {[p.pid for p in alive]}"


def _ipc_sockets(vb: VLLMBackend) -> set[str]:
    """The names of the IPC sockets in the backend's own folder (at least one while an engine is alive)."""
    names = {p.name for p in vb._rpc_dir.iterdir() if p.is_socket()}
    assert names, f"the engine's IPC sockets are not in {vb._rpc_dir}"
    return names


def test_close_removes_the_engine_ipc_sockets(engines: _Engines) -> None:
    """vLLM never removes its ZeroMQ socket files; the backend keeps them in its folder and removes them."""
    import tempfile

    vb = engines.get("lora")
    names = _ipc_sockets(vb)
    assert not any((Path(tempfile.gettempdir()) / n).exists() for n in names)
    engines.close()
    assert not vb._rpc_dir.exists()


_KILLED_OWNER = """
import json, os, signal, sys
from dmo_search.backends.vllm import VLLMBackend
from dmo_search.config import StudyConfig

if __name__ == "__main__":
    vb = VLLMBackend(StudyConfig.model_validate_json(open(sys.argv[1]).read()))
    print(json.dumps({"engine": vb.engine_core_pids(), "tmp": str(vb._tmp)}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_engine_of_a_sigkilled_owner_is_stopped(cfg: StudyConfig, tmp_path: Path) -> None:
    """SIGKILL the process that started an engine: its watchdog stops the engine core (vLLM left it running,
    holding its memory) and removes the backend's temporary folder."""
    import psutil

    (tmp_path / "cfg.json").write_text(_with(cfg, name="vllm", mode="dense").model_dump_json())
    (tmp_path / "owner.py").write_text(_KILLED_OWNER)
    log = (tmp_path / "owner.log").open("w")
    owner = subprocess.Popen(
        [sys.executable, str(tmp_path / "owner.py"), str(tmp_path / "cfg.json")],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert owner.stdout is not None
    with owner.stdout:
        line = owner.stdout.readline()  # the engine core inherits stdout: read one line, not to the end
    owner.wait(60)
    log.close()
    assert line, (tmp_path / "owner.log").read_text()[-3000:]
    info = json.loads(line)
    assert owner.returncode == -signal.SIGKILL and info["engine"]
    engine = [psutil.Process(pid) for pid in info["engine"] if psutil.pid_exists(pid)]
    _, alive = psutil.wait_procs(engine, timeout=60)
    assert not alive, f"the engine core outlived its owner: {[p.pid for p in alive]}"
    deadline = time.monotonic() + 30
    while Path(info["tmp"]).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(info["tmp"]).exists()


_STARTING_OWNER = """
import sys
from dmo_search.backends.vllm import VLLMBackend
from dmo_search.config import StudyConfig

if __name__ == "__main__":
    VLLMBackend(StudyConfig.model_validate_json(open(sys.argv[1]).read()))
    print("started", flush=True)
"""


def _name(p: Any) -> str:
    """A process's name, or "" once it has exited (vLLM's start-up runs short-lived helper processes too:
    reading the name of one that exited between two calls raised NoSuchProcess)."""
    import psutil

    try:
        return str(p.name())
    except psutil.Error:
        return ""


def test_engine_of_an_owner_killed_during_start_up_is_stopped(cfg: StudyConfig, tmp_path: Path) -> None:
    """SIGKILL the owner while vLLM starts its engine, before the engine core's pid is known: the watchdog,
    started first, adopted the engine core and stops it, and removes the backend's folder (before, both
    stayed: the engine core with about 1 GB of RAM and 400 MB of ``/dev/shm``)."""
    import psutil

    shm = Path("/dev/shm")
    before = set(shm.glob("dmo-vllm-*"))
    (tmp_path / "cfg.json").write_text(_with(cfg, name="vllm", mode="dense").model_dump_json())
    (tmp_path / "owner.py").write_text(_STARTING_OWNER)
    log = (tmp_path / "owner.log").open("w")
    owner = subprocess.Popen(
        [sys.executable, str(tmp_path / "owner.py"), str(tmp_path / "cfg.json")], stdout=log, stderr=log
    )
    seen: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while owner.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                seen = [*seen, *(c for c in psutil.Process(owner.pid).children(recursive=True) if c not in seen)]
            if any("EngineCore" in _name(p) for p in seen):
                break
            time.sleep(0.1)
        assert owner.poll() is None, f"the owner exited first: {(tmp_path / 'owner.log').read_text()[-3000:]}"
        engine = [p for p in seen if "EngineCore" in _name(p)]
        assert engine, "no engine core appeared within 120 s"
        time.sleep(1.0)  # the engine core is starting: its pid is not yet known to the backend
        assert "started" not in (tmp_path / "owner.log").read_text()
        owner.kill()
        owner.wait()
        _, alive = psutil.wait_procs(seen, timeout=60)
        assert not alive, f"the starting engine outlived its owner: {[(p.pid, _name(p)) for p in alive]}"
        deadline = time.monotonic() + 30
        while (left := set(shm.glob("dmo-vllm-*")) - before) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"the backend's folder was left: {left}"
    finally:
        owner.kill()
        owner.wait()
        log.close()
        for p in seen:
            with contextlib.suppress(psutil.Error):
                p.kill()


def test_mode_resolution(cfg: StudyConfig, lora_cfg: StudyConfig) -> None:
    assert resolve_mode(_with(cfg, mode="auto"), on_cpu=False) == "dense"  # a full fine-tune expert
    assert resolve_mode(_with(lora_cfg, mode="auto"), on_cpu=False) == "lora"
    assert resolve_mode(_with(lora_cfg, mode="auto"), on_cpu=True) == "dense"  # LoRA decoding is slower on CPU
    assert resolve_mode(_with(lora_cfg, mode="dense"), on_cpu=False) == "dense"
    with pytest.raises(BackendError, match="not a LoRA adapter"):
        resolve_mode(_with(cfg, mode="lora"))
