"""Promotion records for the proxy-vs-SFT view, read through the promotion module when it exists."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PromotionsUnavailable", "load_promotion_records"]


class PromotionsUnavailable(RuntimeError):
    """The promotion table exists but cannot be read; the message says why."""


def load_promotion_records(storage_url: str, study_name: str) -> list[Any]:
    """The study's promotions (``dmo_search.promote.store.load_promotions``), or ``[]`` when the
    promotion module is not installed or nothing was promoted yet.

    Raises:
        PromotionsUnavailable: the promotion module failed to read them.
    """
    try:
        store = importlib.import_module("dmo_search.promote.store")
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.startswith("dmo_search.promote"):
            return []
        raise
    try:
        return list(store.load_promotions(storage_url, study_name))
    except Exception as e:
        raise PromotionsUnavailable(f"{type(e).__name__}: {e}") from e
