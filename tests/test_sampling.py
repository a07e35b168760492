"""The sampler factory."""

from __future__ import annotations

import optuna
import pytest

from dmo_search.sampling import SAMPLER_NAMES, make_sampler


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_name_builds_a_sampler(name: str) -> None:
    assert isinstance(make_sampler(name, 3, seed=1), optuna.samplers.BaseSampler)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="gp-simplex, optuna-gp, tpe, random, grid"):
        make_sampler("bayes", 3)
