"""The Prometheus endpoint: what it exposes, computed from the database, and who may read it."""

from __future__ import annotations

import pytest
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.publish import publish
from tests.services import free_port

pytestmark = pytest.mark.django_db

URL = "/dispatcher/ops/metrics"
TOKEN = "metrics-token-for-tests-0123456789"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_metrics_from_the_database(staff_client, traffic):
    response = staff_client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(response.content.decode())

    assert value(found, "dispatcher_dispatches", messenger="flaky", status="sent") == 3
    assert value(found, "dispatcher_dispatches", messenger="flaky", status="error") == 1
    assert value(found, "dispatcher_dispatches", messenger="flaky", status="failed") == 1
    assert value(found, "dispatcher_dispatches", messenger="smtp", status="pending") == 3
    assert value(found, "dispatcher_dispatches", messenger="smtp", status="sent") == 0
    assert value(found, "dispatcher_dispatches_due", messenger="smtp") == 2
    assert value(found, "dispatcher_dispatches_due", messenger="flaky") == 0  # the error waits for backoff
    assert 299 <= value(found, "dispatcher_oldest_due_pending_seconds") < 400

    # Retries and final failures: one DispatchError row each.
    assert value(found, "dispatcher_dispatch_errors", messenger="flaky", permanent="false") == 1
    assert value(found, "dispatcher_dispatch_errors", messenger="flaky", permanent="true") == 1

    # Every sent dispatch took exactly 60 s from its message's creation.
    bucket = "dispatcher_send_latency_seconds_bucket"
    assert value(found, bucket, messenger="flaky", le="15.0") == 0
    assert value(found, bucket, messenger="flaky", le="60.0") == 3
    assert value(found, bucket, messenger="flaky", le="+Inf") == 3
    assert value(found, "dispatcher_send_latency_seconds_gcount", messenger="flaky") == 3
    assert value(found, "dispatcher_send_latency_seconds_gsum", messenger="flaky") == pytest.approx(180)
    assert ("dispatcher_send_latency_seconds_bucket", frozenset({("messenger", "smtp"), ("le", "+Inf")})) \
        not in found  # nothing sent through smtp

    assert value(found, "dispatcher_broker_up") == 1
    assert value(found, "dispatcher_queue_depth", messenger="smtp", queue="dispatch.smtp") == 0


def test_openmetrics_when_asked(staff_client, traffic):
    accept = "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"
    response = staff_client.get(URL, HTTP_ACCEPT=accept)
    assert response["Content-Type"].startswith("application/openmetrics-text")
    text = response.content.decode()
    assert "# TYPE dispatcher_send_latency_seconds gaugehistogram" in text
    assert 'dispatcher_send_latency_seconds_gcount{messenger="flaky"} 3' in text
    assert text.rstrip().endswith("# EOF")


def test_latency_window_leaves_out_older_sends(staff_client, traffic, settings):
    settings.DISPATCHER_METRICS_LATENCY_WINDOW = 5 * 60  # the send 10 minutes ago is outside
    found = samples(staff_client.get(URL).content.decode())
    assert value(found, "dispatcher_send_latency_seconds_bucket", messenger="flaky", le="+Inf") == 2


def test_queue_depth_from_the_broker(staff_client, db, clean_broker):
    publish([("flaky", pk) for pk in range(1, 6)], batch_size=2)  # 3 deliver tasks
    found = samples(staff_client.get(URL).content.decode())
    assert value(found, "dispatcher_queue_depth", messenger="flaky", queue="dispatch.flaky") == 3
    assert value(found, "dispatcher_queue_depth", messenger="smtp", queue="dispatch.smtp") == 0


def test_broker_down_is_a_metric_not_an_error(staff_client, db, monkeypatch):
    # Celery reads CELERY_BROKER_URL from the environment before its settings.
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    response = staff_client.get(URL)
    assert response.status_code == 200
    found = samples(response.content.decode())
    assert value(found, "dispatcher_broker_up") == 0
    assert not [k for k in found if k[0] == "dispatcher_queue_depth"]
    assert value(found, "dispatcher_dispatches", messenger="smtp", status="pending") == 0


def test_scrape_query_count_does_not_grow(staff_client, traffic, django_assert_max_num_queries):
    staff_client.get(URL)
    with django_assert_max_num_queries(20) as few:
        staff_client.get(URL)
    many = [f"ok/{i}" for i in range(50)] + [f"temp/{i}" for i in range(50)]
    [(_, dispatches)] = schedule_messages("more", recipients("flaky", many))
    deliver_batch("flaky", [d.pk for d in dispatches])
    with django_assert_max_num_queries(len(few.captured_queries)):
        found = samples(staff_client.get(URL).content.decode())
    assert value(found, "dispatcher_dispatches", messenger="flaky", status="sent") == 53


def test_anonymous_gets_401(client, db):
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"dispatcher_dispatches" not in response.content


def test_non_staff_session_gets_403(client, users):
    client.force_login(users.user)
    response = client.get(URL)
    assert response.status_code == 403 and b"dispatcher_dispatches" not in response.content


def test_bearer_token_from_the_environment(client, db, monkeypatch):
    monkeypatch.setenv("DISPATCHER_METRICS_TOKEN", TOKEN)
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200 and b"dispatcher_dispatches" in response.content
    assert TOKEN.encode() not in response.content
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 403
    assert client.get(URL, HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.post(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_bearer_token_from_settings_wins(client, db, monkeypatch, settings):
    monkeypatch.setenv("DISPATCHER_METRICS_TOKEN", "from-the-environment")
    settings.DISPATCHER_METRICS_TOKEN = TOKEN
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer from-the-environment").status_code == 403


def test_no_token_configured_refuses_every_bearer(client, db, monkeypatch):
    monkeypatch.delenv("DISPATCHER_METRICS_TOKEN", raising=False)
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer ").status_code == 403
    assert client.get(URL, HTTP_AUTHORIZATION="Bearer anything").status_code == 403


def test_url_name():
    assert reverse("dispatcher:metrics") == URL
