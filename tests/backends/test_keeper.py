"""One backend kept across jobs (:class:`~dmo_search.backends.keeper.KeptBackend`), on real hf backends."""

from __future__ import annotations

from typing import Any

import pytest

from dmo_search.backends import Backend
from dmo_search.backends.keeper import KeptBackend
from dmo_search.config import load_config

pytestmark = pytest.mark.slow


def test_in_place_when_it_applies_a_new_backend_otherwise(toy_world: Any) -> None:
    cfg = load_config(toy_world.config_path)
    seen: list[Backend] = []

    def in_place(b: Backend) -> bool:
        seen.append(b)
        return True

    def not_here(b: Backend) -> bool:
        return False

    def fails(b: Backend) -> bool:
        raise RuntimeError("the engine died")

    with KeptBackend() as kept:
        first = kept.get(cfg, in_place, "x")  # nothing running: started, in_place not asked
        assert (kept.starts, seen, kept.started_cfg) == (1, [], cfg)
        assert kept.get(cfg, in_place, "model loaded") is first and seen == [first]
        assert kept.last_load.startswith("model loaded in place in ")
        second = kept.get(cfg, not_here, "x")
        assert second is not first and first.model is None  # type: ignore[attr-defined]  # the old one closed
        assert kept.starts == 2 and kept.last_load.startswith("backend started in ")
        third = kept.get(cfg, fails, "x")
        assert third is not second and kept.starts == 3
        assert kept.last_load.startswith("in-place load failed (RuntimeError: the engine died); backend started in ")
    assert kept.backend is None and kept.started_cfg is None and third.model is None  # type: ignore[attr-defined]
