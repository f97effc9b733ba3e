"""The dashboard through Django's test client: access, content, bounded queries, retry."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch

from .conftest import PASSWORD

pytestmark = pytest.mark.django_db

URL = "/dispatcher/ops/"


def test_url_names():
    assert reverse("dispatcher:dashboard") == URL
    assert reverse("dispatcher:dashboard-retry") == URL + "retry/"
    assert reverse("dispatcher:metrics") == URL + "metrics"


def test_anonymous_and_non_staff_are_sent_to_the_login(client, users):
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(users.user)
    response = client.get(URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert "Dispatches by messenger" not in response.content.decode()


def test_staff_sees_counts_backlog_and_failures(staff_client, traffic):
    page = staff_client.get(URL).content.decode()
    flaky_row = re.search(r'<tr data-messenger="flaky">(.*?)</tr>', page, re.S).group(1)
    cells = re.findall(r'<td class="dd-num[^"]*">([^<]*)</td>', flaky_row)
    # pending processing sent error failed cancelled skipped | total | due | broker
    assert cells[:8] == ["0", "0", "3", "1", "1", "0", "0", "5"]
    smtp_row = re.search(r'<tr data-messenger="smtp">(.*?)</tr>', page, re.S).group(1)
    smtp_cells = re.findall(r'<td class="dd-num[^"]*">([^<]*)</td>', smtp_row)
    assert smtp_cells[0] == "3" and smtp_cells[8] == "2"  # 3 pending, 2 of them due
    assert 'id="summary-sent-hour">3<' in page
    assert 'id="summary-oldest">5m' in page
    # Recent failures: both with the reason of their last attempt.
    assert f'id="failure-{traffic.failed.pk}"' in page and f'id="failure-{traffic.error.pk}"' in page
    assert "scripted permanent failure" in page and "scripted temporary failure" in page
    assert "PermanentError" in page
    for dispatch in traffic.sent:
        assert f'id="failure-{dispatch.pk}"' not in page


def test_chart_data_is_per_minute_from_sql(staff_client, traffic):
    page = staff_client.get(URL).content.decode()
    import json

    data = json.loads(re.search(r'<script id="throughput-data" type="application/json">(.*?)</script>',
                                page, re.S).group(1))
    assert len(data["labels"]) == 60
    flaky = data["series"]["flaky"]
    assert sum(flaky) == 3
    assert flaky[-3] == 2 and flaky[-11] == 1  # 2 min ago and 10 min ago (the last slot is this minute)


def test_failures_filter_by_messenger(staff_client, traffic):
    page = staff_client.get(URL, {"messenger": "smtp"}).content.decode()
    assert f'id="failure-{traffic.failed.pk}"' not in page
    assert "No failed or erroring dispatch." in page


def test_query_count_does_not_grow_with_rows(staff_client, traffic, django_assert_max_num_queries):
    staff_client.get(URL)  # warm up (session, user)
    # 12, and 9 for receipts, skips, digests and fallbacks (dispatcher/dashboard/outcomes.py)
    with django_assert_max_num_queries(21) as small:
        staff_client.get(URL)
    many = [f"perm/{i}" for i in range(60)] + [f"ok/{i}" for i in range(60)]
    [(_, dispatches)] = schedule_messages("more", recipients("flaky", many))
    deliver_batch("flaky", [d.pk for d in dispatches])
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = staff_client.get(URL)
    assert response.content.decode().count('class="button dd-retry"') == 25  # the page is LIMITed


def test_retry_needs_post_with_csrf(users, traffic):
    client = Client(enforce_csrf_checks=True)
    client.force_login(users.admin)
    retry_url = reverse("dispatcher:dashboard-retry")
    assert client.get(retry_url, {"dispatch": traffic.failed.pk}).status_code == 405
    assert client.post(retry_url, {"dispatch": traffic.failed.pk}).status_code == 403  # no token
    traffic.failed.refresh_from_db()
    assert traffic.failed.status == "failed"

    page = client.get(URL).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(retry_url, {"dispatch": traffic.failed.pk, "csrfmiddlewaretoken": token})
    assert response.status_code == 302 and response["Location"] == URL
    traffic.failed.refresh_from_db()
    assert (traffic.failed.status, traffic.failed.attempts) == ("pending", 0)
    assert "1 dispatch queued again." in client.get(URL).content.decode()


def test_retry_skips_what_cannot_be_retried(staff_client, traffic):
    sent = traffic.sent[0]
    staff_client.post(reverse("dispatcher:dashboard-retry"),
                      {"dispatch": [traffic.error.pk, sent.pk], "messenger": "flaky"})
    traffic.error.refresh_from_db()
    sent.refresh_from_db()
    assert traffic.error.status == "pending" and sent.status == "sent"
    page = staff_client.get(URL).content.decode()
    assert "1 dispatch queued again. 1 skipped" in page


def test_retry_rejects_junk_and_non_staff(client, users, traffic):
    retry_url = reverse("dispatcher:dashboard-retry")
    client.force_login(users.user)
    response = client.post(retry_url, {"dispatch": traffic.failed.pk})
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(users.viewer)  # staff, but may only view dispatches
    assert client.post(retry_url, {"dispatch": traffic.failed.pk}).status_code == 403
    assert 'class="button dd-retry"' not in client.get(URL).content.decode()
    client.force_login(users.admin)
    client.post(retry_url, {"dispatch": ["1; DROP TABLE"]})
    traffic.failed.refresh_from_db()
    assert traffic.failed.status == "failed"
    assert Dispatch.objects.filter(status="failed").count() == 1


def test_broker_down_is_shown_not_fatal(staff_client, traffic, monkeypatch):
    from tests.services import free_port

    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    response = staff_client.get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="broker-state" title="' in page and ">unreachable<" in page
    assert "Broker queue depths unavailable" in page
    smtp_row = re.search(r'<tr data-messenger="smtp">(.*?)</tr>', page, re.S).group(1)
    assert '<td class="dd-num dd-broker">?</td>' in smtp_row


def test_admin_index_links_the_dashboard(staff_client):
    page = staff_client.get(reverse("admin:index")).content.decode()
    assert f'href="{URL}" id="dispatcher-dashboard-link"' in page
    assert "Dispatcher" in page and 'id="content-main"' in page  # the app list is still there


def test_login_then_dashboard(client, users):
    response = client.post("/admin/login/?next=" + URL,
                           {"username": "admin", "password": PASSWORD, "next": URL}, follow=True)
    assert response.redirect_chain[-1][0] == URL
    assert "Dispatches by messenger and status" in response.content.decode()
