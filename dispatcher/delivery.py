"""The delivery engine: claim a batch, render, send, record outcomes.

A worker claims its batch with one conditional UPDATE, so two workers handed
the same ids send each dispatch once. No row lock is held during network I/O;
the claim token and lease stand in for it. Outcomes are flushed every
``DISPATCHER_FLUSH_EVERY`` dispatches or ``DISPATCHER_FLUSH_SECONDS``
seconds, which bounds what a killed worker sends twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from itertools import groupby
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, DateTimeField, F, JSONField, Q, Value, When
from django.utils import timezone

from messengers.base import Envelope, MessageInfo, MessengerBase, Rendered
from messengers.exceptions import PermanentError
from messengers.outcomes import ERROR, FAILED, SENT, Outcome, Outcomes
from messengers.redact import redact

from . import fallback, links, signals, suppression
from .exceptions import DatabaseUnavailable, UnknownMessageType
from .messages import UNSUBSCRIBABLE
from .models import Dispatch, DispatchError, Message
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

    def record(self, dispatch: Any, outcome: Outcome) -> bool:
        if getattr(dispatch, "id", None) not in self.dispatches:
            raise ValueError(f"dispatch {getattr(dispatch, 'id', dispatch)!r} is not part of this batch")
        return super().record(dispatch, outcome)

    def recorded(self, dispatch: Any, outcome: Outcome) -> None:
        self.unflushed[dispatch.id] = outcome
        if self.blocked:
            raise OutcomesUnwritable("the database cannot take outcomes")
        self.maybe_flush()

    # -- writing -----------------------------------------------------------------
    def maybe_flush(self) -> None:
        if (
            len(self.unflushed) >= self.flush_every
            or time.monotonic() - self.last_flush >= self.flush_seconds
        ):
            try:
                self.flush()
            except DATABASE_ERRORS as exc:
                # Stop sending at once: what was sent stays in memory (unflushed)
                # and is written by finish() once the database is back.
                self.blocked = True
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
                if pk not in self.outcomes and (self.blocked or pk not in self.handed)]
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
            transaction.on_commit(lambda: publish([(self.dispatches[pk].messenger, pk) for pk in left]))
        logger.info("gave back %d dispatches of a stopped batch, not attempted", count)

    def flush(self) -> None:
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

        owned = Dispatch.objects.filter(claim_token=self.token, status=Dispatch.Status.PROCESSING)
        released = {"lease_expires_at": None, "claim_token": None}
        with transaction.atomic():
            if results:  # before the updates below release the claim token
                owned.filter(pk__in=list(results)).update(result=Case(
                    *[When(pk=pk, then=Value(r, output_field=JSONField())) for pk, r in results.items()],
                    output_field=JSONField(),
                ))
            if sent_ids:
                owned.filter(pk__in=sent_ids).update(
                    status=Dispatch.Status.SENT, dispatched_at=now, **released
                )
            if failed:
                owned.filter(pk__in=[d.pk for d, _ in failed]).update(
                    status=Dispatch.Status.FAILED, **released
                )
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
            errors = [(d, o, True) for d, o in failed] + [(d, o, False) for d, o, _ in retry]
            DispatchError.objects.bulk_create(
                [_error_row(d, o, final, now) for d, o, final in errors]
            )
            if failed:  # the next channel of a chain, written with the outcome
                fallback.follow([d.pk for d, _ in failed], now)
            sent_objs = [self.dispatches[pk] for pk in sent_ids]
            failed_objs = [d for d, _ in failed]
            retry_objs = [d for d, _, _ in retry]
            transaction.on_commit(lambda: signals.send_outcomes(sent_objs, failed_objs, retry_objs))
        for pk in outcomes:  # written: forget them only now, so a failed write loses nothing
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
    """Take the due, claimable rows among ``ids`` with one conditional UPDATE.

    Rows this token already holds are taken again without a second attempt
    counted: a task retried after losing the database between its claim and
    reading the rows back (same task, same token) resumes its own claim.
    """
    now = timezone.now()
    return Dispatch.objects.filter(
        Q(status__in=Dispatch.CLAIMABLE, next_attempt_at__lte=now)
        | Q(status=Dispatch.Status.PROCESSING, claim_token=token),
        pk__in=ids, messenger=alias,
    ).update(
        attempts=Case(When(claim_token=token, then=F("attempts")), default=F("attempts") + 1),
        status=Dispatch.Status.PROCESSING,
        claim_token=token,
        lease_expires_at=now + timedelta(seconds=settings.DISPATCHER_LEASE_SECONDS),
    )


def deliver_batch(alias: str, ids: list[int], token: uuid.UUID | None = None) -> BatchResult:
    """Deliver the dispatches ``ids`` through messenger ``alias``.

    Raises :class:`DatabaseUnavailable` when the database cannot be reached
    before anything was sent, so the caller (the Celery task) can retry the
    same claim with the same ``token`` once it is back.
    """
    messenger = get_registered_messenger_object(alias)
    token = token or uuid.uuid4()
    try:
        if not claim(alias, ids, token):
            return BatchResult()
        rows = list(
            Dispatch.objects.filter(claim_token=token, status=Dispatch.Status.PROCESSING)
            .select_related("recipient").order_by("message_id", "id")
        )
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
            Dispatch.objects.filter(
                claim_token=self.recorder.token, status=Dispatch.Status.PROCESSING
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
    """Render each row into an envelope and hand them to the messenger, one
    message at a time; every outcome goes through ``recorder``."""
    batch = messenger.for_batch(recorder)
    try:
        try:
            batch.before_send()
        except Exception as exc:
            logger.warning("%s: before_send failed: %s", messenger.alias, redact(str(exc)))
            for dispatch in rows:
                recorder.exception(dispatch, exc)
            return
        for _, group in groupby(rows, key=lambda d: d.message_id):
            _send_message(batch, recorder, list(group))
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


def _send_message(batch: MessengerBase, recorder: BatchRecorder, dispatches: list[Dispatch]) -> None:
    message = dispatches[0].message
    try:
        message_cls = get_registered_message_type(message.message_type)
    except UnknownMessageType as exc:
        for dispatch in dispatches:
            recorder.failed(dispatch, exc)
        return
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
    if not ready:
        return
    raised: BaseException | None = None
    recorder.handed.update(envelope.id for envelope in ready if envelope.id is not None)
    try:
        batch.send(message_cls, info, ready)
    except Exception as exc:
        raised = exc
    recorder.settle(ready, raised)
