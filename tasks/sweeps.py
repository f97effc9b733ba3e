from celery import shared_task

from dispatcher import sweeps


@shared_task(name="dispatcher.requeue_due", ignore_result=True)
def requeue_due() -> int:
    return sweeps.requeue_due()


@shared_task(name="dispatcher.reclaim_expired_leases", ignore_result=True)
def reclaim_expired_leases() -> int:
    return sweeps.reclaim_expired_leases()


@shared_task(name="dispatcher.cleanup_sent", ignore_result=True)
def cleanup_sent() -> int:
    return sweeps.cleanup_sent()


@shared_task(name="dispatcher.report_undelivered", ignore_result=True)
def report_undelivered() -> int:
    return sweeps.report_undelivered()


@shared_task(name="dispatcher.maintain_partitions", ignore_result=True)
def maintain_partitions() -> int:
    return len(sweeps.maintain_partitions().dropped)


@shared_task(name="dispatcher.compact_counters", ignore_result=True)
def compact_counters() -> int:
    return sweeps.compact_counters()


@shared_task(name="dispatcher.reconcile_counters", ignore_result=True)
def reconcile_counters() -> int:
    return sweeps.reconcile_counters()
