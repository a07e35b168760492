"""The first use of BoTorch or optuna-dashboard in a process prints no torch.jit.script deprecation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_FIRST_USES = {
    "a study": "from dmo_search import optimize_simplex; optimize_simplex(lambda w: w[0], 3, 6, seed=0)",
    # `report` and `best` on a finished study: the recommendation is the process's first use of BoTorch.
    "a recommendation": (
        "import optuna; from dmo_search import simplex; from dmo_search.sampler import SimplexGPSampler\n"
        "study = optuna.create_study(direction='maximize', sampler=optuna.samplers.RandomSampler(seed=0))\n"
        "names = simplex.param_names(3)\n"
        "study.optimize(lambda t: simplex.params_to_weights({p: t.suggest_float(p, 0, 1) for p in names}, 3)[0], 6)\n"
        "print(SimplexGPSampler(3).recommend(study))"
    ),
    # `dmo-search dashboard`: optuna-dashboard uses torch.jit.script itself, and imports BoTorch.
    "the dashboard": (
        "import sys, optuna; from dmo_search.dashboard.server import make_dashboard_server\n"
        "url = 'sqlite:///' + sys.argv[1]; optuna.create_study(study_name='s', storage=url)\n"
        "make_dashboard_server(url, port=0).server.server_close()"
    ),
}


@pytest.mark.parametrize("first_use", sorted(_FIRST_USES))
def test_a_fresh_process_shows_no_torch_jit_deprecation(first_use: str, tmp_path: Path) -> None:
    """linear_operator (under BoTorch) and optuna-dashboard decorate functions with torch.jit.script,
    whose FutureWarning printed in the middle of a study's progress bar, at the top of ``report`` and
    when the dashboard started; other warnings still show (``-W default``)."""
    code = _FIRST_USES[first_use]
    argv = [sys.executable, "-W", "default", "-c", code, str(tmp_path / "study.db")]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "torch.jit.script" not in res.stderr
