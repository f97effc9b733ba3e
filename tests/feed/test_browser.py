"""The bell and the feed in headless Chromium: a notification scheduled to
``inapp`` and delivered by a real Celery worker appears in an open page
without a reload; marking it read clears the badge."""

from __future__ import annotations

import pytest

from dispatcher.api import recipients, schedule_messages
from dispatcher.feed.models import Notification
from dispatcher.models import Dispatch
from tests.inbox.browser_steps import badge, find, finds, go, log_in, screenshot, wait

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_worker_delivered_notification_rings_the_bell_of_an_open_page(driver, live_server, users, workers,
                                                                          settings):
    settings.DISPATCHER_LIVE_POLL_SECONDS = 1
    workers("feed")
    log_in(driver, live_server, "ann", "/notifications/")
    assert badge(driver, "#feed-unread") == ""
    assert finds(driver, "#feed-empty")
    driver.execute_script("window.__sameDocument = 'no reload happened';")

    schedule_messages("Your export is ready\nDownload it from your account page.",
                      recipients("inapp", users.ann))
    schedule_messages("Not for ann", recipients("inapp", users.bob))

    # The worker delivers it; the open page's bell shows it, and the list gets it, with no reload.
    wait(driver, lambda d: badge(d, "#feed-unread") == "1", timeout=60)
    wait(driver, lambda d: finds(d, "#feed li"))
    assert driver.execute_script("return window.__sameDocument") == "no reload happened"
    [item] = finds(driver, "#feed li")
    assert "Your export is ready" in item.text and "Not for ann" not in find(driver, "#feed").text
    assert "unread" in item.get_attribute("class")
    assert Dispatch.objects.get(address=str(users.ann.pk)).status == "sent"
    screenshot(driver, "feed.png")

    # Marking it read clears the badge (no reload either).
    item.find_element("css selector", ".feed-mark-read button").click()
    wait(driver, lambda d: badge(d, "#feed-unread") == "")
    assert "unread" not in find(driver, "#feed li").get_attribute("class")
    assert driver.execute_script("return window.__sameDocument") == "no reload happened"
    assert Notification.objects.get(recipient=users.ann).read_at is not None

    # Any page's header has the bell, and it stays quiet now.
    go(driver, live_server, "/messages/inbox/")
    assert finds(driver, "#nav-bell") and badge(driver, "#feed-unread") == ""
