"""Watching studies: optuna-dashboard plus mixture views (``dmo-search dashboard``) and the
self-contained HTML report (:func:`dmo_search.dashboard.html_report.write_html_report`).

Modules: ``storage`` (read-only DB access safe next to writers), ``data`` (a study as the views see
it), ``views`` (the views as data), ``plots`` (matplotlib figures), ``page`` (HTML), ``server`` (the
WSGI dispatcher), ``html_report``, ``promotions`` (proxy-vs-SFT input). Submodules load lazily.
"""

__all__: list[str] = []
