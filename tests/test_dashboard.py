"""``dmo-search dashboard`` and the HTML report, in a real headless Chromium, on a real toy study.

One toy study (and a synthetic K = 4 study in the same DB), one dashboard process and one browser are
shared by the module. Screenshots go to ``test-artifacts/dashboard/`` (git-ignored).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from dmo_search.dashboard.html_report import write_html_report
from dmo_search.dashboard.storage import open_read_storage

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
_CLI = [sys.executable, "-m", "dmo_search.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _http(url: str, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=b"{}" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class _Proc:
    """``dmo-search dashboard`` in a subprocess; stderr goes to a file we poll for the URL."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._f = log.open("w")
        # Ctrl-C in a terminal: SIGINT to a process that has the default handler. A shell running the tests in
        # the background (`make test &`) starts them with SIGINT ignored, and children inherit that; restore it.
        self.p = subprocess.Popen(
            [*_CLI, "dashboard", *args],
            stdout=self._f,
            stderr=subprocess.STDOUT,
            env=_env(),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def url(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"optuna-dashboard: (http://\S+)/dashboard", self.log.read_text())
            if m:
                return m.group(1)
            if self.p.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"dashboard did not start:\n{self.log.read_text()}")

    def interrupt(self, timeout: float = 30) -> int:
        self.p.send_signal(signal.SIGINT)
        rc = self.p.wait(timeout)
        self._f.close()
        return rc

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._f.close()


@pytest.fixture(scope="module")
def studies(toy_world: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real toy study (6 trials, gp-simplex, subset 8) and a synthetic K = 4 study in the same DB."""
    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import load_config
    from dmo_search.objectives import make_objective
    from dmo_search.optimize import optimize_simplex
    from dmo_search.study import prepare_study, run_study
    from tests._study_helpers import small_config

    out = tmp_path_factory.mktemp("dash")
    cfg = load_config(
        small_config(toy_world.root, out, name="toydash", subset=8, n_trials=6, sampler="gp-simplex",
                     designs=["vertices", "centre"])
    )  # fmt: skip
    study = prepare_study(cfg)
    backend = HFBackend(cfg)
    try:
        run_study(study, cfg, backend, make_objective(cfg.objective), progress=False)
    finally:
        backend.close()
    url = cfg.storage_url()
    optimize_simplex(lambda w: -sum((x - 0.25) ** 2 for x in w), 4, 10, sampler="random", storage=url,
                     study_name="synth4")  # fmt: skip
    return {"url": url, "toy": "toydash", "k4": "synth4", "dir": out}


@pytest.fixture(scope="module")
def dashboard(studies: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``dmo-search dashboard URL --port 0`` running for the module."""
    proc = _Proc([studies["url"], "--port", "0"], studies["dir"] / "dashboard.log")
    try:
        yield {**studies, "http": proc.url(), "proc": proc}
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    """A headless Debian Chromium page (playwright never downloads a browser here)."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found; run scripts/install_system_deps.sh to install chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=_ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield pg
        finally:
            browser.close()
    print(f"\n[dashboard screenshots in {ARTIFACTS}]")


def _check_figures(pg: Any, expected: int) -> None:
    """``expected`` figures, each an <img> that decoded to a non-empty picture and is laid out."""
    figs = pg.locator("figure[data-view]")
    assert figs.count() == expected
    sizes = pg.eval_on_selector_all(
        "figure[data-view] img",
        "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight, e.getBoundingClientRect().width])",
    )
    assert len(sizes) == expected
    for complete, nw, nh, shown in sizes:
        assert complete and nw > 100 and nh > 100 and shown > 100, sizes


def test_optuna_dashboard_lists_and_shows_the_study(dashboard: dict[str, Any], page: Any) -> None:
    status, body = _http(dashboard["http"] + "/api/studies")
    assert status == 200 and b"toydash" in body and b"synth4" in body
    page.goto(dashboard["http"] + "/dashboard")
    page.get_by_text("toydash").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "optuna_dashboard_index.png"), full_page=True)
    page.get_by_text("toydash").first.click()
    page.wait_for_url(re.compile(r"/dashboard/studies/\d+"), timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # the history plot drew
    assert page.locator(".js-plotly-plot").count() >= 1
    assert "toydash" in page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "optuna_dashboard_study.png"), full_page=True)


def test_mixture_page_of_the_toy_study(dashboard: dict[str, Any], page: Any) -> None:
    page.goto(dashboard["http"] + "/dmo/")
    page.get_by_role("link", name="toydash").click()
    page.wait_for_url("**/dmo/toydash")
    assert page.inner_text("#study-name") == "toydash"
    summary = page.inner_text("#summary")
    assert "6 complete" in summary and "add, shift, sort" in summary and "recommended" in summary
    _check_figures(page, 5)
    assert "No promotions yet" in page.inner_text("figure[data-view=proxy-sft]")
    assert page.locator("meta[http-equiv=refresh]").count() == 1  # the live page reloads itself
    page.screenshot(path=str(ARTIFACTS / "mixtures_toy_k3.png"), full_page=True)


def test_mixture_page_of_a_k4_study_uses_parallel_coordinates(dashboard: dict[str, Any], page: Any) -> None:
    page.goto(dashboard["http"] + "/dmo/synth4")
    assert page.inner_text("#study-name") == "synth4"
    assert "parallel coordinates" in page.inner_text("figure[data-view=mixtures]")
    _check_figures(page, 5)
    page.screenshot(path=str(ARTIFACTS / "mixtures_synth_k4.png"), full_page=True)


def test_html_report_is_self_contained_and_renders(dashboard: dict[str, Any], page: Any, tmp_path: Path) -> None:
    out = tmp_path / "report" / "toy.html"
    write_html_report(dashboard["url"], dashboard["toy"], out)
    text = out.read_text()
    assert "<script" not in text and "<link" not in text
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing fetched from elsewhere
    requests: list[str] = []

    def seen(r: Any) -> None:
        requests.append(r.url)

    page.on("request", seen)
    try:
        page.goto(out.as_uri())
    finally:
        page.remove_listener("request", seen)
    assert page.inner_text("#study-name") == "toydash"
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    _check_figures(page, 5)
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    page.screenshot(path=str(ARTIFACTS / "report_toy.png"), full_page=True)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_endpoints_are_read_only(dashboard: dict[str, Any], method: str) -> None:
    url = dashboard["http"]
    for path in ("/dmo/toydash", "/dmo/", "/api/studies/1", "/api/studies/1/note", "/api/studies"):
        status, _ = _http(url + path, method)
        assert status == 405, (method, path, status)
    status, body = _http(url + "/api/studies")
    assert status == 200 and b"toydash" in body  # nothing was deleted or created
    assert _http(url + "/dmo/toydash", "HEAD") == (200, b"")
    status, body = _http(url + "/dmo/nope")
    assert status == 404 and b"toydash" in body  # names the studies that exist


def test_storage_refuses_writes_in_the_database(studies: dict[str, Any]) -> None:
    storage = open_read_storage(studies["url"])
    try:
        sid = storage.get_study_id_from_name("toydash")
        with pytest.raises(optuna.exceptions.StorageInternalError) as info:
            storage.set_study_user_attr(sid, "x", 1)
        chain, e = [], info.value.__cause__ or info.value.__context__
        while e is not None:
            chain.append(str(e))
            e = e.__cause__ or e.__context__
        assert re.search("readonly|read-only", " ".join(chain)), chain  # refused by SQLite itself
    finally:
        storage.engine.dispose()
    assert "x" not in optuna.load_study(study_name="toydash", storage=studies["url"]).user_attrs


def test_default_bind_is_loopback_and_public_needs_the_flag(dashboard: dict[str, Any], tmp_path: Path) -> None:
    assert dashboard["http"].startswith("http://127.0.0.1:")
    refused = subprocess.run([*_CLI, "dashboard", dashboard["url"], "--host", "0.0.0.0"],
                             capture_output=True, text=True, env=_env(), timeout=120)  # fmt: skip
    assert refused.returncode == 1 and "--allow-public" in refused.stderr
    proc = _Proc([dashboard["url"], "--host", "0.0.0.0", "--allow-public", "--port", "0"], tmp_path / "public.log")
    try:
        url = proc.url()
        assert "WARNING" in proc.log.read_text() and url.startswith("http://0.0.0.0:")
        status, _ = _http(url.replace("0.0.0.0", "127.0.0.1") + "/dmo/")
        assert status == 200
        assert proc.interrupt() == 0  # Ctrl-C stops cleanly
        assert "dashboard stopped" in proc.log.read_text() and "Traceback" not in proc.log.read_text()
    finally:
        proc.kill()


def test_proxy_vs_sft_once_promotions_exist(dashboard: dict[str, Any], page: Any) -> None:
    """Promotions written by the promotion store appear with their Spearman rho (on synth4 only, so the
    toy study keeps its "no promotions yet" page). The SFT values here are inputs, not trained runs."""
    from dmo_search.dashboard import views
    from dmo_search.promote.store import PromotionStore, load_promotions

    trials = optuna.load_study(study_name="synth4", storage=dashboard["url"]).trials[:4]
    store = PromotionStore(dashboard["url"], "synth4")
    try:
        for i, t in enumerate(trials):
            w = dict(zip(["w0", "w1", "w2", "w3"], t.user_attrs["weights"], strict=True))
            store.add(f"run{i}", "top" if i < 3 else "calibration", w, trial_number=t.number, proxy_value=t.value)
            if i < 3:
                store.update(f"run{i}", status="done", sft_value=0.5 + (t.value or 0.0) * (1 if i != 1 else -1))
    finally:
        store.close()
    expected = views.proxy_vs_sft(load_promotions(dashboard["url"], "synth4"))
    assert expected.n_promotions == 4 and len(expected.proxy) == 3 and expected.spearman is not None
    page.goto(dashboard["http"] + "/dmo/synth4")
    caption = page.inner_text("figure[data-view=proxy-sft] figcaption")
    assert f"4 promotion(s), 3 with an SFT score; Spearman rho {expected.spearman:.3f}" in caption
    _check_figures(page, 5)
    page.locator("figure[data-view=proxy-sft]").screenshot(path=str(ARTIFACTS / "proxy_vs_sft_synth4.png"))
