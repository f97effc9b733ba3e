"""Defaults of the dispatcher's settings, for sites that do not set them.

A site installs the app and sets what it needs (``DISPATCHER_MESSENGERS``,
``SITE_URL``); every other setting the engine reads has the value below until
the site's settings say otherwise. The repository's own ``config/settings.py``
reads each of them from the environment, with these same defaults.
"""

from __future__ import annotations

import copy
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    #: Absolute base of links in messages (unsubscribe, mark read).
    "SITE_URL": "http://127.0.0.1:8000",
    "DISPATCHER_MESSENGERS": {},
    "DISPATCHER_BATCH_SIZE": 500,
    "DISPATCHER_MIN_BATCH_SIZE": 20,
    "DISPATCHER_FANOUT_TASKS": 64,
    "DISPATCHER_LEASE_SECONDS": 300,
    "DISPATCHER_DB_RETRY_MAX": 2.0,
    "DISPATCHER_DB_RETRY_FOR": 600.0,
    #: False for a site without Celery, delivering with dispatcher_send_scheduled from cron.
    "DISPATCHER_PUBLISH_TASKS": True,
    "DISPATCHER_FLUSH_EVERY": 20,
    #: The claim and the outcome writes as prepared statements on PostgreSQL
    #: (False behind PgBouncer's transaction pooling before PgBouncer 1.21).
    "DISPATCHER_PREPARED_STATEMENTS": True,
    #: Flow control (dispatcher.limiter): how far ahead a batch reserves slots,
    #: how long it waits for them, the longest countdown of a postponed row,
    #: a pause when a provider asks to wait without saying how long.
    "DISPATCHER_RATE_LIMIT_URL": "",
    "DISPATCHER_FLOW_HORIZON": 1.0,
    "DISPATCHER_FLOW_BATCH_WAIT": 5.0,
    "DISPATCHER_POSTPONE_COUNTDOWN_MAX": 60.0,
    "DISPATCHER_PAUSE_DEFAULT": 5.0,
    "DISPATCHER_FLUSH_SECONDS": 2.0,
    #: A running batch asks the broker this often (seconds) whether more urgent
    #: tasks wait for its messenger, and gives way (dispatcher.preemption); 0: never.
    "DISPATCHER_PREEMPT_INTERVAL": 0.1,
    #: Envelopes per send() call while it may have to give way.
    "DISPATCHER_PREEMPT_CHUNK": 20,
    "DISPATCHER_REQUEUE_AFTER": 300,
    "DISPATCHER_RETRY_LIMIT": 8,
    "DISPATCHER_RETRY_BASE": 30.0,
    "DISPATCHER_RETRY_MAX": 3600.0,
    "DISPATCHER_CLEANUP_DAYS": 30,
    "DISPATCHER_SWEEP_INTERVAL": 30,
    "DISPATCHER_LINK_MAX_AGE": 60 * 60 * 24 * 60,
    #: Channels of ``fallback_chain(user)`` for a user with no order of their own.
    "DISPATCHER_FALLBACK_CHANNELS": [],
    #: Postmark's webhooks: {"username": ..., "password": ...} (HTTP basic auth in
    #: the webhook URL) and/or {"token": ...} (a secret path); unset refuses every call.
    "DISPATCHER_POSTMARK_WEBHOOK": {},
    #: A Maildir that receives the SMTP bounces (DSNs) sent to the bounce address.
    "DISPATCHER_BOUNCE_MAILBOX": "",
    "DISPATCHER_WATCHED_MODELS": [],
}


def apply_defaults() -> None:
    """Give every setting the site left unset its default (called by the app's ``ready()``)."""
    for name, value in DEFAULTS.items():
        if not hasattr(settings, name):
            setattr(settings, name, copy.deepcopy(value))
