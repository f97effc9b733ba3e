from celery import shared_task
from django.conf import settings
from django.utils import timezone

from dispatcher import digests, throttle
from dispatcher.receipts import dsn


@shared_task(name="dispatcher.close_digests", ignore_result=True)
def close_digests() -> int:
    """Turn the digest windows that closed into their digests (dispatcher.digests)."""
    return digests.close_due()


@shared_task(name="dispatcher.process_bounces", ignore_result=True)
def process_bounces() -> int:
    """Record the bounces in DISPATCHER_BOUNCE_MAILBOX (a Maildir), if one is set."""
    if not settings.DISPATCHER_BOUNCE_MAILBOX:
        return 0
    return dsn.process_mailbox(settings.DISPATCHER_BOUNCE_MAILBOX)


@shared_task(name="dispatcher.cleanup_throttle_marks", ignore_result=True)
def cleanup_throttle_marks() -> int:
    return throttle.cleanup(timezone.now())
