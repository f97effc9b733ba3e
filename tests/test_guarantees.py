"""Retries, leases, sweeps, idempotency, cancel and signals, in process."""

from __future__ import annotations

import datetime as dt
import smtplib
import threading

import pytest
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from dispatcher import signals
from dispatcher.api import cancel, recipients, register_messenger_objects, schedule_messages
from dispatcher.delivery import backoff_delay, deliver_batch
from dispatcher.messages import MessageBase
from dispatcher.models import Dispatch, DispatchError, Message
from dispatcher.sweeps import reclaim_expired_leases
from messengers.exceptions import PermanentError, TemporaryError
from messengers.smtp import classify_smtp_error
from tests.testapp.messengers import ScriptedMessenger

pytestmark = pytest.mark.django_db


def schedule(alias: str, addresses: list[str], message: object = "hello") -> list[Dispatch]:
    [(_, dispatches)] = schedule_messages(message, recipients(alias, addresses))
    return dispatches


def deliver(alias: str, dispatches: list[Dispatch]) -> None:
    deliver_batch(alias, [d.pk for d in dispatches])


def make_due(dispatches: list[Dispatch]) -> None:
    Dispatch.objects.filter(pk__in=[d.pk for d in dispatches]).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )


def state(dispatch: Dispatch) -> tuple[str, int]:
    dispatch.refresh_from_db()
    return dispatch.status, dispatch.attempts


# -- error classes ------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc, expected",
    [
        (smtplib.SMTPRecipientsRefused({"a@x.org": (550, b"no such user")}), PermanentError),
        (smtplib.SMTPRecipientsRefused({"a@x.org": (451, b"try later")}), TemporaryError),
        (smtplib.SMTPDataError(552, b"too big"), PermanentError),
        (smtplib.SMTPSenderRefused(421, b"busy", "from@x.org"), TemporaryError),
        (smtplib.SMTPServerDisconnected("gone"), TemporaryError),
        (ConnectionRefusedError(111, "refused"), TemporaryError),
        (TimeoutError("timed out"), TemporaryError),
    ],
)
def test_smtp_error_mapping(exc, expected):
    assert type(classify_smtp_error(exc)) is expected


# -- retries ------------------------------------------------------------------------
@override_settings(DISPATCHER_RETRY_BASE=10, DISPATCHER_RETRY_MAX=100)
def test_backoff_grows_with_jitter_and_is_capped():
    for attempt, ceiling in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (12, 100)]:
        delays = {backoff_delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
    assert backoff_delay(3, retry_after=7) == 7


@override_settings(DISPATCHER_RETRY_BASE=10, DISPATCHER_RETRY_MAX=100)
def test_temporary_error_schedules_a_retry_and_records_the_attempt():
    [dispatch] = schedule("flaky", ["temp/1"])
    before = timezone.now()
    deliver("flaky", [dispatch])
    dispatch.refresh_from_db()
    assert (dispatch.status, dispatch.attempts) == ("error", 1)
    assert before + dt.timedelta(seconds=5) <= dispatch.next_attempt_at <= timezone.now() + dt.timedelta(
        seconds=10
    )
    assert dispatch.queued_at is None and dispatch.claim_token is None
    [error] = dispatch.errors.all()
    assert (error.attempt, error.error_class, error.permanent) == (1, "TemporaryError", False)
    assert "scripted temporary failure" in error.text


def test_retry_after_from_the_transport_is_honoured():
    class RateLimited(ScriptedMessenger):
        def send(self, message_cls, message_model, dispatch_models):
            for d in dispatch_models:
                self.mark_error(d, TemporaryError("429", retry_after=42))

    register_messenger_objects(RateLimited())
    [dispatch] = schedule("flaky", ["ok/1"])
    deliver("flaky", [dispatch])
    dispatch.refresh_from_db()
    delay = (dispatch.next_attempt_at - timezone.now()).total_seconds()
    assert 40 <= delay <= 42


def test_attempts_run_out_then_failed_with_last_reason():
    class TwoTries(MessageBase):
        alias = "two_tries"
        send_retry_limit = 2

    from dispatcher.api import register_message_types

    register_message_types(TwoTries)
    [dispatch] = schedule("flaky", ["temp/1"], TwoTries("x"))
    deliver("flaky", [dispatch])
    assert state(dispatch) == ("error", 1)
    make_due([dispatch])
    deliver("flaky", [dispatch])
    assert state(dispatch) == ("failed", 2)
    errors = list(dispatch.errors.order_by("attempt"))
    assert [(e.attempt, e.permanent) for e in errors] == [(1, False), (2, True)]
    assert "scripted temporary failure" in errors[-1].text


def test_permanent_error_fails_at_once():
    [dispatch] = schedule("flaky", ["perm/1"])
    deliver("flaky", [dispatch])
    assert state(dispatch) == ("failed", 1)
    assert dispatch.errors.get().permanent


def test_error_rows_are_not_claimable_before_they_are_due():
    [dispatch] = schedule("flaky", ["temp/1"])
    deliver("flaky", [dispatch])
    assert deliver_batch("flaky", [dispatch.pk]).claimed == 0


# -- SENT is final --------------------------------------------------------------------
@pytest.mark.parametrize("fail_in", ["send", "after_send"])
def test_failures_later_in_the_batch_never_downgrade_sent(fail_in):
    register_messenger_objects(type("B", (ScriptedMessenger,), {"alias": "flaky"})(fail_in, 3))
    dispatches = schedule("flaky", [f"ok/{i}" for i in range(6)])
    deliver("flaky", dispatches)
    statuses = [state(d)[0] for d in dispatches]
    if fail_in == "send":
        assert statuses == ["sent"] * 3 + ["error"] * 3
        assert "scripted failure in send" in DispatchError.objects.filter(dispatch=dispatches[3]).get().text
    else:
        assert statuses == ["sent"] * 6


def test_before_send_failure_marks_the_whole_batch():
    register_messenger_objects(type("B", (ScriptedMessenger,), {"alias": "flaky"})("before_send"))
    dispatches = schedule("flaky", ["ok/1", "ok/2"])
    deliver("flaky", dispatches)
    assert [state(d) for d in dispatches] == [("error", 1), ("error", 1)]
    assert all("before_send" in d.errors.get().text for d in dispatches)


def test_keyboard_interrupt_is_not_swallowed_and_marked_rows_are_kept():
    register_messenger_objects(type("B", (ScriptedMessenger,), {"alias": "flaky"})("interrupt", 2))
    dispatches = schedule("flaky", [f"ok/{i}" for i in range(4)])
    with pytest.raises(KeyboardInterrupt):
        deliver("flaky", dispatches)
    assert [state(d)[0] for d in dispatches] == ["sent", "sent", "processing", "processing"]
    # The lease sweep brings back what the interrupted worker held.
    Dispatch.objects.filter(status="processing").update(lease_expires_at=timezone.now() - dt.timedelta(1))
    assert reclaim_expired_leases() == 2
    assert [state(d)[0] for d in dispatches] == ["sent", "sent", "error", "error"]
    assert DispatchError.objects.filter(error_class="LeaseExpired").count() == 2


def test_a_messenger_that_marks_nothing_leaves_nothing_processing():
    class Silent(ScriptedMessenger):
        def send(self, message_cls, message_model, dispatch_models):
            pass

    register_messenger_objects(type("S", (Silent,), {"alias": "flaky"})())
    [dispatch] = schedule("flaky", ["ok/1"])
    deliver("flaky", [dispatch])
    assert state(dispatch) == ("error", 1)
    assert "without marking" in dispatch.errors.get().text


@override_settings(DISPATCHER_FLUSH_EVERY=2, DISPATCHER_FLUSH_SECONDS=3600)
def test_outcomes_are_flushed_every_n_dispatches():
    seen: list[list[str]] = []

    class Watching(ScriptedMessenger):
        def send(self, message_cls, message_model, dispatch_models):
            for d in dispatch_models:
                self.mark_sent(d)
                seen.append(
                    list(Dispatch.objects.filter(pk__in=[x.pk for x in dispatch_models])
                         .order_by("pk").values_list("status", flat=True))
                )

    register_messenger_objects(type("W", (Watching,), {"alias": "flaky"})())
    dispatches = schedule("flaky", [f"ok/{i}" for i in range(4)])
    deliver("flaky", dispatches)
    assert [s.count("sent") for s in seen] == [0, 2, 2, 4]


# -- leases ---------------------------------------------------------------------------
def test_late_outcome_of_a_worker_that_lost_its_lease_is_ignored():
    """A worker whose lease was taken over cannot overwrite the new owner's result."""

    class Slowpoke(ScriptedMessenger):
        def send(self, message_cls, message_model, dispatch_models):
            # Meanwhile the lease expired, the sweep took the row back and
            # another worker sent it.
            Dispatch.objects.filter(pk=dispatch_models[0].pk).update(
                status="sent", claim_token=None, lease_expires_at=None
            )
            self.mark_error(dispatch_models[0], "late error")

    register_messenger_objects(type("S", (Slowpoke,), {"alias": "flaky"})())
    [dispatch] = schedule("flaky", ["ok/1"])
    deliver("flaky", [dispatch])
    assert state(dispatch)[0] == "sent"


# -- cancel ---------------------------------------------------------------------------
def test_cancel_message_and_dispatch():
    dispatches = schedule("flaky", ["ok/1", "ok/2", "ok/3"])
    Dispatch.objects.filter(pk=dispatches[0].pk).update(status="sent")
    assert cancel(dispatches[1]) == 1
    assert cancel(dispatches[0].message) == 1
    assert [state(d)[0] for d in dispatches] == ["sent", "cancelled", "cancelled"]
    assert deliver_batch("flaky", [d.pk for d in dispatches]).claimed == 0


# -- signals --------------------------------------------------------------------------
def test_signals_after_commit(django_capture_on_commit_callbacks):
    received: list[tuple[str, int]] = []

    def listener(name):
        return lambda sender, dispatch, **kw: received.append((name, dispatch.address))

    handlers = {name: listener(name) for name in ("sent", "failed", "retry")}
    signals.dispatch_sent.connect(handlers["sent"])
    signals.dispatch_failed.connect(handlers["failed"])
    signals.dispatch_retry.connect(handlers["retry"])
    try:
        dispatches = schedule("flaky", ["ok/1", "perm/2", "temp/3"])
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            deliver("flaky", dispatches)
        assert received == []  # nothing before the commit
        for callback in callbacks:
            callback()
    finally:
        signals.dispatch_sent.disconnect(handlers["sent"])
        signals.dispatch_failed.disconnect(handlers["failed"])
        signals.dispatch_retry.disconnect(handlers["retry"])
    assert sorted(received) == [("failed", "perm/2"), ("retry", "temp/3"), ("sent", "ok/1")]


# -- idempotency ------------------------------------------------------------------------
def test_repeated_idempotency_key_returns_the_first_rows():
    first = schedule_messages("x", recipients("flaky", ["ok/1", "ok/2"]), idempotency_key="order-1")
    second = schedule_messages("x", recipients("flaky", ["ok/1", "ok/2"]), idempotency_key="order-1")
    assert [m.pk for m, _ in first] == [m.pk for m, _ in second]
    assert [d.pk for d in first[0][1]] == [d.pk for d in second[0][1]]
    assert Message.objects.count() == 1 and Dispatch.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_calls_with_one_idempotency_key_create_one_message():
    barrier = threading.Barrier(4)
    results: list = []
    errors: list = []

    def call():
        try:
            barrier.wait()
            results.append(schedule_messages("x", recipients("flaky", ["ok/1"]), idempotency_key="k-1"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Message.objects.filter(idempotency_key="k-1").count() == 1
    assert Dispatch.objects.count() == 1
    assert len({r[0][0].pk for r in results}) == 1
