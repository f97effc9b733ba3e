"""Names the broker side uses: the deliver task and one queue per messenger.

Kept free of Django imports, because the Celery app (``config/celery.py``)
needs them when it is loaded, before Django's apps are.
"""

DELIVER_TASK = "dispatcher.deliver"


def dispatch_queue(alias: str) -> str:
    """The queue of messenger ``alias``: a slow transport never starves a fast one."""
    return f"dispatch.{alias}"
