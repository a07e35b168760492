"""Local lmms-eval tasks for the tests: task YAML + ``utils.py`` over a JSONL, text or image documents.

lmms-eval is imported from the ``--no-deps`` folder the set-up makes (``.venv/lmms-eval-ref``, or
``DMO_LMMS_EVAL_REF``); :func:`require_lmms_eval` skips a test without it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

LMMS_REF = Path(os.environ.get("DMO_LMMS_EVAL_REF", Path(__file__).resolve().parents[1] / ".venv" / "lmms-eval-ref"))

_UTILS = """{imports}
def doc_to_visual(doc):
    return {visual}


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["prompt"]


def doc_to_target(doc):
    return doc["answers"][0]
"""
TEXT_UTILS = _UTILS.format(imports="", visual="[]")
IMAGE_UTILS = _UTILS.format(imports="from PIL import Image\n\n", visual='[Image.open(doc["image"]).convert("RGB")]')
_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files: {{test: "{data}"}}
  cache_dir: "{cache}"
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
generation_kwargs: {{max_new_tokens: {max_new}, until: ["\\n"], do_sample: false}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""


def require_lmms_eval() -> None:
    """Skip the calling test when lmms-eval's code is not where the set-up puts it."""
    if not (LMMS_REF / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval's code is not at {LMMS_REF}; `make install` puts it there (or set DMO_LMMS_EVAL_REF)")


def write_task(folder: Path, name: str, utils: str, data: Path, max_new: int) -> None:
    """A local lmms-eval task ``name`` over the JSONL ``data`` (its ``utils.py`` next to it)."""
    folder.mkdir(exist_ok=True)
    (folder / "utils.py").write_text(utils)
    text = _TASK.format(name=name, data=data, cache=folder.parent / "cache", max_new=max_new)
    (folder / f"{name}.yaml").write_text(text)


def check_image_task(backend: Any, world: Any, tmp_path: Path) -> None:
    """Score a PNG + JSONL image task through the ``lmms_eval`` objective on ``backend`` (a tiny Qwen2-VL
    with experts ``lora`` and ``full``) and check it against the backend's own greedy answers.

    The targets are the answers of mixture ``[1, 0]`` for each (image, prompt): lmms-eval must score that
    mixture 1.0 (the images reached the model as in a direct call) and ``[0, 1]`` exactly as a direct
    comparison of its answers does.
    """
    from dmo_search.config import ObjectiveConfig
    from dmo_search.objectives import make_objective
    from dmo_search.objectives.lm_eval_adapter import cut_at_stop

    docs = []
    for i, image in enumerate(world.images):
        path = tmp_path / f"img{i}.png"
        image.save(path)
        docs += [{"image": str(path), "prompt": prompt, "i": i} for prompt in world.prompts[:2]]

    def answers(w: list[float]) -> list[str]:
        backend.set_mixture(w)
        prompts = [backend.format_prompt(d["prompt"], chat=True, n_images=1) for d in docs]
        images = [[world.images[d["i"]]] for d in docs]
        texts = backend.generate(prompts, max_new_tokens=4, batch_size=8, images=images)
        return [cut_at_stop(t, ["\n"]) for t in texts]

    reference, other = answers([1.0, 0.0]), answers([0.0, 1.0])
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({**d, "answers": [a]}) + "\n" for d, a in zip(docs, reference, strict=True)))
    write_task(tmp_path / "tasks", "tiny_vl_images", IMAGE_UTILS, data, 4)
    cfg = ObjectiveConfig(
        type="lmms_eval",
        tasks=[{"name": "tiny_vl_images", "metric": "exact_match,none"}],  # type: ignore[list-item]
        include_path=tmp_path / "tasks",
        subset_size=len(docs),
        max_new_tokens=4,
    )
    sys.path.insert(0, str(LMMS_REF))
    try:
        obj = make_objective(cfg)
        backend.set_mixture([1.0, 0.0])
        same = obj.evaluate(backend)
        backend.set_mixture([0.0, 1.0])
        moved = obj.evaluate(backend)
    finally:
        sys.path.remove(str(LMMS_REF))
    assert same.scores["tiny_vl_images"] == 1.0, reference  # every answer reproduced through lmms-eval
    want = sum(a.strip() == b.strip() for a, b in zip(other, reference, strict=True)) / len(docs)
    assert moved.scores["tiny_vl_images"] == want and want < 1.0, (other, reference)
