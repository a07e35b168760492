"""A non-linear merge method on vLLM's dense path: the worker writes the same theta(w) as transformers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dmo_search.backends.hf import HFBackend
from dmo_search.config import StudyConfig, load_config, parse_config
from dmo_search.proxies import config_with_method
from tests.backends._checksums import assert_engine_computes_with

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cfg(toy_world: Any) -> StudyConfig:
    data = json.loads(load_config(Path(toy_world.config_path)).to_json())
    data["backend"] = {**data["backend"], "name": "vllm", "mode": "dense", "dtype": "float32"}
    return config_with_method(parse_config(data), "dare_ties", {"drop_rate": 0.3}, seed=5)


def test_dense_vllm_serves_the_methods_merge(cfg: StudyConfig) -> None:
    pytest.importorskip("vllm")
    from dmo_search.backends.vllm import VLLMBackend

    hf = HFBackend(cfg)
    assert hf.merger.method.name == "dare_ties" and hf.merger.method.seed == 5
    vb = VLLMBackend(cfg)
    try:
        assert vb.mode == "dense"
        params = dict(hf.model.named_parameters())
        names = [n for n in vb.weight_checksums() if n in params and n in {e.name for e in hf.merger.entries}]
        assert names
        base = vb.weight_checksums(names)
        for w in ([0.5, 0.3, 0.2], [0.1, 0.1, 0.8]):
            hf.set_mixture(w)
            vb.set_mixture(w)
            got = assert_engine_computes_with(vb, params, names, f"w={w}")
            assert any(got[n] != base[n] for n in names)
        vb.restore_base()
        assert vb.weight_checksums(names) == base
    finally:
        vb.close()
