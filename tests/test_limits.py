"""Flow control: the limiter's decisions on each backend, and the engine's gate.

The backend tests run on the database backend in both profiles and on Redis
too in the services profile (the same scenarios, the same assertions): rate
and burst (GCRA), per-recipient rates, daily quotas, pauses (whole and
scoped), and the circuit breaker's open, half-open probe and close. The
engine tests run ``deliver_batch`` in process: what the gate holds back is
postponed (``next_attempt_at``), never counted as an attempt, and ends sent.
Real worker processes are in tests/test_flow_e2e.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from dispatcher import limiter
from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.delivery import BatchRecorder, deliver_batch
from dispatcher.limiter import DatabaseBackend, FlowConfig, Rate, RedisBackend, parse_rate
from dispatcher.models import Dispatch, DispatchError
from tests.flow_messengers import CountingMessenger

pytestmark = pytest.mark.django_db(transaction=True)

BACKENDS = ["database"] + (["redis"] if settings.CELERY_BROKER_URL.startswith("redis://") else [])


@pytest.fixture(params=BACKENDS)
def backend(request) -> Iterator[limiter.Backend]:
    if request.param == "redis":
        chosen: limiter.Backend = RedisBackend(settings.CELERY_BROKER_URL)
    else:
        chosen = DatabaseBackend()
    chosen.reset("t")
    yield chosen
    chosen.reset("t")


def cfg(**kwargs) -> FlowConfig:
    return FlowConfig(alias="t", **kwargs)


# -- configuration -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "per_second"), [
    ("14/s", 14), ("30/min", 0.5), ("1000/h", 1000 / 3600), ("10/5s", 2), ("2/ second", 2), (7, 7),
    ("86400/d", 1),
])
def test_rates_are_parsed(text, per_second):
    rate = parse_rate(text)
    assert rate is not None and rate.per_second == pytest.approx(per_second)


@pytest.mark.parametrize("bad", ["fast", "14", "14/fortnight", "0/s", "-3/s", 0, "1/0s"])
def test_a_bad_rate_is_refused_with_its_setting_named(bad):
    with pytest.raises(ImproperlyConfigured, match="rate"):
        parse_rate(bad, "DISPATCHER_MESSENGERS['x']['rate']")


def test_flow_settings_come_from_the_messenger_entry():
    messengers = {"t": {"class": "x", "options": {}, "rate": "14/s", "burst": 3, "daily_quota": 50_000,
                        "recipient_rate": "1/s", "concurrency": 8, "circuit_failures": 5,
                        "circuit_cooldown": 60}}
    with override_settings(DISPATCHER_MESSENGERS=messengers):
        got = limiter.flow_config("t")
        assert got == FlowConfig("t", Rate(14, 1), 3, 50_000, Rate(1, 1), 1, 8, 5, 60.0)
        assert got.metered and got.paced
        plain = limiter.flow_config("unknown")
        assert not plain.metered and not plain.paced and plain.circuit_failures == 0
    with override_settings(DISPATCHER_MESSENGERS={"t": {"concurrency": 0}}):
        with pytest.raises(ImproperlyConfigured, match="concurrency"):
            limiter.flow_config("t")


def test_the_backend_is_redis_when_the_broker_is_and_the_database_otherwise():
    with override_settings(DISPATCHER_RATE_LIMIT_URL="", CELERY_BROKER_URL="filesystem://"):
        assert isinstance(limiter.get_backend(), DatabaseBackend)
    with override_settings(DISPATCHER_RATE_LIMIT_URL="", CELERY_BROKER_URL="redis://127.0.0.1:1/0"):
        assert isinstance(limiter.get_backend(), RedisBackend)
    with override_settings(DISPATCHER_RATE_LIMIT_URL="database", CELERY_BROKER_URL="redis://127.0.0.1:1/0"):
        assert isinstance(limiter.get_backend(), DatabaseBackend)


# -- the backends ------------------------------------------------------------------------------------
def test_rate_admits_one_per_interval_and_reserves_within_the_horizon(backend):
    # One a second: wide enough that a busy machine's delay between calls
    # (tens of milliseconds) cannot move a slot across the horizon.
    one = cfg(rate=Rate(1, 1))
    first = backend.take(one, horizon=0)
    assert first.admitted and first.wait == 0
    refused = backend.take(one, horizon=0)
    assert not refused.admitted and refused.reason == "rate" and refused.whole
    assert 0.5 < refused.wait <= 1.0
    # Within a 3.5 s horizon, three more slots can be reserved, 1 s apart.
    waits = [backend.take(one, horizon=3.5) for _ in range(4)]
    assert [t.admitted for t in waits] == [True, True, True, False]
    # (each wait counts from the moment it was asked: a busy machine makes them shorter)
    assert 0.0 < waits[0].wait <= 1.0 and 1.5 < waits[2].wait <= 3.0


def test_burst_lets_that_many_go_at_once(backend):
    bursty = cfg(rate=Rate(1, 1), burst=4)
    assert [backend.take(bursty, horizon=0).admitted for _ in range(5)] == [True] * 4 + [False]


def test_per_recipient_rate_holds_back_only_that_recipient(backend):
    chat = cfg(rate=Rate(100, 1), recipient_rate=Rate(1, 1))
    assert backend.take(chat, 0.5, recipient="42").admitted
    again = backend.take(chat, 0.5, recipient="42")
    assert not again.admitted and again.reason == "recipient" and not again.whole
    assert 0.9 < again.wait <= 1.0
    assert backend.take(chat, 0.5, recipient="43").admitted


def test_daily_quota_stops_until_the_next_day(backend):
    quota = cfg(daily_quota=3)
    assert [backend.take(quota, 0).admitted for _ in range(3)] == [True] * 3
    over = backend.take(quota, 0)
    assert not over.admitted and over.reason == "daily"
    assert abs(over.wait - (86400 - time.time() % 86400)) < 5
    assert backend.state(quota).daily_used == 3 and backend.state(quota).limited


def test_a_pause_holds_everyone_back_and_a_scoped_one_only_its_scope(backend):
    plain = cfg()
    assert backend.pause("t", 2.0) == pytest.approx(2.0, abs=0.05)
    assert backend.pause("t", 0.5) == pytest.approx(2.0, abs=0.05)  # a shorter pause keeps the longer
    held = backend.take(plain, 1.0)
    assert not held.admitted and held.reason == "paused" and held.whole and 1.8 < held.wait <= 2.0
    state = backend.state(plain)
    assert state.paused_until is not None and abs(state.paused_until - time.time() - 2) < 0.1
    backend.reset("t")
    backend.pause("t", 2.0, scope="http://a")
    scoped = backend.take(plain, 1.0, scope="http://a")
    assert not scoped.admitted and not scoped.whole
    assert backend.take(plain, 1.0, scope="http://b").admitted
    assert backend.state(plain).paused_until is None


def test_circuit_opens_lets_one_probe_through_and_closes(backend):
    breaker = cfg(circuit_failures=3, circuit_cooldown=0.4)
    backend.report(breaker, 2, success=False)
    assert backend.take(breaker, 0).admitted
    backend.report(breaker, 0, success=True)  # a success resets the count
    backend.report(breaker, 2, success=False)
    assert backend.take(breaker, 0).admitted
    backend.report(breaker, 1, success=False)  # three in a row
    opened = backend.take(breaker, 0)
    assert not opened.admitted and opened.reason == "circuit" and 0.3 < opened.wait <= 0.4
    assert backend.state(breaker).circuit == "open"
    time.sleep(0.45)
    assert backend.state(breaker).circuit == "half-open"
    probe = backend.take(breaker, 0)
    assert probe.admitted and probe.probe
    assert not backend.take(breaker, 0).admitted  # one probe at a time
    backend.report(breaker, 1, success=False, probe=True)  # the probe failed: open again
    assert backend.take(breaker, 0).reason == "circuit"
    time.sleep(0.45)
    probe = backend.take(breaker, 0)
    assert probe.probe
    backend.report(breaker, 0, success=True, probe=True)
    after = backend.take(breaker, 0)
    assert after.admitted and not after.probe
    assert backend.state(breaker).circuit == "closed" and backend.state(breaker).consecutive_failures == 0


def test_checking_takes_no_token(backend):
    one = cfg(rate=Rate(1, 1))
    assert backend.take(one, 0, take=False).admitted
    assert backend.state(one).rate_backlog == 0 and not backend.state(one).limited
    assert backend.take(one, 0).admitted
    # The next send would wait for its slot, a second away.
    assert 0.9 < backend.state(one).rate_backlog <= 1.0 and backend.state(one).limited


# -- the engine's gate -------------------------------------------------------------------------------
def messengers(**flow) -> dict:
    return {**settings.DISPATCHER_MESSENGERS,
            "counting": {"class": "tests.flow_messengers.CountingMessenger", "options": {}, **flow}}


@pytest.fixture
def counting() -> Iterator[CountingMessenger]:
    messenger = CountingMessenger()
    register_messenger_objects(messenger)
    limiter.get_backend().reset("counting")
    yield messenger
    limiter.get_backend().reset("counting")


def schedule(addresses: list[str]) -> list[int]:
    [(_, dispatches)] = schedule_messages("hello", recipients("counting", addresses))
    return [d.pk for d in dispatches]


def faster_than(sent_at: list[float], interval: float, jitter: float = 0.02) -> list[tuple[int, int]]:
    """Pairs of sends closer than the rate allows: the k-th send after another
    at least k intervals later. A limit reserves slots; a thread may wake a few
    ms after its slot and the next one on time, so the instants get ``jitter``
    (one send late by 11 ms under a loaded machine made a gap of 0.189 s
    between two slots 0.2 s apart). A burst is still caught: n + 1 sends in
    less than n intervals."""
    return [(i, j) for i in range(len(sent_at)) for j in range(i + 1, len(sent_at))
            if sent_at[j] - sent_at[i] < (j - i) * interval - jitter]


def test_a_rate_limited_batch_sends_what_fits_and_postpones_the_rest_without_an_attempt(counting):
    ids = schedule([f"ok/{i}" for i in range(12)])
    with override_settings(DISPATCHER_MESSENGERS=messengers(rate="5/s"), DISPATCHER_FLOW_HORIZON=0.5,
                           DISPATCHER_FLOW_BATCH_WAIT=0.3, DISPATCHER_PUBLISH_TASKS=False):
        result = deliver_batch("counting", ids)
        # The first slot now, then one 0.2 s later and another 0.2 s after
        # that; then the batch has waited its 0.3 s and gives the rest back.
        assert result.sent == 3 and len(counting.sent_at) == 3
        assert not faster_than(counting.sent_at, 0.2), counting.sent_at
        held = Dispatch.objects.exclude(status="sent")
        assert held.count() == 9
        assert set(held.values_list("status", "attempts")) == {("pending", 0)}
        assert not DispatchError.objects.exists()
        now = timezone.now()
        due = sorted((d - now).total_seconds() for d in held.values_list("next_attempt_at", flat=True))
        assert due[0] > 0 and due[-1] - due[0] >= 8 * 0.2 - 0.25  # spread at the rate (and a jitter)
        deadline = time.monotonic() + 30
        while Dispatch.objects.exclude(status="sent").exists() and time.monotonic() < deadline:
            due_ids = list(Dispatch.objects.filter(status="pending", next_attempt_at__lte=timezone.now())
                           .values_list("pk", flat=True))
            if due_ids:
                deliver_batch("counting", due_ids)
            time.sleep(0.05)
    assert set(Dispatch.objects.values_list("status", "attempts")) == {("sent", 1)}
    # never faster than 5/s, across batches too
    assert not faster_than(counting.sent_at, 0.2), counting.sent_at


def test_a_lane_waits_for_a_slot_past_the_horizon_within_its_budget(counting):
    ids = schedule([f"ok/{i}" for i in range(6)])
    with override_settings(DISPATCHER_MESSENGERS=messengers(rate="2/s"), DISPATCHER_FLOW_HORIZON=0,
                           DISPATCHER_FLOW_BATCH_WAIT=1.2, DISPATCHER_PUBLISH_TASKS=False):
        result = deliver_batch("counting", ids)
    # Now, then after 0.5 s and 1.0 s of waiting; a third wait would pass 1.2 s: the rest go back.
    assert result.sent == 3
    assert not faster_than(counting.sent_at, 0.5), counting.sent_at
    assert set(Dispatch.objects.exclude(status="sent").values_list("status", "attempts")) == {("pending", 0)}


def test_postponed_rows_due_soon_are_published_again_with_a_countdown(counting, monkeypatch):
    published = []
    monkeypatch.setattr("dispatcher.delivery.publish",
                        lambda pairs, priority=0, countdown=None: published.append((list(pairs), countdown)))
    ids = schedule([f"ok/{i}" for i in range(6)])
    with override_settings(DISPATCHER_MESSENGERS=messengers(rate="2/s"), DISPATCHER_FLOW_HORIZON=0,
                           DISPATCHER_FLOW_BATCH_WAIT=0.01, DISPATCHER_POSTPONE_COUNTDOWN_MAX=2.0):
        deliver_batch("counting", ids)
    held = {pk: (queued, due) for pk, queued, due in
            Dispatch.objects.exclude(status="sent").values_list("pk", "queued_at", "next_attempt_at")}
    assert len(held) == 5
    republished = {pk for pairs, _ in published for _, pk in pairs}
    countdowns = sorted(c for _, c in published)
    # Due within 2 s: a task with a countdown (whole seconds, never early), queued_at set.
    assert republished and all(c is not None and c >= 1 for c in countdowns)
    for pk, (queued, _due) in held.items():
        assert (queued is not None) == (pk in republished)
    # Later ones are left to the requeue sweep.
    assert len(republished) < 5


def test_a_rate_limited_answer_pauses_the_messenger_for_the_next_batches(counting):
    ids = schedule(["ok/1", "limited:2/1", "ok/3", "ok/4"])
    with override_settings(DISPATCHER_MESSENGERS=messengers(concurrency=1, rate="1000/s"),
                           DISPATCHER_PUBLISH_TASKS=False):
        deliver_batch("counting", ids)
        rows = {d.address: d for d in Dispatch.objects.all()}
        assert rows["ok/1"].status == "sent"
        assert rows["limited:2/1"].status == "error" and rows["limited:2/1"].attempts == 1
        for later in ("ok/3", "ok/4"):  # not sent into the wait, and no attempt counted
            assert rows[later].status == "pending" and rows[later].attempts == 0
            assert 1.9 < (rows[later].next_attempt_at - timezone.now()).total_seconds() < 4
        # Another batch (another worker) finds the messenger paused.
        [other] = schedule(["ok/5"])
        deliver_batch("counting", [other])
        assert Dispatch.objects.get(pk=other).status == "pending"
        assert counting.addresses == ["ok/1", "limited:2/1"]
        state = limiter.get_backend().state(limiter.flow_config("counting"))
        assert state.paused_until is not None and state.limited


def test_a_plain_messenger_checks_the_pause_before_each_message(counting):
    limiter.get_backend().pause("counting", 3)
    ids = schedule(["ok/1", "ok/2"])
    with override_settings(DISPATCHER_PUBLISH_TASKS=False):
        deliver_batch("counting", ids)
    assert counting.addresses == []
    assert set(Dispatch.objects.values_list("status", "attempts")) == {("pending", 0)}


def test_the_circuit_opens_after_consecutive_failures_and_a_probe_closes_it(counting):
    flow = messengers(circuit_failures=3, circuit_cooldown=0.5)

    def state() -> str:
        return limiter.get_backend().state(limiter.flow_config("counting")).circuit

    def rows(ids: list[int]) -> set:
        return set(Dispatch.objects.filter(pk__in=ids).values_list("status", "attempts"))

    with override_settings(DISPATCHER_MESSENGERS=flow, DISPATCHER_PUBLISH_TASKS=False):
        ok_first = schedule(["ok/a", "temp/a", "temp/b", "ok/b"])
        deliver_batch("counting", ok_first)
        assert state() == "closed"  # two failures in a row, then a success: counted from 0 again
        failing = schedule([f"temp/{i}" for i in range(3)])
        held = schedule([f"ok/h{i}" for i in range(3)])
        deliver_batch("counting", failing + held)
        assert state() == "open"
        # Three failures in a row opened it: the rest of the batch was not sent,
        # and waits for the cool-down without an attempt counted.
        assert counting.addresses[-3:] == [f"temp/{i}" for i in range(3)]
        assert rows(held) == {("pending", 0)}
        assert not DispatchError.objects.filter(dispatch_id__in=held).exists()
        time.sleep(0.55)
        assert state() == "half-open"
        # The probe fails: open again for another cool-down.
        probe_fails = schedule(["temp/probe", "ok/after-the-probe"])
        deliver_batch("counting", probe_fails)
        assert counting.addresses[-1] == "temp/probe" and state() == "open"
        assert rows(probe_fails[1:]) == {("pending", 0)}
        time.sleep(0.55)
        Dispatch.objects.filter(pk__in=held).update(next_attempt_at=timezone.now())
        deliver_batch("counting", held)
        # The first goes alone as the probe; it succeeds, the circuit closes, the rest follow.
        assert counting.addresses[-3:] == [f"ok/h{i}" for i in range(3)]
        assert rows(held) == {("sent", 1)}
        assert state() == "closed"


def test_concurrent_lanes_send_at_once_on_copies_of_their_own(counting):
    ids = schedule([f"slow:200/{i}" for i in range(8)])
    with override_settings(DISPATCHER_MESSENGERS=messengers(concurrency=4), DISPATCHER_PUBLISH_TASKS=False):
        start = time.monotonic()
        result = deliver_batch("counting", ids)
        elapsed = time.monotonic() - start
    assert result.sent == 8
    assert elapsed < 1.2  # 8 sends of 0.2 s in 4 lanes: about 0.4 s, not 1.6 s
    assert counting.max_in_flight == 4
    assert len(set(counting.copies)) == 4  # four for_batch copies, one per lane, each opened and closed
    assert counting.opened == counting.closed == 4
    assert set(Dispatch.objects.values_list("status", "attempts")) == {("sent", 1)}


class UnwrittenWatcher(CountingMessenger):
    """Notes, at each send, how many of its batch's sends have no written
    outcome yet: those recorded but unwritten, and those in flight (this one too)."""

    def send(self, message_cls: Any, message_model: Any, dispatch_models: Any) -> None:
        recorder = self._recorder
        assert isinstance(recorder, BatchRecorder)
        for envelope in dispatch_models:
            with self.lock:
                unwritten = len(recorder.unflushed) + recorder.in_flight
                self.flight["unwritten"] = max(self.flight.get("unwritten", 0), unwritten)
            super().send(message_cls, message_model, [envelope])


def test_lanes_send_while_their_outcomes_are_written_and_never_leave_more_than_flush_every_unwritten():
    """With several lanes, the batch's thread writes while every lane sends;
    a send waits while FLUSH_EVERY sends are unwritten or in flight, so the
    bound on what a killed worker sends twice holds."""
    watcher = UnwrittenWatcher()
    register_messenger_objects(watcher)
    ids = schedule([f"slow:5/{i}" for i in range(60)])
    with override_settings(DISPATCHER_MESSENGERS=messengers(concurrency=4), DISPATCHER_FLUSH_EVERY=4,
                           DISPATCHER_FLUSH_SECONDS=3600, DISPATCHER_PUBLISH_TASKS=False):
        result = deliver_batch("counting", ids)
    assert result.sent == 60
    assert watcher.max_in_flight == 4
    assert 0 < watcher.flight["unwritten"] <= 4
    assert set(Dispatch.objects.values_list("status", "attempts")) == {("sent", 1)}


# -- what operators see ------------------------------------------------------------------------------
def test_pauses_circuits_and_limits_are_visible_in_metrics_status_and_dashboard(counting, client,
                                                                               django_user_model):
    flow = messengers(rate="14/s", daily_quota=1000, circuit_failures=2, circuit_cooldown=60)
    with override_settings(DISPATCHER_MESSENGERS=flow):
        backend = limiter.get_backend()
        config = limiter.flow_config("counting")
        backend.pause("counting", 30)
        backend.report(config, 2, success=False)
        backend.take(config, 0, take=False)
        admin = django_user_model.objects.create_superuser("ops", "ops@example.org", "pw-ops-1")
        client.force_login(admin)

        metrics = client.get("/dispatcher/ops/metrics").content.decode()
        assert 'dispatcher_limited{messenger="counting"} 1.0' in metrics
        assert 'dispatcher_circuit_open{messenger="counting"} 1.0' in metrics
        assert 'dispatcher_rate_limit_per_second{messenger="counting"} 14.0' in metrics
        assert 'dispatcher_daily_quota{messenger="counting"} 1000.0' in metrics
        assert "dispatcher_flow_state_up 1.0" in metrics
        [paused] = [line for line in metrics.splitlines()
                    if line.startswith('dispatcher_paused_until_seconds{messenger="counting"}')]
        assert abs(float(paused.split()[-1]) - time.time() - 30) < 2
        assert 'dispatcher_limited{messenger="smtp"} 0.0' in metrics

        out = StringIO()
        call_command("dispatcher_status", "--format", "json", "--no-broker", stdout=out)
        state = json.loads(out.getvalue())["messengers"]["counting"]["flow"]
        assert state["limited"] is True and state["circuit"] == "open" and state["rate"] == "14/1s"
        assert state["paused_until"] is not None and state["consecutive_failures"] == 2
        out = StringIO()
        call_command("dispatcher_status", "--no-broker", stdout=out)
        [line] = [line for line in out.getvalue().splitlines() if line.startswith("  counting:")]
        assert "rate 14/1s" in line and "paused until" in line and "circuit open until" in line

        page = client.get("/dispatcher/ops/").content.decode()
        assert 'id="flow-table"' in page
        row = page[page.index('<tr data-messenger="counting" data-limited="1"'):]
        row = row[:row.index("</tr>")]
        assert "paused until" in row and "circuit open until" in row and "14/1s" in row
