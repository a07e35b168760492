"""The transformers backend on the toy world: batching does not change answers, log-likelihoods are right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from dmo_search.backends.hf import HFBackend
from dmo_search.config import StudyConfig, load_config
from dmo_search.objectives.data import load_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backend(toy_world: Any) -> HFBackend:
    return HFBackend(load_config(toy_world.config_path))


@pytest.fixture(scope="module")
def prompts(toy_world: Any, backend: HFBackend) -> list[str]:
    cfg = load_config(toy_world.config_path)
    out = []
    for path in cfg.objective.validation.values():
        examples, _ = load_jsonl(path)
        out += [backend.format_prompt(e.prompt, chat=True) for e in examples[:8]]
    return out


def test_chat_template_wraps_prompt(backend: HFBackend) -> None:
    text = backend.format_prompt("hello", chat=True)
    assert "hello" in text and text != "hello"
    assert backend.format_prompt("hello", chat=False) == "hello"


def test_batching_does_not_change_greedy_answers(backend: HFBackend, prompts: list[str]) -> None:
    backend.set_mixture([1 / 3] * 3)
    one = backend.generate(prompts, max_new_tokens=12, batch_size=1)
    many = backend.generate(prompts, max_new_tokens=12, batch_size=64)
    assert one == many
    assert any(one)  # the trained model says something


def test_mixture_changes_answers_and_restore_brings_base_back(backend: HFBackend, prompts: list[str]) -> None:
    backend.restore_base()
    base = backend.generate(prompts, max_new_tokens=12, batch_size=32)
    outs = []
    for i in range(3):
        w = [0.0, 0.0, 0.0]
        w[i] = 1.0
        backend.set_mixture(w)
        outs.append(backend.generate(prompts, max_new_tokens=12, batch_size=32))
    assert any(o != base for o in outs)
    backend.restore_base()
    assert backend.generate(prompts, max_new_tokens=12, batch_size=32) == base


def test_loglikelihood_matches_a_manual_forward(backend: HFBackend, prompts: list[str]) -> None:
    backend.set_mixture([0.2, 0.3, 0.5])
    conts = [" 12", "abc"]
    res = backend.loglikelihood(prompts[:2], conts, batch_size=2)
    tok = backend.tokenizer
    for (lp, n), p, c in zip(res, prompts[:2], conts, strict=True):
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        c_ids = tok(c, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            logp = torch.log_softmax(backend.model(ids).logits.float(), -1)[0]
        manual = sum(float(logp[len(p_ids) + j - 1, t]) for j, t in enumerate(c_ids))
        assert n == len(c_ids)
        assert lp == pytest.approx(manual, abs=1e-4)
    # padding in a batch of unequal lengths gives the same numbers as one at a time
    single = [backend.loglikelihood([p], [c], batch_size=1)[0][0] for p, c in zip(prompts[:2], conts, strict=True)]
    assert [r[0] for r in res] == pytest.approx(single, abs=1e-4)


@pytest.mark.gpu
def test_cuda_backend_matches_the_cpu_backend(toy_world: Any, backend: HFBackend, prompts: list[str]) -> None:
    """The GPU twin of the tests above: backend.device cuda gives the CPU backend's answers and scores."""
    cfg = load_config(toy_world.config_path)
    gpu = HFBackend(cfg.model_copy(update={"backend": cfg.backend.model_copy(update={"device": "cuda"})}))
    assert {p.device.type for p in gpu.model.parameters()} == {"cuda"}
    conts = [" 12", "abc", " a b c", "7"] * 2
    for w in ([1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1], [0.0, 0.0, 1.0]):
        backend.set_mixture(w)
        gpu.set_mixture(w)
        a = backend.generate(prompts, max_new_tokens=12, batch_size=32)
        b = gpu.generate(prompts, max_new_tokens=12, batch_size=32)
        same = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
        la = backend.loglikelihood(prompts[:8], conts, batch_size=8)
        lb = gpu.loglikelihood(prompts[:8], conts, batch_size=8)
        worst = max(abs(x - y) for (x, _), (y, _) in zip(la, lb, strict=True))
        print(f"w={[round(x, 3) for x in w]}: cuda vs cpu same answers {same:.3f}, |dloglik| max {worst:.2e}")
        assert same >= 0.95
        assert worst < 1e-4
    gpu.close()


def test_a_checkpoint_is_served_in_place_and_the_base_comes_back(toy_world: Any, tmp_path: Path) -> None:
    """``serve_checkpoint`` puts a full checkpoint's parameters (the toy world's full fine-tune) into the
    live model; with only the LoRA experts merged, the next ``set_mixture`` / ``restore_base`` must
    bring back the base's embeddings and norms too, which the merger never touches."""
    from dmo_search.backends.base import BackendError
    from dmo_search.models import load_model

    data = json.loads(load_config(toy_world.config_path).model_dump_json())
    full = next(Path(e["path"]) for e in data["experts"] if e["kind"] == "full")
    data["experts"] = [e for e in data["experts"] if e["kind"] == "lora"]
    b = HFBackend(StudyConfig.model_validate(data))

    def state() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in b.model.state_dict().items()}

    def same(a: dict[str, torch.Tensor], c: dict[str, torch.Tensor]) -> bool:
        return a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)

    base = state()
    w = [0.3, 0.7]
    b.set_mixture(w)
    merged = state()
    b.serve_checkpoint(full)
    assert b.serving == full
    assert same(state(), load_model(full).state_dict())
    outside = [k for k in base if torch.equal(merged[k], base[k]) and not torch.equal(state()[k], base[k])]
    assert outside, "the checkpoint should differ where the LoRA merge leaves the base alone"
    b.set_mixture(w)
    assert b.serving is None and same(state(), merged)
    b.serve_checkpoint(full)
    b.restore_base()
    assert same(state(), base)
    conf = json.loads((full / "config.json").read_text())
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({**conf, "num_hidden_layers": 1}))
    with pytest.raises(BackendError, match=r"not a model of the base's architecture \(num_hidden_layers: "):
        b.serve_checkpoint(tmp_path / "other")
    with pytest.raises(BackendError, match=r"has no config\.json"):
        b.serve_checkpoint(tmp_path)
    assert same(state(), base)
