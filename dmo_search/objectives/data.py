"""Local validation sets (JSONL of ``{"prompt": str, "answers": [str, ...]}``) and fixed subsets."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Example", "ValidationSet", "load_jsonl", "nested_subset", "select_subset"]


class DataError(ValueError):
    """A validation file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One validation example."""

    prompt: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class ValidationSet:
    """A domain's validation file, its fixed subset and the file's hash."""

    domain: str
    path: Path
    sha256: str
    n_total: int
    indices: tuple[int, ...]
    examples: tuple[Example, ...]

    def record(self) -> dict[str, object]:
        """What the study stores so a resumed study can check it scores the same examples."""
        return {"path": str(self.path), "sha256": self.sha256, "n_total": self.n_total, "indices": list(self.indices)}


def load_jsonl(path: Path) -> tuple[list[Example], str]:
    """Read a JSONL validation file; returns the examples and the file's SHA-256.

    Raises:
        DataError: missing file, bad JSON, or a line without ``prompt`` / ``answers``.
    """
    if not path.is_file():
        raise DataError(f"validation file {path} does not exist; fix objective.validation")
    raw = path.read_bytes()
    out: list[Example] = []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg}); fix or remove that line") from None
        prompt = row.get("prompt") if isinstance(row, dict) else None
        answers = row.get("answers") if isinstance(row, dict) else None
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(prompt, str) or not isinstance(answers, list) or not answers:
            raise DataError(
                f'{path}:{n}: each line needs "prompt" (a string) and "answers" (a non-empty list of strings)'
            )
        out.append(Example(prompt, tuple(str(a) for a in answers)))
    if not out:
        raise DataError(f"validation file {path} holds no examples")
    return out, hashlib.sha256(raw).hexdigest()


def select_subset(n_total: int, size: int | None, *, seed: int, domain: str) -> list[int]:
    """A seeded random subset of ``size`` indices out of ``n_total`` (sorted; all when size is None).

    The draw depends on ``(seed, domain)`` only, so it is fixed for a study and differs per domain.
    """
    if size is None or size >= n_total:
        return list(range(n_total))
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
    return sorted(int(i) for i in rng.choice(n_total, size=size, replace=False))


def nested_subset(indices: Sequence[int], n: int | None, *, seed: int, domain: str) -> list[int]:
    """A seeded random ``n`` of ``indices`` (sorted; all when ``n`` is None or too large), for multi-fidelity.

    The draw is one fixed permutation per ``(seed, domain)`` cut at ``n``, so a smaller ``n`` is a subset
    of a larger one.
    """
    if n is None or n >= len(indices):
        return list(indices)
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode()), 1])
    return sorted(int(indices[p]) for p in rng.permutation(len(indices))[:n])


def load_validation_set(domain: str, path: Path, size: int | None, seed: int) -> ValidationSet:
    """Load ``path`` and fix its subset for ``domain``."""
    examples, digest = load_jsonl(path)
    idx = select_subset(len(examples), size, seed=seed, domain=domain)
    return ValidationSet(domain, path, digest, len(examples), tuple(idx), tuple(examples[i] for i in idx))
