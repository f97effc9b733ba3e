"""Broker queue depths, read from the real broker of the test profile (Redis or the file broker)."""

from __future__ import annotations

import pytest
from celery import current_app

from dispatcher.dashboard.broker import queue_depths
from dispatcher.publish import DELIVER_TASK, publish
from tests.services import free_port


def test_depth_counts_the_tasks_waiting_per_messenger(clean_broker):
    assert queue_depths(["flaky", "smtp"]).depths == {"flaky": 0, "smtp": 0}
    publish([("flaky", pk) for pk in range(1, 8)], batch_size=3)  # 3 tasks
    publish([("smtp", 1)])
    result = queue_depths(["flaky", "smtp", "mymessenger"])
    assert result.ok
    assert result.depths == {"flaky": 3, "smtp": 1, "mymessenger": 0}


@pytest.mark.redis_broker
def test_redis_priority_sub_queues_count_too(clean_broker):
    assert current_app.conf.broker_url.startswith("redis://")
    current_app.send_task(DELIVER_TASK, args=("flaky", [1]), queue="dispatch.flaky", priority=6)
    current_app.send_task(DELIVER_TASK, args=("flaky", [2]), queue="dispatch.flaky")
    import redis

    client = redis.Redis.from_url(current_app.conf.broker_url)
    assert client.llen("dispatch.flaky") == 1  # the other one is in a sibling list
    assert queue_depths(["flaky"]).depths == {"flaky": 2}


@pytest.mark.parametrize("scheme", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_unreachable_broker_is_reported_not_raised(monkeypatch, scheme):
    monkeypatch.setenv("CELERY_BROKER_URL", scheme.format(port=free_port()))
    result = queue_depths(["smtp"])
    assert not result.ok and result.depths == {}
    assert "refused" in result.error.lower() or "error" in result.error.lower()

