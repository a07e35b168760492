"""Session fixtures: one toy world per test session (built once, shared by every test that needs it)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dmo_search.quiet_imports import import_botorch
from tests._pg import pg_cluster  # noqa: F401  (session fixture: a temporary PostgreSQL cluster)

# Test modules import BoTorch at collection; importing it here first, as the package does, keeps
# linear_operator's torch.jit.script FutureWarning (no one can act on it) out of the warnings summary.
import_botorch()


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The toy world, built once per session; ``DMO_TOY_DIR`` reuses an already built one."""
    reuse = os.environ.get("DMO_TOY_DIR")
    if reuse and (Path(reuse) / "toy.yaml").is_file():
        root = Path(reuse).resolve()
        manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").is_file() else {}
        return SimpleNamespace(
            root=root,
            config_path=root / "toy.yaml",
            manifest=manifest,
            domains=manifest.get("domains", []),
            build_seconds=manifest.get("build_seconds"),
        )
    from dmo_search.toy import build_toy_world

    t0 = time.perf_counter()
    world = build_toy_world(tmp_path_factory.mktemp("toy-world"), seed=0)
    print(f"\n[toy world built in {time.perf_counter() - t0:.0f}s]")
    return world


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, where no CUDA GPU is visible; each has a CPU twin."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible); its CPU twin runs the same code on the CPU")
    for item in gpu_items:
        item.add_marker(skip)
