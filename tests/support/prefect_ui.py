"""What a user does in the Prefect UI, as Selenium steps: open a deployment, fill its run form,
follow the run, read its artifacts.

Selectors are the UI's own words (labels, button and tab texts, ARIA roles) plus the few
component classes of the Prefect design system that carry meaning (``schema-form-property``,
``state-badge``, ``artifact-card__title``). Every step waits explicitly; nothing sleeps.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from selenium.common.exceptions import (
    ElementClickInterceptedException,
    ElementNotInteractableException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from opsflow.core.prefect_api import api_client

# Vue re-renders form fields and toasts while we look at them: retry on these (a TimeoutException
# is an inner, shorter wait giving up; the outer wait goes on until its own deadline).
_TRANSIENT = (NoSuchElementException, StaleElementReferenceException, ElementClickInterceptedException,
              ElementNotInteractableException, TimeoutException)
FINAL_STATES = ("completed", "failed", "crashed", "cancelled")
_TYPE_BUTTONS = {bool: ("bool", "boolean"), int: ("int", "integer"), float: ("float", "number"),
                 str: ("str", "string"), list: ("list", "array"), dict: ("dict", "object")}


def _has_class(name: str) -> str:
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


def _text_is(text: str) -> str:
    return f"normalize-space()={_literal(text)}"


def _literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal (it has no escapes)."""
    if "'" not in text:
        return f"'{text}'"
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


class PrefectUI:
    """One browser on one Prefect server's UI."""

    def __init__(self, driver: WebDriver, base_url: str, output: Path):
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.output = output
        self.console: list[str] = []  # the browser console, as read so far

    # -- basics ---------------------------------------------------------------------------------

    def wait(self, seconds: float = 60) -> WebDriverWait:
        return WebDriverWait(self.driver, seconds, poll_frequency=0.25, ignored_exceptions=_TRANSIENT)

    def find(self, xpath: str, seconds: float = 60, within: WebElement | None = None) -> WebElement:
        """The first displayed element at ``xpath`` (waits for it)."""
        root = within or self.driver

        def displayed(_):
            return next((e for e in root.find_elements(By.XPATH, xpath) if e.is_displayed()), False)

        return self.wait(seconds).until(displayed, f"nothing displayed at {xpath} within {seconds}s")

    def click(self, xpath: str, seconds: float = 60) -> None:
        """Click the element at ``xpath`` once it is displayed and nothing covers it."""
        self.wait(seconds).until(lambda _: self.find(xpath, 1).click() or True, f"could not click {xpath}")

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def screenshot(self, name: str, full_page: bool = True) -> Path:
        """Save the page as ``<output>/<name>.png`` (the whole page's height when ``full_page``)."""
        self.output.mkdir(parents=True, exist_ok=True)
        path = self.output / f"{name}.png"
        size = self.driver.get_window_size()
        if full_page:
            # The UI scrolls inside its layout, not the document: grow the window to the tallest scroller.
            height = self.driver.execute_script(
                "return Math.max(...Array.from(document.querySelectorAll('body, body *'), e => e.scrollHeight))")
            self.driver.set_window_size(size["width"], min(max(height + 120, size["height"]), 4000))
        try:
            self.driver.save_screenshot(str(path))
        finally:
            if full_page:
                self.driver.set_window_size(size["width"], size["height"])
        return path

    def body_text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def login(self, auth_string: str) -> None:
        """Log in as a user of a server with ``PREFECT_SERVER_API_AUTH_STRING`` does: the UI shows its login
        form (one password field, ``admin:pass``) until the auth string is entered. A server that does not
        ask for it fails this step: the session's server must run with auth on."""
        self.open("/dashboard")
        field = self.find("//form//input[@type='password']", 60)
        assert "/login" in self.driver.current_url, f"no login page at {self.driver.current_url}"
        field.send_keys(auth_string)
        self.click(f"//form//button[{_text_is('Login')}]")
        self.wait(60).until(lambda d: "/login" not in d.current_url, "the login was not accepted")
        self.find(f"//*[{_text_is('Dashboard')}]", 60)

    # -- deployments and their run form ---------------------------------------------------------

    def open_deployment(self, flow: str, deployment: str) -> str:
        """Open the page of ``flow/deployment``; returns its id."""
        with api_client() as api:
            resp = api.get(f"deployments/name/{flow}/{deployment}")
        resp.raise_for_status()
        deployment_id = resp.json()["id"]
        self.open(f"/deployments/deployment/{deployment_id}")
        self.find(f"//a[{_text_is(flow)}]")  # the header's link to the flow: the page has loaded
        return deployment_id

    def open_custom_run(self) -> None:
        """On a deployment's page: Run → Custom run, then wait for the parameter form."""
        self.click(f"//button[{_text_is('Run')}]")
        self.click(f"//*[{_text_is('Custom run')}]")
        self.find(f"//button[{_text_is('Submit')}]")

    def form_field(self, name: str) -> WebElement:
        """The form property labelled ``name`` (``name (Optional)`` for parameters with a default)."""
        names = f"{_text_is(name)} or {_text_is(name + ' (Optional)')}"
        label = f"span[{_has_class('schema-form-property__label')}][{names}]"
        return self.find(f"//div[{_has_class('schema-form-property')}][.//{label}]", 20)

    def field_description(self, name: str) -> str:
        return self.form_field(name).find_element(
            By.XPATH, f".//*[{_has_class('schema-form-property__description')}]").text

    def fill(self, name: str, value) -> None:
        """Set parameter ``name`` to ``value`` as a user would: pick the type of an optional
        (anyOf) parameter, then type into its input or flip its switch; checks what the form holds."""
        buttons = self.form_field(name).find_elements(By.XPATH, f".//div[{_has_class('p-button-group')}]/button")
        if buttons:
            wanted = _TYPE_BUTTONS[type(value)]
            choice = next((b for b in buttons if b.text.strip() in wanted), None)
            assert choice is not None, f"{name}: no type button among {[b.text for b in buttons]} for {value!r}"
            if choice.get_attribute("aria-selected") != "true":
                choice.click()
        if isinstance(value, bool):
            switch = self.find(".//label[@role='switch']", 10, within=self.form_field(name))
            if (switch.get_attribute("aria-checked") == "true") != value:
                switch.click()
            self.wait(10).until(lambda _: self.find(".//label[@role='switch']", 1, within=self.form_field(name))
                                .get_attribute("aria-checked") == str(value).lower(), f"{name} did not switch")
            return
        text = str(value)

        def typed(_) -> bool:
            control = self.find(".//textarea | .//input[not(@type='checkbox')]", 1, within=self.form_field(name))
            if control.get_attribute("value") != text:
                control.clear()
                control.send_keys(text)
            return control.get_attribute("value") == text

        self.wait(20).until(typed, f"could not type {text!r} into {name}")

    def submit_run(self, attempts: int = 3) -> str:
        """Submit the run form, follow the toast's "View run"; returns the new flow run's id.

        The server answers 503 to errors it deems retryable (SQLite busy on a loaded machine, for
        one); Prefect's Python client retries those by itself, the UI shows "Oops. Something went
        wrong" and creates nothing. Then, like a user, we press Submit again. Any other error fails.
        """
        form_url = self.driver.current_url
        deployment = re.search(r"/deployments/deployment/([0-9a-f-]{36})", form_url)
        before = self._run_ids(deployment.group(1)) if deployment else set()
        for attempt in range(1, attempts + 1):
            self.click(f"//button[{_text_is('Submit')}]")
            try:
                view = self.wait(60).until(lambda _: self._view_run_button() or self._create_failed())
            except TimeoutException as exc:
                raise AssertionError(f"no 'scheduled to start' toast after Submit; browser console: "
                                     f"{self.console[-5:]}") from exc
            if view != "busy":
                break
            assert attempt < attempts, f"the server stayed busy for {attempts} submits: {self.console[-5:]}"
        # The UI shows the toast, then navigates back to the deployment's page: a click on "View
        # run" before that navigation is done is overridden by it. So wait for the deployment page,
        # then click (again, while the toast is still there and the run's page has not opened).
        self.wait(30).until(lambda d: d.current_url != form_url, "Submit did not leave the run form")

        def run_page_open(d) -> bool:
            if "/runs/flow-run/" in d.current_url:
                return True
            button = self._view_run_button()
            if not button and deployment:
                # On a loaded machine the toast can go before it is clicked: then, as a user would, open the
                # new run from the deployment's Runs tab (the one run this Submit created).
                new = self._run_ids(deployment.group(1)) - before
                assert len(new) <= 1, f"one Submit created {len(new)} runs"
                if new:
                    self.open(f"/runs/flow-run/{new.pop()}")
                return "/runs/flow-run/" in d.current_url
            assert button, f"the toast went away before its 'View run' opened the run (at {d.current_url})"
            # The toast slides in and out: a native click can land while it moves (Chromium then
            # reports it intercepted), so the button is clicked through the DOM.
            d.execute_script("arguments[0].click()", button)
            return "/runs/flow-run/" in d.current_url

        WebDriverWait(self.driver, 30, poll_frequency=1, ignored_exceptions=_TRANSIENT).until(
            run_page_open, "View run did not open the run")
        return re.search(r"/runs/flow-run/([0-9a-f-]{36})", self.driver.current_url).group(1)

    @staticmethod
    def _run_ids(deployment_id: str) -> set[str]:
        """The ids of the deployment's flow runs, newest 200."""
        with api_client() as api:
            resp = api.post("flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}, "limit": 200,
                                                      "sort": "EXPECTED_START_TIME_DESC"})
        resp.raise_for_status()
        return {run["id"] for run in resp.json()}

    def _view_run_button(self) -> WebElement | bool:
        buttons = self.driver.find_elements(By.XPATH, f"//button[{_text_is('View run')}]")
        return next((b for b in buttons if b.is_displayed()), False)

    def _create_failed(self) -> str | bool:
        """``"busy"`` after a 503 from the server's create_flow_run; fails on any other error there."""
        messages = [entry["message"] for entry in self.driver.get_log("browser")]
        self.console += messages
        failed = [m for m in messages if "/create_flow_run" in m]
        if failed and all("503" in m for m in failed):
            return "busy"
        assert not failed, f"the UI could not create the run: {failed}"
        return False

    # -- a flow run's page ----------------------------------------------------------------------

    def run_state(self) -> str:
        """The state in the run page's header, e.g. ``Running``, ``Paused``, ``Completed``."""
        return self.find(f"//*[{_has_class('page-heading-flow-run')}]//*[{_has_class('state-badge')}]", 30).text.strip()

    def run_name(self) -> str:
        return self.find(f"//nav[{_has_class('p-bread-crumbs')}]/div[last()]", 30).text.strip()

    def wait_for_state(self, *states: str, seconds: float = 300) -> str:
        """Wait on the run page until its header shows one of ``states`` (default: any final state)."""
        wanted = [s.lower() for s in states] or list(FINAL_STATES)
        badges = " or ".join(_has_class(f"state--{s}") for s in wanted)
        xpath = f"//*[{_has_class('page-heading-flow-run')}]//*[{_has_class('state-badge')}][{badges}]"
        # The page follows the run by polling the server; on a loaded machine it was seen to stay on
        # "Running" minutes after the run had ended. A user then reloads the page: so do we, as soon as the
        # server has the state (asked every 2 s), and every 20 s anyway.
        run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", self.driver.current_url)
        deadline = time.monotonic() + seconds
        loaded = time.monotonic()
        while True:
            try:
                self.wait(min(2.0, max(0.5, deadline - time.monotonic()))).until(
                    lambda d: d.find_elements(By.XPATH, xpath))
                return self.run_state()
            except TimeoutException:
                if time.monotonic() >= deadline:
                    raise TimeoutException(f"the run did not reach {wanted} within {seconds}s "
                                           f"(it shows {self.run_state()!r})") from None
                stale = time.monotonic() - loaded > 20 or (run_id and self._server_state(run_id.group(1)) in wanted)
                if stale and time.monotonic() - loaded > 3:
                    self.driver.refresh()
                    loaded = time.monotonic()

    @staticmethod
    def _server_state(run_id: str) -> str | None:
        """The run's state type as the server has it (lower case), or None when it cannot be read now."""
        try:
            with api_client() as api:
                answer = api.get(f"flow_runs/{run_id}")
                return (answer.json().get("state") or {}).get("type", "").lower() if answer.is_success else None
        except Exception:  # noqa: BLE001 - the page is what the test reads; this only decides when to reload it
            return None

    def resume_run(self) -> None:
        """A paused run's header: Resume, then confirm in the "Resume Flow Run" dialog."""
        self.click(f"//*[{_has_class('page-heading-flow-run')}]//button[{_text_is('Resume')}]")
        dialog = f"//*[{_has_class('p-modal__card')}][.//*[{_text_is('Resume Flow Run')}]]"
        self.click(f"{dialog}//button[{_text_is('Submit')}]")
        self.wait(30).until(lambda d: not [e for e in d.find_elements(By.XPATH, dialog) if e.is_displayed()],
                            "the resume dialog did not close")

    def open_tab(self, name: str) -> None:
        tab = f"//li[{_has_class('p-tab')}][{_text_is(name)}]"
        self.click(tab)
        self.find(f"{tab}[{_has_class('p-tab__active')}]", 30)

    def task_run_names(self) -> list[str]:
        """Task Runs tab: the names of the run's task runs as listed."""
        self.open_tab("Task Runs")
        links = "//a[contains(@href, '/runs/task-run/')]"
        self.find(links, 30)
        return [a.text.strip() for a in self.driver.find_elements(By.XPATH, links)]

    def open_task_run(self, name: str) -> None:
        """Task Runs tab → the task run called ``name``; waits for its page."""
        self.open_tab("Task Runs")
        self.click(f"//a[contains(@href, '/runs/task-run/')][{_text_is(name)}]")
        self.wait(30).until(lambda d: "/runs/task-run/" in d.current_url, f"task run {name} did not open")
        # The URL changes before the page does: wait for the task run's own heading.
        self.find(f"//nav[{_has_class('p-bread-crumbs')}]/div[last()][{_text_is(name)}]", 30)

    def open_artifact(self, key: str, prefix: bool = False) -> WebElement:
        """Artifacts tab → the card of ``key`` (the first whose key starts with it, with ``prefix``);
        returns the rendered artifact on its own page."""
        self.open_tab("Artifacts")
        title = f"starts-with(normalize-space(), {_literal(key)})" if prefix else _text_is(key)
        self.click(f"//a[.//*[{_has_class('artifact-card__title')}][{title}]]")
        self.wait(30).until(lambda d: "/artifacts/artifact/" in d.current_url, f"artifact {key} did not open")
        return self.find(f"//article[{_has_class('artifact-data-markdown')}]", 30)

    def scroll_tables_right(self, within: WebElement) -> None:
        """Scroll wide tables to their last column (a screenshot then shows what is on the right)."""
        self.driver.execute_script(
            "for (const t of arguments[0].querySelectorAll('table')) {"
            "  for (let e = t; e && e !== arguments[0]; e = e.parentElement) e.scrollLeft = e.scrollWidth; }",
            within)
