"""Steps the browser tests of the user-facing pages share: a Chromium per
module, logging in through the demo site's login page, waiting, screenshots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.operator.browser import start_driver

WAIT = 20  # seconds, the longest any single page step may take
PASSWORD = "pw"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    yield from start_driver()


@pytest.fixture
def driver(browser) -> Iterator:
    browser.delete_all_cookies()
    yield browser
    browser.delete_all_cookies()


def wait(driver, condition, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def find(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css)


def finds(driver, css: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def log_in(driver, live_server, username: str, next_path: str = "/messages/inbox/") -> None:
    driver.delete_all_cookies()
    driver.get(f"{live_server.url}/accounts/login/?next={next_path}")
    find(driver, "#id_username").send_keys(username)
    find(driver, "#id_password").send_keys(PASSWORD)
    find(driver, "#login-form button[type=submit]").click()
    wait(driver, lambda d: "/accounts/login/" not in d.current_url)
    assert find(driver, "#nav-username").text == username


def go(driver, live_server, path: str) -> None:
    driver.get(f"{live_server.url}{path}")


def badge(driver, css: str) -> str:
    """The badge's number as shown, or "" when it is hidden."""
    element = find(driver, css)
    return element.text if element.is_displayed() else ""


#: The window of the screenshots: the size of a laptop's browser, so the
#: pictures in the README (docs/images/, copied from a run) read at their size.
SCREENSHOT_SIZE = (1100, 760)


def screenshot(driver, name: str) -> Path:
    """Save the page as ``<DISPATCHER_TEST_VAR>/screenshots/<name>``, in a
    window of :data:`SCREENSHOT_SIZE` (the browser's own size is restored)."""
    folder = Path(settings.VAR_DIR) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    size = driver.get_window_size()
    driver.set_window_size(*SCREENSHOT_SIZE)
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    assert path.stat().st_size > 1000
    return path
