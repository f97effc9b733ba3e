"""Flow control across real worker processes (two ``celery worker`` commands,
as two hosts would run them), against a real loopback HTTP provider.

On the services profile the shared state is in Redis; on the embedded
profile (SQLite, file broker) it is in the database: the same tests prove
the same guarantees on both.

- a rate limit is never exceeded, summed over every process;
- a provider's "wait 2 s" (429 + Retry-After) stops every worker for 2 s;
- the circuit breaker opens after consecutive failures, lets one probe
  through after its cool-down, opens again when the probe fails, and closes
  when one succeeds;
- what flow control postponed is never counted as an attempt, and all of
  it ends sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.models import Dispatch, DispatchError
from dispatcher.sweeps import requeue_due
from messengers.webhook import WebhookMessenger
from tests.fakes.server import FakeServer, Received, Reply
from tests.services import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SECRET = "flow-e2e-secret"


class Provider:
    """Answers with ``answers`` in turn (then 200s), and records arrival times."""

    def __init__(self, answers: list[Reply] | None = None):
        self.answers = list(answers or [])
        self.lock = threading.Lock()
        self.log: list[tuple[float, int]] = []  # (arrival, status answered)

    def __call__(self, request: Received) -> Reply:
        with self.lock:
            reply = self.answers.pop(0) if self.answers else Reply(200, "ok")
            self.log.append((request.at, reply.status))
        return reply


@pytest.fixture
def provider() -> Iterator[tuple[Provider, FakeServer]]:
    app = Provider()
    server = FakeServer(app)
    yield app, server
    server.stop()


def hook_workers(workers, server: FakeServer, names: tuple[str, ...] = ("a", "b"), processes: int = 2,
                 **flow) -> list:
    """Worker commands (``processes`` each) consuming ``dispatch.hook``, the
    webhook messenger configured with ``flow`` (``rate``, ``concurrency``...)."""
    extra = json.dumps({"hook": {"class": "messengers.webhook.WebhookMessenger",
                                 "options": {"secret": SECRET}, **flow}})
    messenger = WebhookMessenger(SECRET)
    messenger.alias = "hook"
    register_messenger_objects(messenger)
    return [workers(name, concurrency=processes, queues="dispatch.hook", TEST_EXTRA_MESSENGERS=extra,
                    DISPATCHER_RETRY_BASE="1", DISPATCHER_LOG_LEVEL="INFO")
            for name in names]


def send(server: FakeServer, n: int) -> list[int]:
    addresses = [f"{server.url}/h/{i}" for i in range(n)]
    [(_, dispatches)] = schedule_messages("flow", recipients("hook", addresses))
    return [d.pk for d in dispatches]


def all_sent(ids: list[int], timeout: float = 120) -> None:
    def done() -> bool:
        requeue_due()  # what beat runs: rows postponed for longer than a countdown come back this way
        return Dispatch.objects.filter(pk__in=ids, status="sent").count() == len(ids)

    wait_for(done, timeout, 0.3, "every dispatch to be sent")


def most_in_any_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] > window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_a_rate_limit_holds_across_worker_processes_and_postponing_is_no_attempt(workers, provider):
    app, server = provider
    started = hook_workers(workers, server, rate="20/s", concurrency=2)  # 2 commands x 2 processes x 2 lanes
    n = 160
    ids = send(server, n)
    all_sent(ids)
    arrivals = [at for at, _ in app.log]
    assert len(arrivals) == n  # each sent once
    # 160 sends at 20/s cannot take less than 159 intervals of 50 ms, whatever the
    # number of processes (4 here, in two worker commands); no 1 s window holds more
    # than the rate allows (a slot at each end of the window, and loopback jitter).
    assert max(arrivals) - min(arrivals) >= (n - 1) / 20 - 0.1
    assert most_in_any_window(arrivals) <= 20 + 2
    # Postponed dispatches were not counted as attempts, and none failed.
    assert set(Dispatch.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {1}
    assert not DispatchError.objects.exists()
    # Both worker commands took part.
    for worker in started:
        assert "sent via hook" in worker.output()


def test_a_provider_asking_to_wait_stops_every_worker(workers, provider):
    app, server = provider
    app.answers = [Reply(429, "slow down", {"Retry-After": "2"})]
    hook_workers(workers, server, concurrency=3)  # 12 lanes in 4 processes
    ids = send(server, 90)
    all_sent(ids)
    [(limited_at, status)] = [(at, s) for at, s in app.log if s == 429]
    # Requests already on the wire when the 429 was answered still arrive (on
    # a loaded 2-core machine up to a few hundred ms later); after that, none
    # from any worker until the 2 s are over.
    during = [at for at, s in app.log if limited_at + 0.3 < at < limited_at + 2.0]
    assert during == [], [round(at - limited_at, 3) for at in during]
    assert len(app.log) == 91  # 90 sent once, and the one that got the 429 again
    limited = Dispatch.objects.get(pk__in=ids, attempts=2)
    [error] = limited.errors.all()
    assert "HTTP 429" in error.text and not error.permanent
    # Every other dispatch: one attempt, whether it was postponed or not.
    assert Dispatch.objects.filter(pk__in=ids, attempts=1).count() == 89
    assert DispatchError.objects.count() == 1


def test_the_circuit_opens_probes_and_closes(workers, provider):
    app, server = provider
    down = Reply(503, "down")
    # Three failures open the circuit; the first probe fails too; the second succeeds.
    app.answers = [Reply(down.status, down.body) for _ in range(4)]
    # One process sending one at a time, so the order of requests is the order of decisions.
    hook_workers(workers, server, names=("a",), processes=1, circuit_failures=3, circuit_cooldown=1.5)
    ids = send(server, 40)
    all_sent(ids)
    times = [at for at, _ in app.log]
    statuses = [s for _, s in app.log]
    assert statuses[:4] == [503] * 4 and set(statuses[4:]) == {200}
    # Open for its cool-down after the third failure, and again after the failed probe.
    assert times[3] - times[2] >= 1.5 - 0.1
    assert times[4] - times[3] >= 1.5 - 0.1
    # 40 sent once each, plus the four failed attempts; no send while open but the probes.
    assert len(app.log) == 44
    assert DispatchError.objects.count() == 4
    # Each dispatch's attempts are its sends: one that succeeded plus its failures
    # (a retried one may have been the probe); the postponed ones counted nothing.
    errors: dict[int, int] = {}
    for pk in DispatchError.objects.values_list("dispatch_id", flat=True):
        errors[pk] = errors.get(pk, 0) + 1
    for pk, attempts in Dispatch.objects.filter(pk__in=ids).values_list("pk", "attempts"):
        assert attempts == 1 + errors.get(pk, 0)
