"""Create the sweeps' periodic tasks (django-celery-beat) after migrate.

Existing entries are left alone, so edits made in the admin survive.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_migrate
from django.dispatch import receiver

#: name -> (task, seconds between runs)
PERIODIC_TASKS: dict[str, tuple[str, int]] = {
    "dispatcher: requeue due dispatches": ("dispatcher.requeue_due", 0),
    "dispatcher: reclaim expired leases": ("dispatcher.reclaim_expired_leases", 60),
    "dispatcher: clean up sent dispatches": ("dispatcher.cleanup_sent", 3600),
    # PostgreSQL: months created ahead, retired by DROP (a no-op on SQLite)
    "dispatcher: maintain partitions": ("dispatcher.maintain_partitions", 3600),
    # counts by messenger and status (dispatcher.counters): fold deltas often, check daily
    "dispatcher: compact counters": ("dispatcher.compact_counters", 10),
    "dispatcher: reconcile counters": ("dispatcher.reconcile_counters", 86400),
    "dispatcher: report undelivered dispatches": ("dispatcher.report_undelivered", 86400),
    "dispatcher: close due digests": ("dispatcher.close_digests", 0),
    "dispatcher: process bounce mails": ("dispatcher.process_bounces", 60),
    "dispatcher: forget expired throttle marks": ("dispatcher.cleanup_throttle_marks", 3600),
}


def ensure_periodic_tasks(**kwargs: Any) -> None:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    for name, (task, seconds) in PERIODIC_TASKS.items():
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        every = seconds or settings.DISPATCHER_SWEEP_INTERVAL
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.create(name=name, task=task, interval=schedule, queue="dispatcher")


@receiver(post_migrate)
def _after_migrate(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if app_config is not None and app_config.label == "dispatcher":
        ensure_periodic_tasks()
