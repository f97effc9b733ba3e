"""Outages of the broker and of PostgreSQL, made to happen for real.

The broker is a Redis server started by the test on its own port; PostgreSQL
is the server the suite runs on, restarted by the test (CI runs as root and
starts it, so it can restart it). Every test runs with the default timers
(lease, requeue delay): "resumes within seconds" must hold as shipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.db.utils import InterfaceError, OperationalError

from dispatcher.api import recipients, schedule_messages
from dispatcher.models import Dispatch, DispatchError
from dispatcher.smtp_sink import SinkHandler
from tests.services import SMTPServer, free_port, wait_for, worker_env
from tests.test_faults import RedisServer, manage

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def statuses() -> Counter:
    """Dispatch states, read through a connection that may have to be reopened."""
    for _ in range(50):
        try:
            return Counter(Dispatch.objects.values_list("status", flat=True))
        except (OperationalError, InterfaceError):
            connection.close()
            time.sleep(0.2)
    raise AssertionError("the database did not come back")


class SlowSink(SinkHandler):
    """A few milliseconds per mail, as a real server takes, so batches are in flight."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.004)
        return await super().handle_DATA(server, session, envelope)


# -- the broker ---------------------------------------------------------------------------
def test_requeue_sweep_with_the_broker_down_stops_fails_and_counts_true():
    schedule_messages("waiting", recipients("smtp", [f"r{i}@example.org" for i in range(200)]))
    Dispatch.objects.update(queued_at=None)  # as if their tasks were lost
    dead = f"redis://127.0.0.1:{free_port()}/0"
    env = {**worker_env(), "CELERY_BROKER_URL": dead}

    started = time.monotonic()
    swept = manage(env, "dispatcher_requeue_due")
    took = time.monotonic() - started
    assert swept.returncode != 0
    assert "broker is unreachable" in swept.stderr and "0 requeued before that" in swept.stderr
    assert "requeued 200" not in swept.stdout
    assert took < 60  # one pass, not a loop until the limit
    # Nothing is marked as queued: the next run picks them all again.
    assert Dispatch.objects.filter(queued_at__isnull=False).count() == 0

    task = manage(env, "shell", "-c",
                  "from tasks.sweeps import requeue_due; r = requeue_due.apply(); "
                  "print(r.state, type(r.result).__name__)")
    assert task.stdout.strip().splitlines()[-1].split() == ["FAILURE", "BrokerUnavailable"]

    broker = RedisServer()
    try:
        swept = manage({**env, "CELERY_BROKER_URL": broker.url}, "dispatcher_requeue_due")
        assert swept.returncode == 0, swept.stderr
        assert swept.stdout.strip() == "requeued 200 dispatches"
    finally:
        broker.kill()


@pytest.mark.redis_broker
def test_broker_restart_mid_batch_costs_no_duplicate(workers):
    """A batch in flight keeps going when the broker goes away (it is not
    cancelled: CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS is
    False), and what the restart lost comes back through the requeue sweep."""
    broker = RedisServer()
    sink = SMTPServer(SlowSink())
    try:
        env = worker_env(sink.port, CELERY_BROKER_URL=broker.url)
        scheduled = manage(env, "shell", "-c",
                           "from dispatcher.api import schedule_messages, recipients;"
                           "schedule_messages('through a broker restart', recipients('smtp', "
                           "[f'b{i}@example.org' for i in range(600)]))")
        assert scheduled.returncode == 0, scheduled.stderr
        workers("broker-restart", smtp_port=sink.port, CELERY_BROKER_URL=broker.url)
        wait_for(lambda: len(sink.messages) >= 100, 60, 0.05, "the first mails")
        broker.kill()
        time.sleep(1)
        broker.start()
        wait_for(lambda: not statuses()["processing"], 120, 0.3, "batches in flight to finish")
        swept = manage({**env, "DISPATCHER_REQUEUE_AFTER": "0"}, "dispatcher_requeue_due")
        assert swept.returncode == 0, swept.stderr
        wait_for(lambda: statuses() == {"sent": 600}, 120, 0.3, "all 600 sent")
        received = Counter(m["To"] for m in sink.messages)
        assert set(received) == {f"b{i}@example.org" for i in range(600)}
        assert sum(n - 1 for n in received.values()) == 0
    finally:
        broker.kill()
        sink.stop()


def test_celery_keeps_running_batches_when_the_broker_connection_drops():
    from config.celery import app

    assert settings.CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS is False
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is False


# -- PostgreSQL -----------------------------------------------------------------------------
def _restart_postgresql() -> None:
    """Restart the PostgreSQL server the suite runs on (as CI can, as root):
    whichever it is, found from its own data directory."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data_dir = cursor.fetchone()[0]
        cursor.execute("SHOW server_version_num")
        major = int(cursor.fetchone()[0]) // 10000
    pg_ctl = Path(f"/usr/lib/postgresql/{major}/bin/pg_ctl")
    if os.geteuid() != 0 or not pg_ctl.exists() or not shutil.which("runuser"):
        pytest.fail("restarting PostgreSQL needs root and pg_ctl (CI has both)")
    connection.close()
    # pg_ctl restart reuses the options the server was started with (postmaster.opts).
    # No pipes: the restarted server would hold them open, and the call never return.
    subprocess.run(["runuser", "-u", "postgres", "--", str(pg_ctl), "-D", data_dir, "restart",
                    "-m", "fast", "-w", "-t", "60"], check=True, timeout=120,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.postgresql
def test_postgresql_restart_mid_run_resumes_within_seconds_and_sends_nothing_twice(workers):
    if connection.vendor != "postgresql":
        pytest.fail("this test restarts PostgreSQL; run it on the services profile")
    sink = SMTPServer(SlowSink())
    total = 1500
    try:
        workers("pg-restart", smtp_port=sink.port, concurrency=2)  # default lease and requeue timers
        schedule_messages("through a database restart",
                          recipients("smtp", [f"p{i}@example.org" for i in range(total)]))
        wait_for(lambda: len(sink.messages) >= 150, 60, 0.02, "the first mails")
        _restart_postgresql()
        back = time.monotonic()
        # With the lease and requeue timers at their defaults (300 s), a stall
        # would last minutes; delivery must resume within seconds.
        wait_for(lambda: statuses() == {"sent": total}, 90, 0.5, f"all {total} sent after the restart")
        assert time.monotonic() - back < 90
        received = Counter(m["To"] for m in sink.messages)
        assert set(received) == {f"p{i}@example.org" for i in range(total)}
        assert sum(n - 1 for n in received.values()) == 0  # nothing sent twice
        # The truth about attempts: nobody died, no lease expired, nothing charged twice.
        assert not DispatchError.objects.filter(error_class="LeaseExpired").exists()
        assert set(Dispatch.objects.values_list("attempts", flat=True)) == {1}
    finally:
        sink.stop()
