"""The delivery engine: claim a batch, render, send, record outcomes.

A worker claims its batch with one conditional UPDATE, so two workers handed
the same ids send each dispatch once. No row lock is held during network I/O;
the claim token and lease stand in for it. Outcomes are flushed every
``DISPATCHER_FLUSH_EVERY`` dispatches or ``DISPATCHER_FLUSH_SECONDS``
seconds, which bounds what a killed worker sends twice.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, DateTimeField, F, JSONField, Q, Value, When
from django.utils import timezone

from messengers.base import Envelope, MessageInfo, MessengerBase, Rendered
from messengers.exceptions import PermanentError, RateLimited
from messengers.outcomes import ERROR, FAILED, SENT, Outcome, Outcomes
from messengers.redact import redact

from . import bulk, fallback, links, signals, suppression
from .exceptions import DatabaseUnavailable, UnknownMessageType
from .limiter import FlowConfig, Ticket, flow_config, get_backend
from .messages import UNSUBSCRIBABLE
from .models import Dispatch, DispatchError, Message
from .preemption import Preemption
from .publish import publish
from .registry import get_registered_message_type, get_registered_messenger_object

logger = logging.getLogger("dispatcher.delivery")

#: What a lost database connection raises (a restart, a failover, a network cut).
DATABASE_ERRORS = (OperationalError, InterfaceError)
#: Seconds before the lease ends when a batch stops trying to write its outcomes.
LEASE_MARGIN = 10


class OutcomesUnwritable(BaseException):  # noqa: N818 - a signal to stop, like GeneratorExit
    """Raised from a mark (or a flush) when the database cannot take outcomes:
    a ``BaseException``, so a messenger's ``except Exception`` cannot swallow
    it and go on sending while nothing is recorded."""


def _drop_connection() -> None:
    """Close a connection that broke, so the next query opens a new one."""
    try:
        connection.close()
    except DATABASE_ERRORS:
        pass



def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt: the transport's ``retry_after`` if it
    gave one, else exponential backoff from DISPATCHER_RETRY_BASE, capped at
    DISPATCHER_RETRY_MAX, with "equal jitter" so retries of one outage spread out."""
    if retry_after is not None:
        return max(0.0, float(retry_after))
    ceiling = min(settings.DISPATCHER_RETRY_MAX, settings.DISPATCHER_RETRY_BASE * 2 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


#: A dispatch that failed for good, and its outcome.
Failed = tuple[Dispatch, Outcome]
#: A dispatch to retry, its outcome, and when it is due again.
Retry = tuple[Dispatch, Outcome, Any]


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    error: int = 0
    failed: int = 0


class BatchRecorder(Outcomes):
    """Collects a batch's outcomes (by the rule of :mod:`messengers.outcomes`)
    and writes them in bulk.

    Writes are conditional on the claim token, so a worker whose lease was
    taken over cannot overwrite the new owner's outcome.
    """

    def __init__(self, token: uuid.UUID, dispatches: dict[int, Dispatch]):
        super().__init__()
        self.token = token
        self.dispatches = dispatches
        self.unflushed: dict[int, Outcome] = {}
        self.flush_every = settings.DISPATCHER_FLUSH_EVERY
        self.flush_seconds = settings.DISPATCHER_FLUSH_SECONDS
        self.last_flush = time.monotonic()
        self.result = BatchResult(claimed=len(dispatches))
        #: Until when outcomes may still be written: the claim's lease.
        self.deadline = time.monotonic() + settings.DISPATCHER_LEASE_SECONDS - LEASE_MARGIN
        #: Set when an outcome write failed: the batch stops sending.
        self.blocked = False
        #: Ids handed to the messenger's send().
        self.handed: set[int] = set()
        #: Ids the flow-control gate held back, and when each is due again
        #: (Unix time): given back without an attempt by :meth:`finish`.
        self.postponed: dict[int, float] = {}
        #: Called with each outcome that took effect (the gate watches for rate limits).
        self.watch: Callable[[Any, Outcome], None] | None = None
        #: Concurrent sends of one batch (a messenger's ``concurrency``) record here at once.
        self.lock = threading.RLock()
        #: Signalled when outcomes are recorded or written (see :meth:`write_while`).
        self.changed = threading.Condition(self.lock)
        #: Set while the batch's thread writes for lanes that all send (:meth:`write_while`).
        self.writing = False
        #: Sends of lanes under way while it writes (see :meth:`slot`).
        self.in_flight = 0
        self.owner = threading.get_ident()

    def record(self, dispatch: Any, outcome: Outcome) -> bool:
        if getattr(dispatch, "id", None) not in self.dispatches:
            raise ValueError(f"dispatch {getattr(dispatch, 'id', dispatch)!r} is not part of this batch")
        with self.lock:
            took = super().record(dispatch, outcome)
        if took:
            if self.watch is not None:
                self.watch(dispatch, outcome)
            if threading.get_ident() == self.owner:
                # The batch's own thread writes (with its own database connection);
                # lanes in other threads only record, and it writes theirs too.
                self.maybe_flush()
            elif self.writing:
                self._wait_for_room()
        return took

    def _wait_for_room(self) -> None:
        """Wake the batch's thread: a lane recorded an outcome to write."""
        with self.changed:
            self.changed.notify_all()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Around one send of a lane while the batch's thread writes
        (:meth:`write_while`): the send starts only while the outcomes not yet
        written, and the sends in flight, are fewer than ``flush_every``, so
        a killed worker has sent at most that many whose outcome is unwritten."""
        if not self.writing:
            yield
            return
        with self.changed:
            while self.writing and len(self.unflushed) + self.in_flight >= self.flush_every:
                if self.blocked:
                    raise OutcomesUnwritable("the database cannot take outcomes")
                self.changed.wait(0.1)
            self.in_flight += 1
        try:
            yield
        finally:
            with self.changed:
                self.in_flight -= 1
                self.changed.notify_all()

    def write_while(self, running: Callable[[], bool]) -> None:
        """Write the outcomes lanes record, as they come, while ``running()``
        (the batch's thread, which alone has its database connection, when
        every lane sends from a thread of its own): a write starts once three
        quarters of ``flush_every`` are waiting, so lanes go on sending while
        it is written, and wait only when ``flush_every`` are unwritten or in
        flight (:meth:`slot`)."""
        start = max(1, self.flush_every * 3 // 4)
        self.writing = True
        try:
            while True:
                with self.changed:
                    done = not running()
                    due = (len(self.unflushed) >= start
                           or (self.unflushed and time.monotonic() - self.last_flush >= self.flush_seconds))
                    if not done and not due:
                        self.changed.wait(0.02)
                        continue
                self._flush_or_stop()
                with self.changed:
                    self.changed.notify_all()
                if done:
                    return
        finally:
            with self.changed:
                self.writing = False
                self.changed.notify_all()

    def hand(self, envelopes: list[Envelope]) -> None:
        with self.lock:
            self.handed.update(e.id for e in envelopes if e.id is not None)

    def postpone(self, pk: int, due: float) -> None:
        """Hold ``pk`` back until ``due`` (Unix time): not handed, not an attempt."""
        with self.lock:
            self.postponed[pk] = due

    def recorded(self, dispatch: Any, outcome: Outcome) -> None:
        self.unflushed[dispatch.id] = outcome
        if self.blocked:
            raise OutcomesUnwritable("the database cannot take outcomes")

    # -- writing -----------------------------------------------------------------
    def maybe_flush(self) -> None:
        if (
            len(self.unflushed) >= self.flush_every
            or time.monotonic() - self.last_flush >= self.flush_seconds
        ):
            self._flush_or_stop()

    def _flush_or_stop(self) -> None:
        try:
            self.flush()
        except DATABASE_ERRORS as exc:
            # Stop sending at once: what was sent stays in memory (unflushed)
            # and is written by finish() once the database is back.
            self.blocked = True
            with self.changed:
                self.changed.notify_all()
            logger.warning("outcomes of a batch could not be written (%s): it stops sending", exc)
            raise OutcomesUnwritable(str(exc)) from exc

    def finish(self) -> None:
        """Write what is left, retrying while the database is unreachable and
        the lease lasts; then give back the rows that were never attempted."""
        delay = 0.2
        while True:
            try:
                self.flush()
                self.release_unattempted()
                self.release_postponed()
                return
            except DATABASE_ERRORS as exc:
                if time.monotonic() + delay > self.deadline:
                    logger.error("gave up writing %d outcomes: %s; the lease sweep takes the rows back",
                                 len(self.unflushed), exc)
                    raise
                _drop_connection()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def release_unattempted(self) -> None:
        """Rows claimed but not attempted go back as they were, without an
        attempt counted, and are published again: those never handed to the
        messenger, and, when the batch stopped because outcomes could not be
        written, those handed but not marked (the stop interrupted a mark, so a
        messenger that sends and marks one by one had not sent them). Rows
        left unmarked by anything else (a worker shutdown) stay for the lease
        sweep: whether they were sent is not known."""
        left = [pk for pk in self.dispatches
                if pk not in self.outcomes and pk not in self.postponed
                and (self.blocked or pk not in self.handed)]
        if not left:
            return
        owned = Dispatch.objects.filter(pk__in=left, claim_token=self.token,
                                        status=Dispatch.Status.PROCESSING)
        with transaction.atomic():
            count = owned.update(
                status=Case(When(attempts__lte=1, then=Value(Dispatch.Status.PENDING)),
                            default=Value(Dispatch.Status.ERROR)),
                attempts=F("attempts") - 1, claim_token=None, lease_expires_at=None, queued_at=None,
            )
            transaction.on_commit(lambda: self._publish_again(left))
        logger.info("gave back %d dispatches of a stopped batch, not attempted", count)

    def _publish_again(self, ids: list[int]) -> None:
        """Publish ``ids`` again, each at its message's priority."""
        groups: dict[int, list[tuple[str, int]]] = {}
        for pk in ids:
            dispatch = self.dispatches[pk]
            groups.setdefault(dispatch.message.priority, []).append((dispatch.messenger, pk))
        for priority, pairs in sorted(groups.items(), reverse=True):
            publish(pairs, priority=priority)

    def release_postponed(self) -> None:
        """Give back the rows flow control held back, without an attempt, due
        when the gate said. Those due within DISPATCHER_POSTPONE_COUNTDOWN_MAX
        are published again with a countdown (a task per second of due time),
        so a rate-limited messenger keeps its pace; later ones are left to the
        requeue sweep, as every retry is: a row in the database."""
        postponed = {pk: due for pk, due in self.postponed.items() if pk not in self.outcomes}
        if not postponed:
            return
        now = time.time()
        soon = settings.DISPATCHER_POSTPONE_COUNTDOWN_MAX
        at = {pk: timezone.now() + timedelta(seconds=max(0.0, due - now)) for pk, due in postponed.items()}
        republish = [pk for pk, due in postponed.items() if due - now <= soon]
        owned = Dispatch.objects.filter(pk__in=list(postponed), claim_token=self.token,
                                        status=Dispatch.Status.PROCESSING)
        with transaction.atomic():
            count = owned.update(
                status=Case(When(attempts__lte=1, then=Value(Dispatch.Status.PENDING)),
                            default=Value(Dispatch.Status.ERROR)),
                attempts=F("attempts") - 1, claim_token=None, lease_expires_at=None,
                next_attempt_at=Case(*[When(pk=pk, then=Value(when)) for pk, when in at.items()],
                                     output_field=DateTimeField()),
                # A task is on its way for the ones published below; the sweep takes the others.
                queued_at=Case(When(pk__in=republish, then=Value(timezone.now())), default=Value(None),
                               output_field=DateTimeField()),
            )
            if republish:
                transaction.on_commit(lambda: self._republish(republish, postponed, now))
        logger.info("postponed %d dispatches (flow control), not attempted; %d republished with a countdown",
                    count, len(republish))

    def _republish(self, ids: list[int], due: dict[int, float], now: float) -> None:
        groups: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for pk in ids:
            dispatch = self.dispatches[pk]
            # Whole seconds (rounded up: never early for the claim), so a
            # spread of due times becomes a task per second, not one per row.
            second = max(0, math.ceil(due[pk] - now))
            groups.setdefault((second, dispatch.message.priority), []).append((dispatch.messenger, pk))
        for (second, priority), pairs in sorted(groups.items()):
            publish(pairs, priority=priority, countdown=second or None)

    def _write_bulk(self, now: Any, sent_ids: list[int], results: dict[int, Any],
                    failed: list[Failed], retry: list[Retry]) -> None:
        """PostgreSQL: every outcome of the flush in one UPDATE (see :mod:`dispatcher.bulk`)."""
        rows = [(pk, SENT, None, results.get(pk), pk not in results) for pk in sent_ids]
        rows += [(d.pk, FAILED, None, results.get(d.pk), d.pk not in results) for d, _ in failed]
        rows += [(d.pk, ERROR, at, results.get(d.pk), d.pk not in results) for d, _, at in retry]
        bulk.write_outcomes(self.token, now, rows)

    def _write_orm(self, now: Any, sent_ids: list[int], results: dict[int, Any],
                   failed: list[Failed], retry: list[Retry]) -> None:
        """Other databases: an UPDATE per kind of outcome."""
        owned = Dispatch.objects.filter(claim_token=self.token, status=Dispatch.Status.PROCESSING)
        released = {"lease_expires_at": None, "claim_token": None}
        if results:  # before the updates below release the claim token
            owned.filter(pk__in=list(results)).update(result=Case(
                *[When(pk=pk, then=Value(r, output_field=JSONField())) for pk, r in results.items()],
                output_field=JSONField(),
            ))
        if sent_ids:
            owned.filter(pk__in=sent_ids).update(status=Dispatch.Status.SENT, dispatched_at=now, **released)
        if failed:
            owned.filter(pk__in=[d.pk for d, _ in failed]).update(status=Dispatch.Status.FAILED, **released)
        if retry:
            owned.filter(pk__in=[d.pk for d, _, _ in retry]).update(
                status=Dispatch.Status.ERROR,
                queued_at=None,
                next_attempt_at=Case(
                    *[When(pk=d.pk, then=Value(at)) for d, _, at in retry],
                    output_field=DateTimeField(),
                ),
                **released,
            )

    def flush(self) -> None:
        with self.lock:  # lanes go on recording while this batch's thread writes
            if not self.unflushed:
                return
            outcomes = dict(self.unflushed)
        self.last_flush = time.monotonic()
        now = timezone.now()
        sent_ids: list[int] = []
        results = {pk: o.result for pk, o in outcomes.items() if o.result is not None}
        failed: list[tuple[Dispatch, Outcome]] = []
        retry: list[tuple[Dispatch, Outcome, Any]] = []
        for pk, outcome in outcomes.items():
            dispatch = self.dispatches[pk]
            if outcome.status == SENT:
                sent_ids.append(pk)
            elif outcome.status == FAILED or dispatch.attempts >= _retry_limit(dispatch):
                failed.append((dispatch, outcome))
            else:
                delay = backoff_delay(dispatch.attempts, outcome.retry_after)
                retry.append((dispatch, outcome, now + timedelta(seconds=delay)))

        errors = [(d, o, True) for d, o in failed] + [(d, o, False) for d, o, _ in retry]
        sent_objs = [self.dispatches[pk] for pk in sent_ids]
        failed_objs = [d for d, _ in failed]
        retry_objs = [d for d, _, _ in retry]
        if connection.vendor == "postgresql" and not errors:
            # One statement, committed by itself: no BEGIN and COMMIT round
            # trips around it (a third of a flush's time when all were sent).
            self._write_bulk(now, sent_ids, results, failed, retry)
        else:
            with transaction.atomic():
                if connection.vendor == "postgresql":
                    self._write_bulk(now, sent_ids, results, failed, retry)
                else:
                    self._write_orm(now, sent_ids, results, failed, retry)
                DispatchError.objects.bulk_create(
                    [_error_row(d, o, final, now) for d, o, final in errors]
                )
                if failed:  # the next channel of a chain, written with the outcome
                    fallback.follow([d.pk for d, _ in failed], now)
        transaction.on_commit(lambda: signals.send_outcomes(sent_objs, failed_objs, retry_objs))
        with self.lock:  # written: forget them only now, so a failed write loses nothing
            for pk, outcome in outcomes.items():
                if self.unflushed.get(pk) is outcome:
                    del self.unflushed[pk]
        self.result.sent += len(sent_ids)
        self.result.failed += len(failed)
        self.result.error += len(retry)
        if logger.isEnabledFor(logging.INFO):  # no record per sent dispatch when nobody reads it
            for dispatch in sent_objs:
                logger.info("dispatch %s sent via %s (attempt %s)", dispatch.pk, dispatch.messenger,
                            dispatch.attempts, extra=_log_fields(dispatch, SENT))
        for dispatch, outcome, final in errors:
            fields = _log_fields(dispatch, FAILED if final else ERROR)
            logger.warning("dispatch %s attempt %s: %s", dispatch.pk, dispatch.attempts,
                           _error_text(outcome.error), extra=fields)


def _log_fields(dispatch: Dispatch, outcome: str) -> dict[str, Any]:
    """The structured fields of a delivery log line (see dispatcher.logging)."""
    return {"dispatch_id": dispatch.pk, "messenger": dispatch.messenger, "attempt": dispatch.attempts,
            "outcome": outcome}


def _retry_limit(dispatch: Dispatch) -> int:
    try:
        return get_registered_message_type(dispatch.message.message_type).get_retry_limit()
    except UnknownMessageType:
        return settings.DISPATCHER_RETRY_LIMIT


def _error_text(error: BaseException | str | None) -> str:
    return redact(str(error) if error is not None else "")


def _error_row(dispatch: Dispatch, outcome: Outcome, final: bool, now: Any) -> DispatchError:
    error = outcome.error
    error_class = type(error).__name__ if isinstance(error, BaseException) else "Error"
    return DispatchError(
        dispatch=dispatch,
        attempt=dispatch.attempts,
        error_class=error_class,
        text=_error_text(error)[:4000],
        permanent=final,
        created=now,
    )


def claim(alias: str, ids: list[int], token: uuid.UUID) -> int:
    """Take the due, claimable rows among ``ids`` with one conditional UPDATE;
    return how many were taken (see :func:`claim_rows`)."""
    return len(claim_rows(alias, ids, token))


def claim_rows(alias: str, ids: list[int], token: uuid.UUID) -> list[Dispatch]:
    """Take the due, claimable rows among ``ids`` with one conditional UPDATE,
    and return the rows this token holds, ordered by message and id.

    Rows this token already holds are taken again without a second attempt
    counted: a task retried after losing the database between its claim and
    reading the rows back (same task, same token) resumes its own claim.
    On PostgreSQL the UPDATE returns the rows it took (one round trip);
    elsewhere they are read back by primary key.
    Each row's recipient (a user, when there is one) is attached, read in one
    query, so a template that names the user costs no query per row.
    """
    now = timezone.now()
    lease = now + timedelta(seconds=settings.DISPATCHER_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        rows = bulk.claim_returning(alias, ids, token, now, lease)
    else:
        Dispatch.objects.filter(
            Q(status__in=Dispatch.CLAIMABLE, next_attempt_at__lte=now)
            | Q(status=Dispatch.Status.PROCESSING, claim_token=token),
            pk__in=ids, messenger=alias,
        ).update(
            attempts=Case(When(claim_token=token, then=F("attempts")), default=F("attempts") + 1),
            status=Dispatch.Status.PROCESSING,
            claim_token=token,
            lease_expires_at=lease,
        )
        rows = list(Dispatch.objects.filter(pk__in=ids, claim_token=token, status=Dispatch.Status.PROCESSING))
    rows.sort(key=_batch_order)
    users = {d.recipient_id for d in rows if d.recipient_id is not None}
    if users:
        field = Dispatch._meta.get_field("recipient")
        found = field.related_model._default_manager.in_bulk(users)
        for dispatch in rows:
            if dispatch.recipient_id is not None:
                field.set_cached_value(dispatch, found.get(dispatch.recipient_id))
    return rows


def _batch_order(dispatch: Dispatch) -> tuple[int, int]:
    return dispatch.message_id, dispatch.pk


def deliver_batch(alias: str, ids: list[int], token: uuid.UUID | None = None) -> BatchResult:
    """Deliver the dispatches ``ids`` through messenger ``alias``.

    Raises :class:`DatabaseUnavailable` when the database cannot be reached
    before anything was sent, so the caller (the Celery task) can retry the
    same claim with the same ``token`` once it is back.
    """
    messenger = get_registered_messenger_object(alias)
    token = token or uuid.uuid4()
    try:
        rows = claim_rows(alias, ids, token)
        if not rows:
            return BatchResult()
        # One Message object per message, not one per row as select_related
        # would make (each decoding the same JSON context again).
        messages = Message.objects.in_bulk({d.message_id for d in rows})
        refused = suppression.suppressed(rows, messages)
    except DATABASE_ERRORS as exc:
        _drop_connection()
        raise DatabaseUnavailable(f"the database is unreachable: {exc}") from exc
    for dispatch in rows:
        dispatch.message = messages[dispatch.message_id]
    recorder = BatchRecorder(token, {d.pk: d for d in rows})
    keeper = LeaseKeeper(recorder)
    keeper.start()
    try:
        # A suppressed address fails at once, never reaching the messenger.
        run_batch(messenger, recorder, suppression.fail_suppressed(recorder, rows, refused))
    except OutcomesUnwritable:  # from recording the suppressed rows: run_batch never ran
        recorder.finish()
    finally:
        keeper.stop()
    return recorder.result


class LeaseKeeper(threading.Thread):
    """Renews the batch's lease while it runs, so a batch slowed by a rate
    limit or a slow provider is never taken back from a live worker: only a
    worker that stopped (or lost the database for a whole lease) loses it.

    A thread of its own (with its own database connection), so a messenger
    blocked in one long call still has its lease renewed.
    """

    def __init__(self, recorder: BatchRecorder):
        super().__init__(name="dispatcher-lease", daemon=True)
        self.recorder = recorder
        self.every = max(0.5, settings.DISPATCHER_LEASE_SECONDS / 3)
        self.done = threading.Event()

    def run(self) -> None:
        try:
            while not self.done.wait(self.every):
                self.renew()
        finally:
            connection.close()

    def renew(self) -> None:
        lease = settings.DISPATCHER_LEASE_SECONDS
        try:
            Dispatch.objects.filter(  # by primary key: there is no index of claim tokens
                pk__in=list(self.recorder.dispatches), claim_token=self.recorder.token,
                status=Dispatch.Status.PROCESSING,
            ).update(lease_expires_at=timezone.now() + timedelta(seconds=lease))
        except DATABASE_ERRORS as exc:
            logger.warning("could not renew a batch's lease: %s", exc)
            _drop_connection()
            return
        self.recorder.deadline = time.monotonic() + lease - LEASE_MARGIN

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def run_batch(messenger: MessengerBase, recorder: BatchRecorder, rows: list[Dispatch]) -> None:
    """Render each row into an envelope and hand them to the messenger through
    the flow-control gate; every outcome goes through ``recorder``.

    A messenger with no rate and a concurrency of 1 gets each message's
    envelopes in one ``send()`` call, the gate checking pauses and the circuit
    before each message. One with a rate, a daily quota, a per-recipient rate
    or a concurrency above 1 gets them one at a time from ``concurrency``
    lanes, each a ``for_batch`` copy of its own, each send let through by the
    gate (see :class:`Gate`).
    """
    gate = Gate(messenger, recorder)
    recorder.watch = gate.observe
    preempt = Preemption(messenger.alias, max((d.message.priority for d in rows), default=0))
    batch = messenger.for_batch(recorder)
    try:
        try:
            batch.before_send()
        except Exception as exc:
            logger.warning("%s: before_send failed: %s", messenger.alias, redact(str(exc)))
            for dispatch in rows:
                recorder.exception(dispatch, exc)
            gate.report(rows)
            return
        groups = groupby(rows, key=lambda d: d.message_id)
        work = [_render(batch, recorder, list(group)) for _, group in groups]
        if gate.config.paced:
            _send_paced(messenger, batch, recorder, gate, work, preempt)
        else:
            _send_plain(batch, recorder, gate, work, preempt)
        if preempt.yielded:
            logger.info("%s: a batch gave way to more urgent dispatches", messenger.alias)
    except OutcomesUnwritable:
        pass  # stop sending; finish() writes what was sent once it can
    finally:
        try:
            batch.after_send()
        except Exception as exc:
            # Nothing already marked changes: a failed disconnect is not a failed send.
            logger.warning("%s: after_send failed: %s", messenger.alias, redact(str(exc)))
        recorder.finish()


def envelope_for(dispatch: Dispatch, rendered: Rendered, info: MessageInfo) -> Envelope:
    return Envelope(id=dispatch.pk, address=dispatch.address, rendered=rendered, attempt=dispatch.attempts,
                    message=info, state=dispatch.result or {})


@dataclass
class Work:
    """One message's envelopes, rendered and ready for ``send()``."""

    message_cls: Any
    info: MessageInfo
    envelopes: list[Envelope]


def _render(batch: MessengerBase, recorder: BatchRecorder, dispatches: list[Dispatch]) -> Work:
    message = dispatches[0].message
    try:
        message_cls = get_registered_message_type(message.message_type)
    except UnknownMessageType as exc:
        for dispatch in dispatches:
            recorder.failed(dispatch, exc)
        return Work(None, MessageInfo(message.pk, message.message_type), [])
    info = MessageInfo(message.pk, message.message_type, message.context)
    ready = []
    for dispatch in dispatches:
        try:
            rendered = message_cls.render(message, dispatch)
            if message.context.get(UNSUBSCRIBABLE):
                rendered.headers.update(links.unsubscribe_headers(dispatch))
            envelope = envelope_for(dispatch, rendered, info)
            batch.check_text(envelope)
        except PermanentError as exc:
            recorder.failed(dispatch, exc)
        except Exception as exc:
            recorder.failed(dispatch, PermanentError(f"rendering failed: {type(exc).__name__}: {exc}"))
        else:
            ready.append(envelope)
    return Work(message_cls, info, ready)


def _send(batch: MessengerBase, recorder: BatchRecorder, work: Work, envelopes: list[Envelope]) -> None:
    raised: BaseException | None = None
    recorder.hand(envelopes)
    try:
        batch.send(work.message_cls, work.info, envelopes)
    except Exception as exc:
        raised = exc
    recorder.settle(envelopes, raised)


def _send_plain(batch: MessengerBase, recorder: BatchRecorder, gate: Gate, work: list[Work],
                preempt: Preemption | None = None) -> None:
    """Each message's envelopes in one ``send()``; the gate is asked before each
    (a pause or an open circuit holds back the rest; a half-open circuit lets
    one envelope through as its probe). Where more urgent work can be seen
    waiting (see :mod:`dispatcher.preemption`), envelopes go in chunks of
    DISPATCHER_PREEMPT_CHUNK, and the batch stops between two chunks for it:
    what it did not hand to the messenger is given back."""
    step = max(1, settings.DISPATCHER_PREEMPT_CHUNK) if preempt is not None and preempt.lists else 0
    for item in work:
        ready = item.envelopes
        while ready:
            if step and preempt is not None and preempt.due():
                return
            ticket = gate.check()
            if not ticket.admitted:
                for envelope in ready:
                    gate.postpone(envelope, ticket)
                break
            size = 1 if ticket.probe else step or len(ready)
            chunk, ready = ready[:size], ready[size:]
            _send(batch, recorder, item, chunk)
            gate.report(chunk, ticket.probe)


def _send_paced(messenger: MessengerBase, first: MessengerBase, recorder: BatchRecorder, gate: Gate,
                work: list[Work], preempt: Preemption | None = None) -> None:
    """Envelopes one at a time, each let through by the gate (waiting at most
    DISPATCHER_FLOW_HORIZON for its slot), from ``concurrency`` lanes: one
    with the batch's copy of the messenger, and others each with a copy of
    their own (its own connection), so nothing mutable is shared between
    concurrent sends but the recorder, which takes a lock. With one lane this
    thread sends; with more, every lane has a thread of the pool and this
    thread writes the outcomes meanwhile (:meth:`BatchRecorder.write_while`)."""
    queue: deque[tuple[Work, Envelope]] = deque(
        (item, envelope) for item in work for envelope in item.envelopes
    )
    stop = threading.Event()
    failure: list[BaseException] = []

    def lane(batch: MessengerBase) -> None:
        slept, last_wait = 0.0, 0.0
        budget = settings.DISPATCHER_FLOW_BATCH_WAIT
        while not stop.is_set():
            if preempt is not None and preempt.due():
                return  # what is left in the queue was never handed: given back
            try:
                item, envelope = queue.popleft()
            except IndexError:
                return
            while True:
                if slept >= budget:
                    # This lane has waited long enough for slots: what is left goes
                    # back, due about when the next slot is, instead of holding a
                    # worker process (and a lease) to sleep.
                    ticket = gate.hold(Ticket(False, last_wait, "rate", True))
                    break
                ticket = gate.admit(envelope, hold=False)
                nap = ticket.wait - gate.horizon
                if ticket.admitted or ticket.reason != "rate" or slept + nap > budget:
                    break
                # The next slot is a little beyond the horizon, within what this lane
                # may still wait: wait for the horizon to reach it, then ask again.
                time.sleep(nap + 0.001)
                slept += nap + 0.001
                last_wait = ticket.wait
            if not ticket.admitted:
                gate.hold(ticket)
                gate.postpone(envelope, ticket)
                continue
            if ticket.wait > 0:
                time.sleep(ticket.wait)
                slept += ticket.wait
                last_wait = ticket.wait
            with recorder.slot():
                _send(batch, recorder, item, [envelope])
            gate.report([envelope], ticket.probe)

    def run_lane() -> None:
        batch = messenger.for_batch(recorder)
        try:
            batch.before_send()
        except Exception as exc:
            logger.warning("%s: a lane's before_send failed: %s", messenger.alias, redact(str(exc)))
            connection.close()
            return
        try:
            lane(batch)
        except BaseException as exc:  # OutcomesUnwritable, or a bug: every lane stops
            failure.append(exc)
            stop.set()
        finally:
            try:
                batch.after_send()
            except Exception as exc:
                logger.warning("%s: after_send failed: %s", messenger.alias, redact(str(exc)))
            connection.close()  # this thread's own database connection

    def run_first() -> None:
        try:
            lane(first)
        except BaseException as exc:
            failure.append(exc)
            stop.set()

    lanes = min(gate.config.concurrency, len(queue))
    if lanes < 2:
        lane(first)  # one lane: this thread sends, and writes as it goes
        return
    # Every lane sends from a thread of the pool (the first with the batch's own
    # copy), and this thread writes their outcomes meanwhile: no lane stops
    # sending while outcomes are written.
    futures = [LANES.submit(run_first)] + [LANES.submit(run_lane) for _ in range(1, lanes)]
    try:
        recorder.write_while(lambda: not all(future.done() for future in futures))
    except BaseException:
        stop.set()
        raise
    finally:
        for future in futures:
            future.result()
    if failure:
        raise failure[0]


class LanePool:
    """The threads lanes run in, kept for the worker process's next batches
    (starting 40 threads a batch cost more than the batch's own work). Made
    on first use; a forked child starts without its parent's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executor: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        with self.lock:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(max_workers=1024, thread_name_prefix="dispatcher-lane")
            return self.executor.submit(fn)

    def forget(self) -> None:
        self.lock = threading.Lock()
        self.executor = None


LANES = LanePool()
os.register_at_fork(after_in_child=LANES.forget)


#: How stale a batch's view of the shared pauses may be when it takes no token per send.
RECHECK_SECONDS = 0.02


class Gate:
    """The flow-control step between rendering and ``send()``.

    It asks the shared limiter (:mod:`dispatcher.limiter`: Redis or the
    database, one budget for every worker on every host) before a send, and
    postpones what may not go now: the row goes back with ``next_attempt_at``
    set and no attempt counted (:meth:`BatchRecorder.release_postponed`). It
    watches outcomes: a ``RateLimited`` error pauses the messenger (or the
    messenger's ``throttle_key`` scope) for every worker, and temporary
    failures and successes feed the circuit breaker. One per batch; lanes of
    the batch share it, so its own state is behind a lock.
    """

    def __init__(self, messenger: MessengerBase, recorder: BatchRecorder):
        self.alias = messenger.alias
        self.config: FlowConfig = flow_config(messenger.alias)
        self.recorder = recorder
        self.horizon = settings.DISPATCHER_FLOW_HORIZON
        self.scope_of: Callable[[Any], Any] | None = getattr(messenger, "throttle_key", None)
        self.lock = threading.Lock()
        #: A decision that holds back the whole messenger for the rest of this batch.
        self.held: tuple[Ticket, float] | None = None
        #: Scopes paused from this batch, and until when (monotonic).
        self.paused: dict[Any, float] = {}
        #: Nothing is taken per send (only concurrency is set): the shared state is
        #: read at most every RECHECK_SECONDS by this batch.
        self.unmetered = not self.config.metered and self.config.circuit_failures <= 0
        self.checked_at = -1.0
        #: Postponed so far in this batch: by hold (to spread them) and by recipient.
        self.spread = 0
        self.per_recipient: dict[str, int] = {}

    @property
    def backend(self) -> Any:
        return get_backend()

    def _scope(self, envelope: Any) -> str | None:
        if self.scope_of is None:
            return None
        try:
            scope = self.scope_of(envelope)
        except Exception:
            return None
        return None if scope is None else str(scope)

    def _held(self) -> Ticket | None:
        with self.lock:
            if self.held is None:
                return None
            ticket, until = self.held
        return Ticket(False, max(0.0, until - time.monotonic()), ticket.reason, True)

    def hold(self, ticket: Ticket) -> Ticket:
        """Hold back the rest of this batch (a ``whole`` ticket) for ``ticket.wait``."""
        return self._hold(ticket)

    def _hold(self, ticket: Ticket) -> Ticket:
        if ticket.whole:
            with self.lock:
                self.held = (ticket, time.monotonic() + ticket.wait)
        return ticket

    def check(self) -> Ticket:
        """Pause and circuit only (no token): before each message of a plain batch."""
        held = self._held()
        if held is not None:
            return held
        now = time.monotonic()
        with self.lock:
            if self._read_lately(now):
                return Ticket(True)
        try:
            ticket = self.backend.take(self.config, self.horizon, take=False)
        except Exception as exc:  # the limiter is unreachable: nothing is metered here, so send
            logger.warning("%s: flow state unavailable (%s); sending unchecked", self.alias, exc)
            return Ticket(True)
        if not ticket.admitted:
            return self._hold(ticket)
        self._read_at(now)
        return ticket

    def _read_lately(self, now: float) -> bool:
        """Nothing to take per send (no rate, no quota, no circuit) and the
        shared pauses were read a moment ago: no need to ask again. Under the lock."""
        return self.unmetered and now - self.checked_at < RECHECK_SECONDS

    def _read_at(self, now: float) -> None:
        if self.unmetered:
            with self.lock:
                self.checked_at = now

    def admit(self, envelope: Envelope, hold: bool = True) -> Ticket:
        """One send: admitted (perhaps after a short wait for its slot), or not;
        a refusal for the whole messenger holds back the rest of the batch
        unless ``hold`` is False (the caller decides, see :meth:`hold`)."""
        held = self._held()
        if held is not None:
            return held
        scope = self._scope(envelope)
        now = time.monotonic()
        with self.lock:
            until = self.paused.get(scope, 0.0)
            if until > now:  # paused from this very batch: no need to ask
                return Ticket(False, until - now, "paused", False)
            if self._read_lately(now):
                return Ticket(True)
        try:
            ticket = self.backend.take(self.config, self.horizon, scope=scope, recipient=envelope.address)
        except Exception as exc:
            if not self.config.metered:
                logger.warning("%s: flow state unavailable (%s); sending unchecked", self.alias, exc)
                return Ticket(True)
            logger.warning("%s: the rate limiter is unavailable (%s); postponing", self.alias, exc)
            return self._hold(Ticket(False, 5.0, "limiter unavailable", True))
        if not ticket.admitted:
            return self._hold(ticket) if hold else ticket
        self._read_at(now)
        return ticket

    def postpone(self, envelope: Any, ticket: Ticket) -> None:
        """Hold one envelope back: due when the gate said, spread so that what
        a batch holds back does not all come back at the same instant."""
        interval = self.config.rate.interval if self.config.rate else 0.0
        with self.lock:
            if ticket.whole:
                self.spread += 1
                offset = self.spread * interval + random.uniform(0, min(1.0, max(interval, 0.05)))
            else:
                k = self.per_recipient.get(envelope.address, 0)
                self.per_recipient[envelope.address] = k + 1
                step = self.config.recipient_rate.interval if self.config.recipient_rate else 0.0
                offset = k * step + random.uniform(0, 0.05)
        self.recorder.postpone(envelope.id, time.time() + ticket.wait + offset)

    def observe(self, dispatch: Any, outcome: Outcome) -> None:
        """A ``RateLimited`` outcome pauses the messenger (or its scope) for every worker."""
        if outcome.status != ERROR or not isinstance(outcome.error, RateLimited):
            return
        seconds = outcome.retry_after
        if seconds is None:
            seconds = settings.DISPATCHER_PAUSE_DEFAULT
        if seconds <= 0:
            return
        scope = self._scope(dispatch)
        until = time.monotonic() + seconds
        with self.lock:
            if self.paused.get(scope, 0.0) >= until - 0.05:
                return  # this batch already paused it (the rest of a batch marked "not tried")
            self.paused[scope] = until
            if scope is None:
                self.held = (Ticket(False, seconds, "paused", True), until)
        try:
            self.backend.pause(self.alias, seconds, scope)
        except Exception as exc:
            logger.warning("%s: could not share a pause of %.1fs: %s", self.alias, seconds, exc)
        logger.warning("%s paused for %.1fs%s: the provider asked to wait", self.alias, seconds,
                       f" ({scope})" if scope is not None else "")

    def report(self, dispatches: list[Any], probe: bool = False) -> None:
        """Feed the circuit breaker with what these sends came to."""
        if self.config.circuit_failures <= 0:
            return
        success, trailing = False, 0
        for dispatch in dispatches:
            outcome = self.recorder.get(dispatch)
            if outcome is None:
                continue
            if outcome.status == ERROR:
                if not isinstance(outcome.error, RateLimited):
                    trailing += 1
            else:  # sent, or refused for good: the provider answered
                success, trailing = True, 0
        if not success and not trailing and not probe:
            return
        try:
            self.backend.report(self.config, trailing, success, probe)
        except Exception as exc:
            logger.warning("%s: could not update the circuit breaker: %s", self.alias, exc)
