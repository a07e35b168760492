"""Promotion: real mixture SFT for a study's best candidates, scored the way the proxy was.

Modules, one concern each: :mod:`~dmo_search.promote.config` (the ``promotion:`` config section),
:mod:`~dmo_search.promote.select` (which mixtures), :mod:`~dmo_search.promote.data` (mixture SFT data),
:mod:`~dmo_search.promote.train` (the shared training loop), :mod:`~dmo_search.promote.sft` (a LoRA SFT run
or an external command), :mod:`~dmo_search.promote.score` (scoring a trained model),
:mod:`~dmo_search.promote.store` (the ``dmo_promotions`` table), :mod:`~dmo_search.promote.run` (the
resumable promotion), :mod:`~dmo_search.promote.stats` (report statistics) and
:mod:`~dmo_search.promote.plot` (the scatter plot). Heavy modules (torch) load only when imported.
"""

from __future__ import annotations

__all__: list[str] = []
