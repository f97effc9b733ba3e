"""The dashboard in a real browser: headless Chromium against pytest-django's live server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from . import browser as browser_support
from .browser import start_driver
from .conftest import PASSWORD, make_traffic

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 15  # seconds, the longest any single page step may take


@pytest.fixture(scope="module")
def browser() -> Iterator:
    yield from start_driver()


@pytest.fixture
def driver(browser) -> Iterator:
    browser.delete_all_cookies()
    yield browser
    browser.delete_all_cookies()


def wait(driver, condition):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # An element found on the page being replaced (after a click that posts a
    # form) goes stale under the condition: look again, as for one not there yet.
    return WebDriverWait(driver, WAIT, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def log_in(driver, live_server, username: str, next_path: str = "/dispatcher/ops/") -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{live_server.url}/admin/login/?next={next_path}")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(driver, lambda d: "/admin/login/" not in d.current_url
         or d.find_elements(By.CSS_SELECTOR, ".errornote"))


def chart_pixels(driver, rgb: tuple[int, int, int]) -> int:
    """How many pixels of the chart's canvas have the colour ``rgb`` (the first dataset's bars)."""
    return driver.execute_script(
        """
        const canvas = document.getElementById('throughput-chart');
        const ctx = canvas.getContext('2d');
        const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        const [r, g, b] = arguments[0];
        let n = 0;
        for (let i = 0; i < px.length; i += 4) {
          if (px[i + 3] > 200 && Math.abs(px[i] - r) < 8 && Math.abs(px[i + 1] - g) < 8
              && Math.abs(px[i + 2] - b) < 8) n++;
        }
        return n;
        """,
        list(rgb),
    )


def test_staff_dashboard_chart_and_retry(driver, live_server, users, clean_broker):
    from selenium.webdriver.common.by import By

    traffic = make_traffic()
    log_in(driver, live_server, "admin", "/admin/")
    # From the admin index, follow the link to the dashboard.
    driver.find_element(By.ID, "dispatcher-dashboard-link").click()
    wait(driver, lambda d: d.current_url.endswith("/dispatcher/ops/"))
    assert driver.find_element(By.CSS_SELECTOR, "#content h1").text == "Dispatcher dashboard"
    wait(driver, lambda d: d.execute_script(
        "return !!(window.dispatcherDashboard && window.dispatcherDashboard.throughput)"))

    # Chart.js made a chart with the SQL's data points: 3 sent by flaky in the last hour.
    datasets = driver.execute_script(
        "return window.dispatcherDashboard.throughput.data.datasets.map("
        "d => [d.label, d.data.reduce((a, b) => a + b, 0), d.data.length])"
    )
    assert datasets == [["flaky", 3, 60]]
    # ... and drew them: the canvas has pixels in the first dataset's colour (#417690).
    assert chart_pixels(driver, (0x41, 0x76, 0x90)) > 50

    # The counts table and queue depths are there.
    flaky = driver.find_element(By.CSS_SELECTOR, 'tr[data-messenger="flaky"]')
    cells = [c.text for c in flaky.find_elements(By.CSS_SELECTOR, "td")]
    assert cells[:8] == ["0", "0", "3", "1", "1", "0", "0", "5"]  # ..., cancelled, skipped, total
    # The second chart (receipts, skips, digests, fallbacks) is drawn too.
    outcomes = driver.execute_script(
        "return window.dispatcherDashboard.outcomes.data.datasets.map(d => [d.label, d.data.length])")
    assert outcomes == [[name, 60] for name in ("delivered", "bounced", "complained", "skipped", "digested",
                                                "fell back")]
    smtp = driver.find_element(By.CSS_SELECTOR, 'tr[data-messenger="smtp"]')
    assert smtp.find_element(By.CSS_SELECTOR, ".dd-due").text == "2"
    # schedule_messages published one deliver task (a batch) for the two due smtp
    # dispatches, and one for flaky's five; no worker runs, so they wait in the broker.
    assert smtp.find_element(By.CSS_SELECTOR, ".dd-broker").text == "1"
    assert flaky.find_element(By.CSS_SELECTOR, ".dd-broker").text == "1"
    assert driver.find_element(By.ID, "broker-state").text == "reachable"

    row = driver.find_element(By.ID, f"failure-{traffic.failed.pk}")
    assert "scripted permanent failure" in row.text
    settings.VAR_DIR.joinpath("screenshots").mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(settings.VAR_DIR / "screenshots" / "dashboard.png"))

    # Retry the failed dispatch: a POST with the page's CSRF token.
    row.find_element(By.CSS_SELECTOR, "button.dd-retry").click()
    wait(driver, lambda d: "queued again" in d.find_element(By.CSS_SELECTOR, "ul.messagelist").text)
    traffic.failed.refresh_from_db()
    assert (traffic.failed.status, traffic.failed.attempts) == ("pending", 0)
    assert not driver.find_elements(By.ID, f"failure-{traffic.failed.pk}")
    # retry_now published a task for it: the flaky queue holds one more.
    flaky = driver.find_element(By.CSS_SELECTOR, 'tr[data-messenger="flaky"]')
    assert flaky.find_element(By.CSS_SELECTOR, ".dd-broker").text == "2"
    driver.save_screenshot(str(settings.VAR_DIR / "screenshots" / "dashboard-after-retry.png"))


@pytest.mark.parametrize("username", ["user", None])
def test_dashboard_refused_to_non_staff(driver, live_server, users, username):
    from selenium.webdriver.common.by import By

    if username:
        log_in(driver, live_server, username, "/admin/")
    driver.get(f"{live_server.url}/dispatcher/ops/")
    wait(driver, lambda d: d.find_elements(By.ID, "login-form"))
    assert "/admin/login/" in driver.current_url
    assert not driver.find_elements(By.ID, "throughput-chart")


def test_empty_dashboard_renders_an_empty_chart(driver, live_server, users):
    from selenium.webdriver.common.by import By

    log_in(driver, live_server, "admin")
    wait(driver, lambda d: d.execute_script("return !!window.dispatcherDashboard"))
    assert driver.execute_script(
        "return window.dispatcherDashboard.throughput.data.datasets[0].data.every(v => v === 0)"
    )
    assert "Nothing was sent" in driver.find_element(By.ID, "content-main").text
    assert chart_pixels(driver, (0x41, 0x76, 0x90)) == 0


def test_a_missing_browser_skips_or_fails(monkeypatch, settings):
    monkeypatch.setattr(browser_support, "CHROMIUM", "/nonexistent/chromium")
    settings.REQUIRE_SERVICES = False
    with pytest.raises(pytest.skip.Exception, match=r"apt-get install -y chromium\)"):
        browser_support.require_browser()
    settings.REQUIRE_SERVICES = True
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_SERVICES=1 but the browser is missing"):
        browser_support.require_browser()
