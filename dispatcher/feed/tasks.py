"""The feed's Celery task: the cleanup sweep (run hourly by beat)."""

from celery import shared_task

from . import sweeps


@shared_task(name="dispatcher.feed_cleanup", ignore_result=True)
def feed_cleanup() -> int:
    return sweeps.cleanup()
