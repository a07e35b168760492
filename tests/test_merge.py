"""Merged weights against an independent reference, bit-exact restore, exclusions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dmo_search.config import DEFAULT_EXCLUDE_FULL, DEFAULT_EXCLUDE_LORA, ExpertConfig
from dmo_search.experts import DenseDelta, LowRankDelta, load_expert_set
from dmo_search.merge import InPlaceMerger, is_excluded, merged_state
from tests._tiny import TinyWorld, build_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    return build_tiny(tmp_path_factory.mktemp("tiny"))


def _experts(t: TinyWorld) -> list[ExpertConfig]:
    return [
        ExpertConfig(name="a", path=t.lora[0], kind="lora"),
        ExpertConfig(name="b", path=t.lora[1], kind="lora"),
        ExpertConfig(name="c", path=t.full, kind="full"),
    ]


def _load(t: TinyWorld, *, fused: bool | None = None) -> tuple[torch.nn.Module, InPlaceMerger]:
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(t.base, dtype=torch.float32)
    es = load_expert_set(model, t.base, _experts(t))
    merger = InPlaceMerger(model, es, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL, fused=fused)
    return model, merger


def _reference(t: TinyWorld, weights: list[float]) -> dict[str, torch.Tensor]:
    """Each LoRA expert folded by peft's merge_and_unload, combined in float64 (paper's recipe)."""
    from peft import PeftModel
    from transformers import Qwen2ForCausalLM

    def sd(m: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to(torch.float64) for k, v in m.named_parameters()}

    base = sd(Qwen2ForCausalLM.from_pretrained(t.base, dtype=torch.float32))
    thetas = []
    for path in t.lora:
        m = PeftModel.from_pretrained(Qwen2ForCausalLM.from_pretrained(t.base, dtype=torch.float32), str(path))
        thetas.append((sd(m.merge_and_unload()), DEFAULT_EXCLUDE_LORA))
    thetas.append((sd(Qwen2ForCausalLM.from_pretrained(t.full, dtype=torch.float32)), DEFAULT_EXCLUDE_FULL))
    out = {k: v.clone() for k, v in base.items()}
    for w, (theta, excl) in zip(weights, thetas, strict=True):
        for k in out:
            if not is_excluded(k, excl):
                out[k] += w * (theta[k] - base[k])
    return out


# fused=True is the GPU's default kernel sequence, run here on the CPU (its CPU twin); also cover one
# LoRA expert alone (no fused low-rank stack) and a full fine-tune alone (one dense term).
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    "weights", [[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.25, 0.75], [0.0, 0.0, 1.0], [0.6, 0.4, 0.0]]
)
def test_merge_matches_peft_reference(tiny: TinyWorld, weights: list[float], fused: bool) -> None:
    model, merger = _load(tiny, fused=fused)
    assert merger.fused is fused
    merger.apply(weights)
    ref = _reference(tiny, weights)
    worst = max((p.detach().to(torch.float64) - ref[n]).abs().max().item() for n, p in model.named_parameters())
    assert worst < 1e-6
    # the merge actually moved something
    merger.restore()
    moved = max((p.detach().to(torch.float64) - ref[n]).abs().max().item() for n, p in model.named_parameters())
    assert moved > 1e-3


@pytest.mark.gpu
def test_merge_on_cuda_matches_the_reference(tiny: TinyWorld) -> None:
    """The GPU twin of the test above: the same merger with the model and the deltas on CUDA."""
    model, merger = _load(tiny)
    dev = torch.device("cuda")
    model.to(dev)
    for e in merger.experts.experts:
        e.deltas = {k: d.to(dev) for k, d in e.deltas.items()}
    merger = InPlaceMerger(model, merger.experts, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL)
    assert merger.fused  # the default off the CPU
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    for weights in ([0.2, 0.3, 0.5], [0.0, 0.25, 0.75]):
        merger.apply(weights)
        ref = _reference(tiny, weights)
        worst = max(
            (p.detach().cpu().to(torch.float64) - ref[n]).abs().max().item() for n, p in model.named_parameters()
        )
        assert worst < 1e-6
    merger.restore()
    assert all(torch.equal(original[n], p) for n, p in model.named_parameters())
    assert all(p.device.type == "cuda" for p in model.parameters())


def test_lora_stays_low_rank(tiny: TinyWorld) -> None:
    _, merger = _load(tiny)
    a, b, c = merger.experts.experts
    assert all(isinstance(d, LowRankDelta) for d in a.deltas.values())
    assert {d.rank for d in b.deltas.values()} == {8}
    assert all(isinstance(d, DenseDelta) for d in c.deltas.values())
    # only the 7 linear layers x 2 layers are adapted
    assert len(a.deltas) == 14


@pytest.mark.parametrize("fused", [False, True])
def test_restore_is_bit_exact_after_20_cycles(tiny: TinyWorld, fused: bool) -> None:
    model, merger = _load(tiny, fused=fused)
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(0)
    for _ in range(20):
        w = torch.distributions.Dirichlet(torch.ones(3)).sample().tolist()
        merger.apply([x / sum(w) for x in w])
        merger.restore()
    assert all(torch.equal(original[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("fused", [False, True])
def test_apply_without_restore_equals_fresh_apply(tiny: TinyWorld, fused: bool) -> None:
    model, merger = _load(tiny, fused=fused)
    merger.apply([0.9, 0.05, 0.05])
    merger.apply([0.1, 0.6, 0.3])
    once = {n: p.detach().clone() for n, p in model.named_parameters()}
    merger.restore()
    merger.apply([0.1, 0.6, 0.3])
    assert all(torch.equal(once[n], p) for n, p in model.named_parameters())


def test_fused_and_copy_based_agree_with_an_unstacked_lora_term(tiny: TinyWorld) -> None:
    """One LoRA expert next to a full fine-tune: its factors are not stacked, so the fused sequence
    writes its product first (beta 0) and adds the dense term; both sequences give the same merge."""
    from transformers import Qwen2ForCausalLM

    experts = [
        ExpertConfig(name="a", path=tiny.lora[0], kind="lora"),
        ExpertConfig(name="c", path=tiny.full, kind="full"),
    ]
    results = []
    for fused in (False, True):
        model = Qwen2ForCausalLM.from_pretrained(tiny.base, dtype=torch.float32)
        es = load_expert_set(model, tiny.base, experts)
        merger = InPlaceMerger(
            model, es, exclude_full=DEFAULT_EXCLUDE_FULL, exclude_lora=DEFAULT_EXCLUDE_LORA, fused=fused
        )
        assert any(isinstance(d, LowRankDelta) for e in merger.entries for _, d in e.terms)
        out = []
        for w in ([0.3, 0.7], [1.0, 0.0], [0.0, 1.0]):
            merger.apply(w)
            out.append({n: p.detach().clone() for n, p in model.named_parameters()})
        results.append(out)
    for a, b in zip(*results, strict=True):
        assert max((a[n] - b[n]).abs().max().item() for n in a) < 1e-6


def test_exclusions_hold(tiny: TinyWorld) -> None:
    model, merger = _load(tiny)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    merger.apply([0.0, 0.0, 1.0])  # the full expert changes every parameter, norms included
    for n, p in model.named_parameters():
        if is_excluded(n, DEFAULT_EXCLUDE_FULL):
            assert torch.equal(before[n], p)
    # LoRA-only mixture: embeddings, norms and biases stay at base (the paper's LoRA-mode list)
    merger.apply([0.5, 0.5, 0.0])
    for n, p in model.named_parameters():
        if is_excluded(n, DEFAULT_EXCLUDE_LORA):
            assert torch.equal(before[n], p), n
    assert not torch.equal(
        before["model.layers.0.self_attn.q_proj.weight"], model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    )
    # a custom exclusion keeps q_proj at base even for the full expert
    from dmo_search.experts import load_expert_set as les

    m2 = type(model).from_pretrained(tiny.base, dtype=torch.float32)
    mg = InPlaceMerger(m2, les(m2, tiny.base, _experts(tiny)), exclude_full=["q_proj"], exclude_lora=["q_proj"])
    mg.apply([0.3, 0.3, 0.4])
    assert torch.equal(
        before["model.layers.1.self_attn.q_proj.weight"],
        dict(m2.named_parameters())["model.layers.1.self_attn.q_proj.weight"],
    )


def test_merged_state_reference_agrees(tiny: TinyWorld) -> None:
    model, merger = _load(tiny)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    w = [0.3, 0.3, 0.4]
    ref = merged_state(
        base,
        merger.experts,
        w,
        exclude_lora=DEFAULT_EXCLUDE_LORA,
        exclude_full=DEFAULT_EXCLUDE_FULL,
        dtype=torch.float64,
    )
    merger.apply(w)
    assert max((p.double() - ref[n]).abs().max().item() for n, p in model.named_parameters()) < 1e-6


def test_bad_weights_refused_and_model_untouched(tiny: TinyWorld) -> None:
    model, merger = _load(tiny)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for bad in ([0.5, 0.5], [0.5, 0.6, -0.1], [0.2, 0.2, 0.2], [float("nan"), 0.5, 0.5]):
        with pytest.raises(ValueError):
            merger.apply(bad)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_paths_are_real(tiny: TinyWorld) -> None:
    assert (Path(tiny.lora[0]) / "adapter_model.safetensors").is_file()
