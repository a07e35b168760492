"""A tiny Qwen2-VL through the vLLM backend with image inputs, against transformers.

One dense engine for the module (start-up costs 35-80 s on CPU). Needs a vLLM whose Qwen2-VL imports
(it needs torchvision: the Makefile's install recipe provides torch 2.14.1 + torchvision 0.29.1);
skipped with the reason where it does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import torchvision  # noqa: F401
    import vllm  # noqa: F401
    from vllm.model_executor.models import qwen2_vl  # noqa: F401
except Exception as e:  # ImportError, or a torchvision that does not load next to this torch
    pytest.skip(f"vLLM's Qwen2-VL is not importable here ({type(e).__name__}: {e})", allow_module_level=True)

from dmo_search.backends.hf import HFBackend
from dmo_search.backends.vllm import VLLMBackend
from dmo_search.config import StudyConfig
from tests._lmms_tasks import check_image_task, require_lmms_eval
from tests._tiny_vl import TinyVLWorld, build_tiny_vl, tiny_vl_config

pytestmark = pytest.mark.slow

MIXTURES = [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> TinyVLWorld:
    return build_tiny_vl(tmp_path_factory.mktemp("tiny-vl"))


@pytest.fixture(scope="module")
def cfg(world: TinyVLWorld) -> StudyConfig:
    out: StudyConfig = tiny_vl_config(world, backend="vllm", mode="dense")
    return out


@pytest.fixture(scope="module")
def hf(cfg: StudyConfig) -> Iterator[HFBackend]:
    backend = HFBackend(cfg)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def engine(cfg: StudyConfig) -> Iterator[VLLMBackend]:
    backend = VLLMBackend(cfg)
    yield backend
    backend.close()


def _answers(backend: Any, world: TinyVLWorld) -> list[str]:
    prompts = [backend.format_prompt(p, chat=True, n_images=1) for p in world.prompts]
    out: list[str] = backend.generate(prompts, max_new_tokens=6, batch_size=4, images=[[im] for im in world.images])
    return out


def test_image_prompt_has_the_placeholder(engine: VLLMBackend) -> None:
    text = engine.format_prompt("what is it", chat=True, n_images=1)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text


def test_images_change_the_answer(engine: VLLMBackend, world: TinyVLWorld) -> None:
    """The image really reaches the model: a different image, a different greedy continuation somewhere."""
    engine.restore_base()
    a = _answers(engine, world)
    rotated = [world.images[(i + 1) % len(world.images)] for i in range(len(world.images))]
    prompts = [engine.format_prompt(p, chat=True, n_images=1) for p in world.prompts]
    b = engine.generate(prompts, max_new_tokens=6, images=[[im] for im in rotated])
    assert a != b


@pytest.mark.parametrize("w", MIXTURES, ids=lambda w: "-".join(f"{x:g}" for x in w))
def test_swap_changes_outputs_and_matches_transformers(
    engine: VLLMBackend, hf: HFBackend, world: TinyVLWorld, w: list[float]
) -> None:
    engine.restore_base()
    base_answers = _answers(engine, world)
    engine.set_mixture(w)
    hf.set_mixture(w)
    got, want = _answers(engine, world), _answers(hf, world)
    assert got == want
    assert got != base_answers, "the swap did not change the engine's outputs"


def test_engine_weights_equal_the_transformers_merge(engine: VLLMBackend, hf: HFBackend) -> None:
    """Per-tensor checksums of the engine's weights after a swap equal the transformers-side merge."""
    w = [0.3, 0.7]
    engine.set_mixture(w)
    hf.set_mixture(w)
    names = [n for n in engine.planned_names() if n.endswith(".weight") and "layers.0." in n][:8]
    assert names, "no language-model tensors are planned"
    got = engine.weight_checksums(names)
    params = dict(hf.model.named_parameters())
    for n in names:
        t = params[n].detach().double()
        s, ss = float(t.sum()), float((t * t).sum())
        assert got[n][0] == pytest.approx(s, rel=1e-4, abs=1e-3), n
        assert got[n][1] == pytest.approx(ss, rel=1e-4), n


def test_vision_encoder_is_left_at_base(engine: VLLMBackend) -> None:
    """The paper's defaults: LoRA experts touch only language-model layers, and a full fine-tune's
    vision blocks and patch embedding stay at base (its projector, ``visual.merger``, is merged)."""
    planned = engine.planned_names()
    assert any("layers.0.self_attn.q_proj" in n for n in planned)
    assert not [n for n in planned if "visual.blocks" in n or "visual.patch_embed" in n]


def test_a_served_checkpoint_reaches_the_vision_tower_and_leaves_with_the_next_swap(
    engine: VLLMBackend, hf: HFBackend, world: TinyVLWorld
) -> None:
    """``serve_checkpoint`` of the full fine-tune loads its vision blocks too (which the merge plan leaves
    at base): both backends then answer alike, and the next ``set_mixture`` brings the base's vision
    blocks back (answers and weights as before the checkpoint)."""
    from safetensors.torch import load_file

    from dmo_search.backends.vllm_ext import tensor_checksum

    tensors = {k: v for f in sorted(world.full.glob("*.safetensors")) for k, v in load_file(str(f)).items()}
    visual = [n for n in tensors if n.startswith("visual.blocks.0.") and n.endswith(".weight")]
    assert visual and not set(visual) & set(engine.planned_names())
    w = [0.3, 0.7]
    engine.set_mixture(w)
    merged = (_answers(engine, world), engine.weight_checksums(visual))
    engine.serve_checkpoint(world.full)
    hf.serve_checkpoint(world.full)
    got = engine.weight_checksums(visual)
    for n in visual:
        want = tensor_checksum(tensors[n])
        assert got[n][0] == pytest.approx(want[0], rel=1e-5, abs=1e-4), n
        assert got[n][1] == pytest.approx(want[1], rel=1e-5), n
    assert got != merged[1], "the full fine-tune's vision blocks should differ from the base's"
    served = _answers(engine, world)
    assert served == _answers(hf, world)
    engine.set_mixture(w)
    hf.set_mixture(w)
    assert (_answers(engine, world), engine.weight_checksums(visual)) == merged


def test_answers_are_not_empty(engine: VLLMBackend, world: TinyVLWorld) -> None:
    """The comparisons above compare real tokens, not empty strings."""
    engine.set_mixture([0.5, 0.5])
    answers = _answers(engine, world)
    print(answers)
    assert all(len(a) > 0 for a in answers)


def test_lmms_eval_image_task_on_the_live_engine(engine: VLLMBackend, world: TinyVLWorld, tmp_path: Path) -> None:
    """The ``lmms_eval`` objective over a PNG + JSONL image task, on the live engine (weights swapped in place)."""
    require_lmms_eval()
    check_image_task(engine, world, tmp_path)
