"""Merge methods: hand-computed examples, independent re-implementations, determinism, config errors,
the in-place merger with a non-linear method (bit-exact restore) and the vLLM LoRA path's refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dmo_search.config import DEFAULT_EXCLUDE_FULL, DEFAULT_EXCLUDE_LORA, ConfigError, ExpertConfig, parse_config
from dmo_search.experts import load_expert_set
from dmo_search.merge import InPlaceMerger, is_excluded, merged_state
from dmo_search.merge_methods import (
    MergeMethod,
    dare_linear,
    dare_ties,
    iso,
    linear,
    method_seeds,
    ties,
    tsv,
    wudi,
    wudi2,
)
from dmo_search.merge_params import METHOD_PARAMS, resolve_params
from tests._tiny import TinyWorld, build_tiny

T = torch.tensor


def _close(a: torch.Tensor, b: object, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(a.numpy(), np.asarray(b, dtype=np.float64), rtol=tol, atol=tol)


# ------------------------------------------------------------------------------- hand-computed
def test_linear_is_the_weighted_sum() -> None:
    _close(linear(torch.zeros(2), [T([1.0, 2.0]), T([3.0, 4.0])], [0.25, 0.75]), [2.5, 3.5])


def test_ties_by_hand() -> None:
    t1, t2 = T([4.0, -1.0, 2.0, -3.0]), T([-2.0, 3.0, 1.0, 5.0])
    # mask 0.5: keep |x| >= 2nd smallest |x| -> [4, 0, 2, -3] and [-2, 3, 0, 5]; signs of the sum
    # [2, 3, 2, 2] all +; disjoint mean over the agreeing entries.
    _close(ties(torch.zeros(4), [t1, t2], [1.0, 1.0], mask_rate=0.5), [4.0, 3.0, 2.0, 5.0])
    # w = (0.5, 1): trimmed [2, 0, 1, -1.5], [-2, 3, 0, 5]; sum [0, 3, 1, 3.5]; the zero sign takes the
    # sign of the sum of elected signs (+).
    _close(ties(torch.zeros(4), [t1, t2], [0.5, 1.0], mask_rate=0.5), [2.0, 3.0, 1.0, 5.0])
    _close(ties(torch.zeros(4), [t1, t2], [0.5, 1.0], mask_rate=0.5, scaling_coefficient=2.0), [4.0, 6.0, 2.0, 10.0])
    # default mask 0.8 on 5 entries: k = 4; |x| >= the 4th smallest |x| (4) survives, as in the reference
    _close(ties(torch.zeros(5), [T([1.0, -5.0, 2.0, 3.0, 4.0])], [1.0]), [0, -5.0, 0, 0, 4.0])


def test_zero_weight_experts_take_no_part() -> None:
    t1, t2 = T([4.0, -1.0, 2.0, -3.0]), T([-2.0, 3.0, 1.0, 5.0])
    for name in METHOD_PARAMS:
        m = MergeMethod.create(name, {"steps": 2} if name.startswith("wudi") else None)
        both = m.merge(torch.zeros(4), [t1, t2], [1.0, 0.0], key="x", ids=[0, 1])
        alone = m.merge(torch.zeros(4), [t1], [1.0], key="x", ids=[0])
        assert torch.equal(both, alone), name


def test_dare_drops_and_rescales_deterministically() -> None:
    g = torch.Generator().manual_seed(1)
    v = torch.randn(100, 100, generator=g) + 5.0  # no exact zeros
    out = dare_linear(torch.zeros(100, 100), [v], [0.5], seeds=[7])
    dropped = out == 0
    assert 0.17 < float(dropped.float().mean()) < 0.23
    _close(out[~dropped], (0.5 * v / 0.8)[~dropped])
    assert torch.equal(out, dare_linear(torch.zeros(100, 100), [v], [0.5], seeds=[7]))
    assert not torch.equal(dropped, dare_linear(torch.zeros(100, 100), [v], [0.5], seeds=[8]) == 0)
    # the same entries are dropped whatever the mixture weight (common random numbers)
    assert torch.equal(dropped, dare_linear(torch.zeros(100, 100), [v], [0.9], seeds=[7]) == 0)
    _close(dare_linear(torch.zeros(2), [T([1.0, 2.0])], [0.5], seeds=[0], drop_rate=0.0), [0.5, 1.0])
    _close(dare_linear(torch.zeros(2), [T([1.0, 2.0])], [0.5], seeds=[0], drop_rate=0.0, rescale=False), [0.5, 1.0])


def test_dare_ties_is_ties_of_the_dare_vectors() -> None:
    g = torch.Generator().manual_seed(2)
    vs = [torch.randn(6, 5, generator=g) for _ in range(2)]
    w = [0.3, 0.7]
    seeds = [11, 12]
    dared = [dare_linear(torch.zeros(6, 5), [v], [x], seeds=[s]) for v, x, s in zip(vs, w, seeds, strict=True)]
    want = ties(torch.zeros(6, 5), dared, [1.0, 1.0])
    assert torch.allclose(dare_ties(torch.zeros(6, 5), vs, w, seeds=seeds), want)
    m = MergeMethod.create("dare_ties", seed=3)
    a = m.merge(torch.zeros(6, 5), vs, w, key="p", ids=[0, 1])
    assert torch.equal(a, m.merge(torch.zeros(6, 5), vs, w, key="p", ids=[0, 1]))
    assert not torch.equal(a, m.merge(torch.zeros(6, 5), vs, w, key="q", ids=[0, 1]))
    assert method_seeds(3, "p", [0, 1]) == method_seeds(3, "p", [0, 1]) != method_seeds(4, "p", [0, 1])


def test_tsv_by_hand() -> None:
    # orthogonal task vectors: each keeps k = 1 triplet, the stacks are already orthogonal -> the sum
    _close(tsv(torch.zeros(2, 2), [T([[3.0, 0], [0, 0]]), T([[0, 0], [0, 2.0]])], [1.0, 1.0]), [[3, 0], [0, 2]])
    # a single expert keeps all its triplets: TSV is w * tau
    v = T([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    _close(tsv(torch.zeros(2, 3), [v], [0.5]), 0.5 * v.numpy())
    # 1-D parameters, and every parameter but lm_head.weight with scope lm_head: the mean
    _close(tsv(torch.zeros(2), [T([1.0, 2.0]), T([3.0, 4.0])], [1.0, 1.0]), [2.0, 3.0])
    _close(tsv(torch.zeros(2, 3), [v, 2 * v], [1.0, 1.0], scope="lm_head", key="q.weight"), 1.5 * v.numpy())


def _tsv_numpy(vs: list[np.ndarray]) -> np.ndarray:
    """The reference's svd_merging for one 2-D parameter, re-written in numpy (float64)."""
    m, n = vs[0].shape
    r = min(m, n)
    k = int(r * (1.0 / len(vs)))
    su, ss, sv = np.zeros((m, r)), np.zeros(r), np.zeros((r, n))
    for i, v in enumerate(vs):
        u, s, vt = np.linalg.svd(v, full_matrices=False)
        su[:, i * k : (i + 1) * k], ss[i * k : (i + 1) * k], sv[i * k : (i + 1) * k] = u[:, :k], s[:k], vt[:k]
    uu, _, vu = np.linalg.svd(su, full_matrices=False)
    uv, _, vv = np.linalg.svd(sv, full_matrices=False)
    return uu @ vu @ np.diag(ss) @ uv @ vv


def test_tsv_matches_a_numpy_reimplementation() -> None:
    g = torch.Generator().manual_seed(3)
    vs = [torch.randn(7, 5, generator=g) for _ in range(2)]
    w = [0.4, 0.6]
    want = _tsv_numpy([x * v.double().numpy() for v, x in zip(vs, w, strict=True)])
    _close(tsv(torch.zeros(7, 5), vs, w), want, tol=1e-4)


def test_iso_by_hand() -> None:
    # the sum diag(3, 1) has singular values (3, 1); their mean 2 replaces both
    _close(iso(torch.zeros(2, 2), [T([[3.0, 0], [0, 0]]), T([[0, 0], [0, 1.0]])], [1.0, 1.0]), [[2, 0], [0, 2]])
    _close(iso(torch.zeros(2, 2), [T([[3.0, 0], [0, 0]]), T([[0, 0], [0, 1.0]])], [0.5, 1.0]), [[1.25, 0], [0, 1.25]])
    _close(iso(torch.zeros(2), [T([1.0, 2.0]), T([3.0, 4.0])], [1.0, 1.0]), [4.0, 6.0])  # 1-D: the sum


def test_wudi_one_adam_step_by_hand() -> None:
    g = torch.Generator().manual_seed(4)
    vs = [torch.randn(3, 4, generator=g) for _ in range(2)]
    w = [0.3, 0.7]
    sc = [x * v.double().numpy() for v, x in zip(vs, w, strict=True)]
    x0 = sc[0] + sc[1]
    _close(wudi(torch.zeros(3, 4), vs, w, steps=0), x0)
    # dL/dX = sum_i 2 (X - v_i) v_i^T v_i / ||v_i||^2; Adam's first step moves by lr * g / (|g| + eps)
    grad = sum(2 * (x0 - v) @ v.T @ v / np.sum(v**2) for v in sc)
    lr = 1e-3
    _close(wudi(torch.zeros(3, 4), vs, w, steps=1, lr=lr), x0 - lr * grad / (np.abs(grad) + 1e-8), tol=1e-5)
    # orthogonal task vectors do not interfere: the sum is optimal and stays
    a, b = T([[3.0, 0], [0, 0]]), T([[0, 0], [0, 2.0]])
    _close(wudi(torch.zeros(2, 2), [a, b], [1.0, 1.0], steps=5, lr=0.1), [[3, 0], [0, 2]])
    # lm_head and non-2-D parameters: the reference's mean
    _close(wudi(torch.zeros(2, 2), [a, b], [1.0, 1.0], key="lm_head.weight"), [[1.5, 0], [0, 1.0]])


def test_wudi2_one_sgd_step_by_hand() -> None:
    g = torch.Generator().manual_seed(5)
    vs = [torch.randn(2, 3, generator=g) for _ in range(2)]
    w = [0.5, 1.0]
    sc = [x * v.double().numpy() for v, x in zip(vs, w, strict=True)]
    x0 = (sc[0] + sc[1]) / 2
    _close(wudi2(torch.zeros(2, 3), vs, w, steps=0), x0)
    grad = np.zeros_like(x0)
    k = 1  # int(min(2, 3) / 2)
    for v in sc:
        u, s, vt = np.linalg.svd(v, full_matrices=False)
        low = s[:k, None] * vt[:k]
        tk = (u[:, :k] * s[:k]) @ vt[:k]
        grad += 2 * (x0 - tk) @ low.T @ low / np.sum(v**2)
    lr = 1e-2
    _close(wudi2(torch.zeros(2, 3), vs, w, steps=1, lr=lr), x0 - lr * grad, tol=1e-5)


def test_methods_do_not_modify_their_inputs() -> None:
    g = torch.Generator().manual_seed(6)
    vs = [torch.randn(4, 3, generator=g) for _ in range(3)]
    copies = [v.clone() for v in vs]
    for name in METHOD_PARAMS:
        MergeMethod.create(name, {"steps": 2} if name.startswith("wudi") else None).merge(
            torch.zeros(4, 3), vs, [0.2, 0.3, 0.5], key="p"
        )
        assert all(torch.equal(a, b) for a, b in zip(vs, copies, strict=True)), name


def test_method_json_round_trip() -> None:
    m = MergeMethod.create("wudi2", {"steps": 7}, seed=5)
    assert MergeMethod.from_json(m.to_json()) == m
    assert m.params["lr"] == 1e-4 and m.params["steps"] == 7


# ------------------------------------------------------------------------------------ config
def test_param_errors_name_the_allowed_parameters() -> None:
    with pytest.raises(ValueError, match=r"\['drop_rate'\] are not parameters of method 'ties'.*mask_rate"):
        resolve_params("ties", {"drop_rate": 0.1})
    with pytest.raises(ValueError, match="allowed: none"):
        resolve_params("linear", {"mask_rate": 0.1})
    with pytest.raises(ValueError, match=r"mask_rate.*\[0, 1\)"):
        resolve_params("ties", {"mask_rate": 1.5})
    with pytest.raises(ValueError, match="whole number"):
        resolve_params("wudi", {"steps": 2.5})
    with pytest.raises(ValueError, match="one of"):
        resolve_params("tsv", {"scope": "everything"})
    with pytest.raises(ValueError, match="true or false"):
        resolve_params("dare_linear", {"rescale": 1})
    assert resolve_params("wudi", {"steps": 3.0})["steps"] == 3


def _raw(tmp_path: Path, merge: dict[str, object]) -> dict[str, object]:
    return {
        "study_name": "s",
        "base_model": str(tmp_path / "base"),
        "experts": [{"name": "a", "path": "a", "kind": "lora"}, {"name": "b", "path": "b", "kind": "lora"}],
        "objective": {"validation": {"a": "a.jsonl"}},
        "merge": merge,
    }


def test_config_merge_section(tmp_path: Path) -> None:
    cfg = parse_config(_raw(tmp_path, {"method": "dare_ties", "params": {"drop_rate": 0.3}, "seed": 4}))
    m = MergeMethod.from_config(cfg.merge)
    assert (m.name, m.params["drop_rate"], m.params["mask_rate"], m.seed) == ("dare_ties", 0.3, 0.8, 4)
    assert parse_config(_raw(tmp_path, {})).merge.method == "linear"
    with pytest.raises(ConfigError, match=r"merge.*not parameters of method 'iso'.*scaling_coefficient"):
        parse_config(_raw(tmp_path, {"method": "iso", "params": {"steps": 3}}))
    with pytest.raises(ConfigError, match=r"merge.method = \"fisher\".*'ties'"):
        parse_config(_raw(tmp_path, {"method": "fisher"}))


def test_vllm_lora_mode_refuses_non_linear_methods(tmp_path: Path) -> None:
    from dmo_search.backends.base import BackendError
    from dmo_search.backends.vllm import LoRAMerge, resolve_mode

    cfg = parse_config(_raw(tmp_path, {"method": "ties"}))
    with pytest.raises(BackendError, match=r"only the linear merge; use backend\.mode: dense"):
        resolve_mode(cfg.model_copy(update={"backend": cfg.backend.model_copy(update={"mode": "lora"})}))
    with pytest.raises(BackendError, match="'ties'"):
        LoRAMerge(cfg)
    auto = cfg.model_copy(update={"backend": cfg.backend.model_copy(update={"mode": "auto"})})
    assert resolve_mode(auto, on_cpu=False) == "dense"


# ------------------------------------------------------------------------- the in-place merger
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    return build_tiny(tmp_path_factory.mktemp("tiny_methods"))


def _merger(t: TinyWorld, method: MergeMethod | None) -> tuple[torch.nn.Module, InPlaceMerger]:
    from transformers import Qwen2ForCausalLM

    model = Qwen2ForCausalLM.from_pretrained(t.base, dtype=torch.float32)
    experts = [
        ExpertConfig(name="a", path=t.lora[0], kind="lora"),
        ExpertConfig(name="b", path=t.lora[1], kind="lora"),
        ExpertConfig(name="c", path=t.full, kind="full"),
    ]
    es = load_expert_set(model, t.base, experts)
    mg = InPlaceMerger(model, es, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL, method=method)
    return model, mg


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_linear_method_equals_the_default_merger(tiny: TinyWorld) -> None:
    m1, g1 = _merger(tiny, None)
    m2, g2 = _merger(tiny, MergeMethod.create("linear"))
    for w in ([0.2, 0.3, 0.5], [0.0, 1.0, 0.0]):
        g1.apply(w)
        g2.apply(w)
        a, b = _params(m1), _params(m2)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_dare_without_drops_equals_the_linear_merge(tiny: TinyWorld) -> None:
    m1, g1 = _merger(tiny, None)
    m2, g2 = _merger(tiny, MergeMethod.create("dare_linear", {"drop_rate": 0.0}))
    w = [0.2, 0.3, 0.5]
    g1.apply(w)
    g2.apply(w)
    a, b = _params(m1), _params(m2)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("name", ["ties", "dare_ties", "tsv", "iso", "wudi", "wudi2"])
def test_non_linear_merge_in_place_and_restore(tiny: TinyWorld, name: str) -> None:
    method = MergeMethod.create(name, {"steps": 3} if name.startswith("wudi") else None, seed=1)
    model, mg = _merger(tiny, method)
    base = _params(model)
    w = [0.2, 0.3, 0.5]
    mg.apply(w)
    got = _params(model)
    ref = merged_state(
        base, mg.experts, w, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL, method=method
    )
    linear_ref = merged_state(base, mg.experts, w, exclude_lora=DEFAULT_EXCLUDE_LORA, exclude_full=DEFAULT_EXCLUDE_FULL)
    changed = 0
    for k in got:
        assert torch.allclose(got[k], ref[k], atol=1e-5), k
        if is_excluded(k, DEFAULT_EXCLUDE_FULL) and is_excluded(k, DEFAULT_EXCLUDE_LORA):
            assert torch.equal(got[k], base[k]), k
        changed += int(not torch.allclose(got[k], linear_ref[k], atol=1e-6))
    assert changed > 0  # the method is not the linear merge
    mg.restore()
    assert all(torch.equal(p, base[n]) for n, p in _params(model).items())


def test_set_method_switches_a_merger_as_a_new_one_would(tiny: TinyWorld) -> None:
    """``set_method`` on a live merger (linear, then ties, then linear again) writes exactly what a merger
    built with that method writes: the plan, the base copies and the experts carry over."""
    ties = MergeMethod.create("ties", seed=1)
    model, mg = _merger(tiny, None)
    fresh_model, fresh = _merger(tiny, ties)
    w = [0.2, 0.3, 0.5]
    mg.apply(w)
    linear = _params(model)
    mg.set_method(ties)
    mg.apply(w)
    fresh.apply(w)
    a, b = _params(model), _params(fresh_model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], linear[k]) for k in a)
    mg.set_method(None)
    mg.apply(w)
    assert all(torch.equal(v, linear[k]) for k, v in _params(model).items())
