"""The sweep's periodic task (django-celery-beat), created after ``migrate``;
an existing entry is left alone, so edits made in the admin survive."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver

NAME = "dispatcher: clean up the in-app feed"
TASK = "dispatcher.feed_cleanup"
EVERY = 3600


def ensure_periodic_task(**kwargs: Any) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    if PeriodicTask.objects.filter(name=NAME).exists():
        return
    schedule, _ = IntervalSchedule.objects.get_or_create(every=EVERY, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name=NAME, task=TASK, interval=schedule, queue="dispatcher")


@receiver(post_migrate)
def _after_migrate(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if app_config is not None and app_config.label == "feed":
        ensure_periodic_task()
