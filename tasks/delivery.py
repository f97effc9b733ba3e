from celery import shared_task

from dispatcher.delivery import deliver_batch


@shared_task(name="dispatcher.deliver", acks_late=True, ignore_result=True)
def deliver(alias: str, ids: list[int]) -> dict[str, int]:
    """Deliver a batch of dispatch ids through one messenger."""
    result = deliver_batch(alias, ids)
    return {"claimed": result.claimed, "sent": result.sent, "error": result.error, "failed": result.failed}
