"""A headless Chromium (Debian's, never a downloaded one) on the session stack's Prefect UI.

Each test gets the page helper ``ui``; a failing test leaves a screenshot, the page source and
the browser console under ``test-output/ui/failures/``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.paths import OUTPUT
from tests.support.prefect_ui import PrefectUI

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
UI_OUTPUT = OUTPUT / "ui"


@pytest.fixture(scope="session")
def chrome():
    """One headless Chromium for the session, driven through Debian's chromedriver."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: apt-get install chromium chromium-driver (make setup does)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    # No WebGL: without a GPU, Chromium draws the run page's live run graph (a WebGL canvas) in software,
    # measured at 1.27 cores for as long as a running run's page is open, against 0.07 without it, on a
    # 2-core machine where that run is what the test waits for. The graph area then shows no graph; every
    # other part of the page (states, task runs, artifacts, forms) is as a user sees it.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-3d-apis",
                "--window-size=1400,1000", "--lang=en-US"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER))
    shutil.rmtree(UI_OUTPUT, ignore_errors=True)  # screenshots of this session only
    UI_OUTPUT.mkdir(parents=True)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def ui(stack, chrome, request) -> PrefectUI:
    """The Prefect UI of the session stack; screenshots go to ``test-output/ui/``."""
    page = PrefectUI(chrome, stack.url(stack.prefect_port), UI_OUTPUT)
    request.node.prefect_ui = page
    if not getattr(chrome, "opsflow_logged_in", False):  # the browser keeps the login for the session
        page.login(stack.api_auth_string())
        chrome.opsflow_logged_in = True
    return page


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    page = getattr(item, "prefect_ui", None)
    if page is not None and report.when == "call" and report.failed:
        where = UI_OUTPUT / "failures" / item.name
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        try:
            page.driver.save_screenshot(str(where / "page.png"))
            (where / "page.html").write_text(page.driver.page_source)
            (where / "url.txt").write_text(page.driver.current_url + "\n")
            console = page.console + [entry["message"] for entry in page.driver.get_log("browser")]
            (where / "console.json").write_text(json.dumps(console, indent=1))
        except Exception as exc:  # noqa: BLE001 - the test's own failure is what matters
            (where / "capture-error.txt").write_text(repr(exc))
        report.sections.append(("prefect ui", f"screenshot and page source of the failure: {where}"))
    return report
