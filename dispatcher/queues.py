"""Names the broker side uses: the deliver task and one queue per messenger.

Kept free of Django imports, because the Celery app (``dispatcher/celery.py``)
needs them when it is loaded, before Django's apps are.
"""

DELIVER_TASK = "dispatcher.deliver"
#: Where the sweeps and model events run; every site's workers consume it.
HOUSEKEEPING_QUEUE = "dispatcher"


def dispatch_queue(alias: str) -> str:
    """The queue of messenger ``alias``: a slow transport never starves a fast one."""
    return f"dispatch.{alias}"
