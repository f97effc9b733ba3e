import uuid
from typing import Any

from celery import shared_task
from django.conf import settings

from dispatcher.delivery import deliver_batch
from dispatcher.exceptions import DatabaseUnavailable


@shared_task(bind=True, name="dispatcher.deliver", acks_late=True, ignore_result=True)
def deliver(self: Any, alias: str, ids: list[int]) -> dict[str, int]:
    """Deliver a batch of dispatch ids through one messenger.

    When the database is unreachable before anything was sent (a restart, a
    failover), the task retries soon (backoff up to DISPATCHER_DB_RETRY_MAX
    seconds, for DISPATCHER_DB_RETRY_FOR seconds at most), so delivery
    resumes within seconds of the database's return instead of waiting for
    the sweeps. A retry keeps the task id, and so the claim token: rows it
    claimed before losing the database are its own again, with no second
    attempt counted.
    """
    token = _token(self.request.id)
    try:
        result = deliver_batch(alias, ids, token=token)
    except DatabaseUnavailable as exc:
        retries = self.request.retries or 0
        delay = min(settings.DISPATCHER_DB_RETRY_MAX, 0.5 * 2 ** retries)
        budget = settings.DISPATCHER_DB_RETRY_FOR
        max_retries = max(1, int(budget / settings.DISPATCHER_DB_RETRY_MAX) + 4)
        raise self.retry(exc=exc, countdown=delay, max_retries=max_retries) from exc
    return {"claimed": result.claimed, "sent": result.sent, "error": result.error, "failed": result.failed}


def _token(task_id: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(str(task_id))
    except ValueError:
        return uuid.uuid4()
