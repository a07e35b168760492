"""Helpers for study tests: small configs derived from the session's toy world."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml


def small_config(
    toy_root: Path,
    out_dir: Path,
    *,
    name: str = "t",
    subset: int = 16,
    n_trials: int = 4,
    sampler: str = "random",
    designs: list[Any] | None = None,
    **extra: Any,
) -> Path:
    """A copy of the toy world's config with a small subset and its own SQLite DB under ``out_dir``."""
    raw = yaml.safe_load((toy_root / "toy.yaml").read_text())

    def absolute(p: str) -> str:
        return str((toy_root / p).resolve())

    raw["base_model"] = absolute(raw["base_model"])
    for e in raw["experts"]:
        e["path"] = absolute(e["path"])
    raw["objective"]["validation"] = {d: absolute(p) for d, p in raw["objective"]["validation"].items()}
    raw["objective"]["subset_size"] = subset
    raw["study_name"] = name
    raw["search"] = {"sampler": sampler, "n_trials": n_trials, "seed": 0, "designs": designs or []}
    raw["storage"] = f"sqlite:///{out_dir / (name + '.db')}"
    raw.update(extra)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def db_states(db: Path) -> list[tuple[int, str]]:
    """(number, state) of every trial, read with plain sqlite3 (independent of optuna)."""
    with sqlite3.connect(db, timeout=30) as con:
        try:
            return sorted(con.execute("SELECT number, state FROM trials").fetchall())
        except sqlite3.OperationalError:  # the DB exists but optuna has not created its tables yet
            return []
