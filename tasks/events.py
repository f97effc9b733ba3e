from celery import shared_task

from dispatcher.model_events import handle_event


@shared_task(name="dispatcher.model_event", acks_late=True, ignore_result=True)
def model_event(label: str, pk: str, action: str, snapshot: dict | None = None) -> int:
    """Evaluate the subscriptions to one model event and schedule their notifications."""
    return handle_event(label, pk, action, snapshot)
