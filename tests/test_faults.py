"""Fault tests: real worker processes, a real broker, real SMTP servers.

Each fault is made to happen for real (SIGKILL, a Redis restart, SMTP
replies, a server that is down) and the sweeps, which beat runs in
production, are called here directly so the tests need not wait for beat.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter

import pytest
from aiosmtpd.smtp import SMTP as SMTPProtocol
from django.test import override_settings

from dispatcher.api import recipients, schedule_messages
from dispatcher.models import Dispatch, DispatchError
from dispatcher.publish import batch_size_for
from dispatcher.smtp_sink import SinkHandler
from dispatcher.sweeps import reclaim_expired_leases, requeue_due
from tests.services import BASE, SMTPServer, free_port, wait_for, worker_env

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FAST_RETRIES = {"DISPATCHER_RETRY_BASE": "0.2", "DISPATCHER_RETRY_MAX": "0.5"}


def statuses(**filters) -> Counter:
    return Counter(Dispatch.objects.filter(**filters).values_list("status", flat=True))


def sweep_until(predicate, timeout: float = 90, what: str = "") -> None:
    """Run the sweeps as beat would, until ``predicate`` holds."""

    def step():
        with override_settings(
            DISPATCHER_REQUEUE_AFTER=2, DISPATCHER_RETRY_BASE=0.2, DISPATCHER_RETRY_MAX=0.5
        ):
            reclaim_expired_leases()
            requeue_due()
        return predicate()

    wait_for(step, timeout, 0.5, what)


class SlowSink(SinkHandler):
    """Takes a few milliseconds per mail, as a real server does, so that a
    batch is still in flight when the test kills the worker."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.003)
        return await super().handle_DATA(server, session, envelope)


def test_sigkill_mid_batch_loses_nothing_and_duplicates_stay_within_bound(workers):
    sink = SMTPServer(SlowSink())
    flush_every, concurrency, total = 20, 2, 2000
    env = {"DISPATCHER_LEASE_SECONDS": "4", "DISPATCHER_FLUSH_EVERY": str(flush_every),
           "DISPATCHER_FLUSH_SECONDS": "60", **FAST_RETRIES}
    try:
        first = workers("doomed", smtp_port=sink.port, concurrency=concurrency, **env)
        addresses = [f"user{i}@example.org" for i in range(total)]
        with override_settings(DISPATCHER_FANOUT_TASKS=8):  # batches of 250: long in flight
            schedule_messages("kill test", recipients("smtp", addresses))
        wait_for(lambda: len(sink.messages) >= 400 and statuses(status="processing"), 60, 0.05,
                 "400 mails, and a batch in flight")
        first.kill()
        assert len(sink.messages) < total

        workers("fresh", smtp_port=sink.port, concurrency=concurrency, **env)
        sweep_until(lambda: statuses() == {"sent": total}, 120, "every dispatch sent after the kill")
        received = Counter(m["To"] for m in sink.messages)
        assert set(received) == set(addresses)
        duplicates = sum(n - 1 for n in received.values())
        # The documented bound: DISPATCHER_FLUSH_EVERY per batch in flight.
        assert duplicates <= flush_every * concurrency
    finally:
        sink.stop()


class RedisServer:
    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, 20, 0.1, "redis-server to start")

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.RedisError:
            return False

    def llen(self, key: str) -> int:
        """Messages in a queue, over kombu's priority lists (``key``, then ``key\x06\x16N``)."""
        import redis

        client = redis.Redis.from_url(self.url)
        return sum(client.llen(name) for name in [key, *(f"{key}\x06\x16{n}" for n in (3, 6, 9))])

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE, env=env,
                          capture_output=True, text=True, timeout=120)


def test_redis_restart_losing_the_queue_is_recovered_by_the_sweep(workers):
    broker = RedisServer()
    sink = SMTPServer()
    try:
        env = worker_env(sink.port, CELERY_BROKER_URL=broker.url)
        scheduled = manage(env, "shell", "-c",
                           "from dispatcher.api import schedule_messages, recipients;"
                           "schedule_messages('after restart', recipients('smtp', "
                           "[f'u{i}@example.org' for i in range(1000)]))")
        assert scheduled.returncode == 0, scheduled.stderr
        tasks = -(-1000 // batch_size_for(1000))
        assert broker.llen("dispatch.smtp") == tasks  # 1,000 dispatches wait as tasks in Redis

        broker.kill()
        broker.start()
        assert broker.llen("dispatch.smtp") == 0  # what Redis held is gone

        workers("after-restart", smtp_port=sink.port, CELERY_BROKER_URL=broker.url)
        assert statuses() == {"pending": 1000}
        swept = manage({**env, "DISPATCHER_REQUEUE_AFTER": "0"}, "dispatcher_requeue_due")
        assert swept.returncode == 0 and "requeued 1000" in swept.stdout
        wait_for(lambda: statuses() == {"sent": 1000}, 90, 0.3, "all 1000 delivered after the sweep")
        assert Counter(m["To"] for m in sink.messages) == Counter(f"u{i}@example.org" for i in range(1000))
    finally:
        broker.kill()
        sink.stop()


class ScriptedSMTP(SinkHandler):
    """Answers RCPT TO from a script: 451 for the first attempts, 550 for some."""

    def __init__(self, tempfail_times: int = 0, reject: tuple[str, ...] = ()):
        super().__init__()
        self.tempfail_times = tempfail_times
        self.reject = reject
        self.rcpt_attempts: Counter = Counter()

    async def handle_RCPT(self, server: SMTPProtocol, session, envelope, address: str, rcpt_options):
        self.rcpt_attempts[address] += 1
        if address in self.reject:
            return "550 5.1.1 No such user here"
        if self.rcpt_attempts[address] <= self.tempfail_times:
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def test_451_then_250_is_retried_until_delivered(workers):
    handler = ScriptedSMTP(tempfail_times=2)
    sink = SMTPServer(handler)
    try:
        workers("w", smtp_port=sink.port, **FAST_RETRIES)
        addresses = [f"t{i}@example.org" for i in range(20)]
        schedule_messages("greylisted", recipients("smtp", addresses))
        sweep_until(lambda: statuses() == {"sent": 20}, 90, "all delivered after the 451s")
        assert set(Dispatch.objects.values_list("attempts", flat=True)) == {3}
        assert DispatchError.objects.count() == 40
        assert all("451" in t for t in DispatchError.objects.values_list("text", flat=True))
        assert Counter(m["To"] for m in sink.messages) == Counter(addresses)
    finally:
        sink.stop()


def test_550_fails_that_recipient_only(workers):
    handler = ScriptedSMTP(reject=("bad@example.org",))
    sink = SMTPServer(handler)
    try:
        workers("w", smtp_port=sink.port, **FAST_RETRIES)
        schedule_messages("hello", recipients("smtp", ["a@example.org", "bad@example.org", "c@example.org"]))
        wait_for(lambda: sum(statuses().values()) == 3 and not statuses(status__in=["pending", "processing"]),
                 60, 0.2, "outcomes")
        bad = Dispatch.objects.get(address="bad@example.org")
        assert (bad.status, bad.attempts) == ("failed", 1)
        assert "550" in bad.errors.get().text and "No such user" in bad.errors.get().text
        assert statuses(status="sent") == {"sent": 2}
    finally:
        sink.stop()


def test_server_down_then_up_is_retried_with_backoff(workers):
    port = free_port()
    workers("w", smtp_port=port, **FAST_RETRIES)
    addresses = [f"d{i}@example.org" for i in range(10)]
    schedule_messages("while down", recipients("smtp", addresses))
    wait_for(lambda: statuses() == {"error": 10}, 60, 0.2, "the first attempts to fail")
    assert all("Connection" in t for t in DispatchError.objects.values_list("text", flat=True))
    first_retry = min(Dispatch.objects.values_list("next_attempt_at", flat=True))
    first_error = min(DispatchError.objects.values_list("created", flat=True))
    assert first_retry > first_error  # a backoff, not an immediate retry

    from aiosmtpd.controller import Controller

    handler = SinkHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sweep_until(lambda: statuses() == {"sent": 10}, 90, "delivery once the server is up")
        assert min(Dispatch.objects.values_list("attempts", flat=True)) >= 2
        assert Counter(m["To"] for m in handler.messages) == Counter(addresses)
    finally:
        controller.stop()


def test_broken_messengers_never_downgrade_sent_nor_leave_processing(workers):
    workers("w", DISPATCHER_LEASE_SECONDS="3", **FAST_RETRIES)
    for alias in ("broken_before", "broken_send", "broken_after", "interrupted"):
        schedule_messages("x", recipients(alias, [f"ok/{i}" for i in range(6)]))

    def settled() -> bool:
        return not statuses(status__in=["pending", "processing"], attempts=0) and bool(
            statuses(messenger="broken_after", status="sent")
        )

    wait_for(settled, 60, 0.3, "first attempts")
    # The interrupted batch's unmarked rows wait for their lease to expire.
    sweep_until(lambda: not statuses(status="processing"), 60, "no row left in processing")

    assert statuses(messenger="broken_after") == {"sent": 6}
    assert statuses(messenger="broken_send", status="sent")["sent"] >= 3
    assert statuses(messenger="broken_before", status="sent") == Counter()
    assert statuses(messenger="interrupted", status="sent")["sent"] >= 2
    sent_ids = set(Dispatch.objects.filter(status="sent").values_list("pk", flat=True))
    sweep_until(lambda: True, 5)
    assert sent_ids <= set(Dispatch.objects.filter(status="sent").values_list("pk", flat=True))

