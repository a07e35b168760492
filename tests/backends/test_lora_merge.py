"""The rank-concatenated LoRA adapter (``LoRAMerge``) against the dense merge, through transformers + peft.

No vLLM here: this isolates the adapter's construction from any engine's kernels. In float64 the
adapter gives the dense merge's token log-probs within 1e-5 (what is left is its B columns, stored in
float32). In float32 neither path is exact: each differs from the float64 truth by up to ~2e-5 on
log-probs near -13, so two float32 paths cannot agree to 1e-5 at worst; the adapter must be no further
from the truth than the dense merge is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dmo_search.backends.vllm import LoRAMerge
from dmo_search.config import StudyConfig, load_config
from dmo_search.experts import ExpertSet, load_expert_set
from dmo_search.merge import InPlaceMerger, merged_state
from dmo_search.objectives.data import load_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_cfg(toy_world: Any) -> StudyConfig:
    cfg = load_config(toy_world.config_path)
    lora = [e for e in cfg.experts if e.kind == "lora"]
    assert len(lora) >= 2, "the toy world has at least two LoRA experts"
    return cfg.model_copy(update={"experts": lora})


@pytest.fixture(scope="module")
def sequences(lora_cfg: StudyConfig) -> list[torch.Tensor]:
    """Chat-formatted prompt + reference answer token ids, 8 per domain."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lora_cfg.base_model)
    out = []
    for path in lora_cfg.objective.validation.values():
        examples, _ = load_jsonl(path)
        for e in examples[:8]:
            msgs = [{"role": "user", "content": e.prompt}]
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + e.answers[0]
            out.append(torch.tensor([tok(text, add_special_tokens=False)["input_ids"]]))
    return out


def _logprobs(model: torch.nn.Module, sequences: list[torch.Tensor]) -> torch.Tensor:
    """Every next-token log-prob of every sequence, in float64."""
    out = []
    with torch.no_grad():
        for ids in sequences:
            logp = torch.log_softmax(model(ids).logits.to(torch.float64), -1)[0, :-1]
            out.append(logp.gather(-1, ids[0, 1:, None])[:, 0])
    return torch.cat(out)


def _base(cfg: StudyConfig, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype)


def test_rank_concatenated_adapter_equals_the_dense_merge(
    lora_cfg: StudyConfig, sequences: list[torch.Tensor], tmp_path: Path
) -> None:
    from peft import PeftModel

    base32 = _base(lora_cfg, torch.float32)
    experts: ExpertSet = load_expert_set(base32, lora_cfg.base_model, lora_cfg.experts)
    excl = {"exclude_lora": lora_cfg.merge.exclude_lora, "exclude_full": lora_cfg.merge.exclude_full}
    base64 = {k: v.to(torch.float64) for k, v in base32.state_dict().items()}
    merger = InPlaceMerger(base32, experts, **excl)
    lora_merge = LoRAMerge(lora_cfg)
    err32_lora, err32_dense = [], []
    for n, w in enumerate([[0.5, 0.5], [0.8, 0.2], [1.0, 0.0], [0.1, 0.9]]):
        adapter = lora_merge.write(w, tmp_path / f"adapter{n}")
        truth_model = _base(lora_cfg, torch.float64)
        truth_model.load_state_dict(merged_state(base64, experts, w, dtype=torch.float64, **excl), strict=False)
        truth = _logprobs(truth_model, sequences)
        lora64 = PeftModel.from_pretrained(_base(lora_cfg, torch.float64), str(adapter)).to(torch.float64)
        lora32 = PeftModel.from_pretrained(_base(lora_cfg, torch.float32), str(adapter))
        merger.apply(w)
        err64 = (_logprobs(lora64, sequences) - truth).abs()
        err32_lora.append((_logprobs(lora32, sequences) - truth).abs())
        err32_dense.append((_logprobs(base32, sequences) - truth).abs())
        print(
            f"w={w}: {truth.numel()} tokens, min log-prob {truth.min():.1f}; |error| vs the float64 dense merge, "
            f"max (mean): adapter fp64 {err64.max():.1e} ({err64.mean():.1e}), adapter fp32 "
            f"{err32_lora[-1].max():.1e} ({err32_lora[-1].mean():.1e}), dense fp32 {err32_dense[-1].max():.1e} "
            f"({err32_dense[-1].mean():.1e})"
        )
        assert float(err64.max()) <= 1e-5, f"w={w}: the adapter is not the dense merge"
        # the merge really moves the model: the base's log-probs are far from the merge's
        assert float((_logprobs(_base(lora_cfg, torch.float64), sequences) - truth).abs().max()) > 1e-2
    lora_all, dense_all = torch.cat(err32_lora), torch.cat(err32_dense)
    assert float(lora_all.mean()) <= 1e-5
    # float32's floor on these log-probs is the dense merge's own error; the adapter stays at that floor
    assert float(lora_all.max()) <= 3 * float(dense_all.max())
