"""``report --html``: the mixture views of one study as ONE self-contained HTML file."""

from __future__ import annotations

from pathlib import Path

from dmo_search.dashboard.data import load_study_data
from dmo_search.dashboard.page import study_page, study_panels
from dmo_search.dashboard.promotions import PromotionsUnavailable, load_promotion_records
from dmo_search.dashboard.storage import open_read_storage

__all__ = ["render_html_report", "write_html_report"]


def render_html_report(storage_url: str, study_name: str) -> str:
    """The report's HTML text (figures embedded as SVG data URIs; no external file, script or style).

    Raises:
        UnknownStudyError: no such study in the DB.
        DashboardStorageError: the DB cannot be opened.
    """
    storage = open_read_storage(storage_url)
    try:
        data = load_study_data(storage, study_name)
        error = None
        try:
            promotions = load_promotion_records(storage_url, study_name)
        except PromotionsUnavailable as e:
            promotions, error = [], str(e)
        return study_page(data, study_panels(data, promotions, error), live=False)
    finally:
        storage.engine.dispose()


def write_html_report(storage_url: str, study_name: str, path: Path) -> None:
    """Write the study's report to ``path`` (parent folders are created).

    Raises:
        UnknownStudyError: no such study in the DB.
        DashboardStorageError: the DB cannot be opened.
    """
    text = render_html_report(storage_url, study_name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
