"""The stack page in a real headless browser: Debian's ``chromium`` and ``chromium-driver``, driven by selenium.

``.ci/run`` installs the browser and sets ``LEAKCHECK_BROWSER_TESTS=1``, so
there a missing browser fails these tests.  Elsewhere they run when the
browser is installed, and are skipped, saying why, when it is not.
"""

from __future__ import annotations

import base64
import os
import shutil
from typing import Any, Iterator, List

import helpers
import pytest
import test_server

from leakcheck import serve_stacks

server = test_server.server  # the fixtures: an endpoint, and threads parked until the test ends
parked = test_server.parked
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REQUIRED = os.environ.get("LEAKCHECK_BROWSER_TESTS") == "1"
TOKEN = "br0wser-t0ken-77a1"


def _missing() -> str:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    for path in (CHROMIUM, DRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is missing (Debian: apt-get install chromium chromium-driver)"
    return ""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = _missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"the browser tests are required here, but {missing}")
        pytest.skip(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> List[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def groups(driver: Any) -> List[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, "#groups .group"))


def visible(driver: Any) -> List[Any]:
    return [group for group in groups(driver) if "hidden" not in (group.get_attribute("class") or "")]


def test_the_page_loads_without_console_errors_and_counts_the_groups_right(
    browser: Any, server: Any, parked: helpers.ParkedThreads
) -> None:
    from selenium.webdriver.common.by import By

    gathered = helpers.Gathered(parked, 5, "browser-worker")
    try:
        browser.get(server.url)
    finally:
        gathered.release()
    assert console_errors(browser) == []
    counts = [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#counts .count")]
    assert any(text.endswith(" threads") and int(text.split()[0]) >= 6 for text in counts), counts
    first = groups(browser)[0]
    assert first.get_attribute("data-size") == "5"
    assert first.find_element(By.TAG_NAME, "h2").text == "5 threads with this stack"
    members = first.find_element(By.CSS_SELECTOR, ".members").text
    assert all(f"browser-worker-{number}" in members for number in range(5))


def test_the_filter_narrows_the_list(browser: Any, server: Any, parked: helpers.ParkedThreads) -> None:
    from selenium.webdriver.common.by import By

    parked.start(name="browser-follower")
    browser.get(server.url)
    everything = len(visible(browser))
    assert everything >= 2
    box = browser.find_element(By.ID, "filter")
    box.send_keys("browser-" + "follower")
    narrowed = visible(browser)
    assert len(narrowed) == 1 and "browser-follower" in narrowed[0].text
    assert browser.find_element(By.ID, "summary").text == f"1 of {everything} groups"
    box.clear()  # clear() sends no input event: the page hears of it as of any edit
    browser.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")
    assert len(visible(browser)) == everything


HOSTILE = "</script><script>document.title=1</script><img src=x onerror=document.title=2>&lt;"


def test_a_hostile_thread_name_shows_as_text(browser: Any, server: Any, parked: helpers.ParkedThreads) -> None:
    from selenium.webdriver.common.by import By

    parked.start(name=HOSTILE)
    browser.get(server.url)
    assert browser.title == "leakcheck stacks"
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert any(f"Thread '{HOSTILE}'" in group.text for group in groups(browser))  # the header, as text
    assert console_errors(browser) == []


def test_with_a_token_the_browser_sends_it_as_a_password_and_the_page_never_holds_it(browser: Any) -> None:
    with serve_stacks(token=TOKEN) as running:
        browser.execute_cdp_cmd("Network.enable", {})
        credentials = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {credentials}"}})
        try:
            browser.get(running.url)
            assert groups(browser)
            assert TOKEN not in browser.page_source
        finally:
            browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
