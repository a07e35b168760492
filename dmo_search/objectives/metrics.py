"""Answer normalisation and metrics for local validation sets."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

__all__ = ["exact_match", "normalize_answer"]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_SPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace (the usual 'normalised exact match')."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference answer, else 0.0."""
    pred = normalize_answer(prediction)
    return 1.0 if any(pred == normalize_answer(a) for a in answers) else 0.0
