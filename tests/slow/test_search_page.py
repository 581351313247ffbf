"""The search page in a real headless Chromium (Debian's package, driven by Playwright; browser downloads fail
here, so the system browser is used): load it, search a test collection, see the hits and their breakdowns."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3search.server.app import create_app
from m3search.settings import get_settings
from tests.http import DOCS
from tests.live import live_server
from tests.references import import_or_skip

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What the machine notes say Chromium needs on this closed network (no background connections, no sandbox as root).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_search_page_shows_ranked_hits_with_breakdowns(fake_loader: Callable[..., Any], tmp_path: Path) -> None:
    sync_api = import_or_skip("playwright.sync_api", "playwright (dev) is not installed")
    app = create_app(get_settings(api_keys=["page-key"]), model="hash", loader=fake_loader, db=tmp_path / "db.sqlite3")
    auth = {"Authorization": "Bearer page-key"}
    with live_server(app) as url:
        with httpx.Client(base_url=url, headers=auth) as http:
            http.post("/api/v1/embedding-configs", json={"id": "fake", "model": "hash"}).raise_for_status()
            http.post("/api/v1/embedding-sets", json={"collection": "kb", "embedding_config_id": "fake"}
                      ).raise_for_status()
            http.post("/api/v1/collections/kb/documents", json={"documents": DOCS}).raise_for_status()
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(url + "/")
                page.wait_for_selector("#status.error")  # no key yet: the API's 401 message is shown
                assert "API key" in page.inner_text("#status")
                page.click("summary")
                page.fill("#key", "page-key")
                page.dispatch_event("#key", "change")
                page.wait_for_selector("#collection option[value='kb']", state="attached")
                page.select_option("#strategy", "hybrid")
                page.fill("#q", "laminar wing flow")
                page.click("#go")
                page.wait_for_selector(".hit")
                hits = page.query_selector_all(".hit")
                assert len(hits) == 3
                assert hits[0].inner_text().startswith("1. wing")
                retrievers = [row.inner_text().split("\t")[0] for row in hits[0].query_selector_all("tr.part")]
                assert retrievers == ["dense", "sparse"]
                assert "hybrid: dense + sparse" in page.inner_text("#status")
                page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
                page.select_option("#strategy", "colbert")  # the collection has no ColBERT vectors
                page.click("#go")
                page.wait_for_selector("#status.error")
                assert "needs colbert vectors" in page.inner_text("#status")
                assert page.query_selector_all(".hit") == []
            finally:
                browser.close()
    assert (tmp_path / "search-page.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_api_docs_render_offline(fake_loader: Callable[..., Any], tmp_path: Path) -> None:
    """/docs is Swagger UI from local files (this machine has no route to a CDN): it renders every operation."""
    sync_api = import_or_skip("playwright.sync_api", "playwright (dev) is not installed")
    app = create_app(get_settings(), model="hash", loader=fake_loader, db=tmp_path / "db.sqlite3")
    with live_server(app) as url, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url + "/docs")
            page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
            assert "m3search" in page.inner_text(".swagger-ui .info .title")
            operations = page.query_selector_all(".opblock-summary-path")
            assert "/v1/embeddings" in {op.inner_text().strip() for op in operations}
        finally:
            browser.close()
