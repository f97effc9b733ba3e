"""Signals about deliveries, sent after the outcome is committed.

``dispatch_sent``, ``dispatch_failed`` (final) and ``dispatch_retry`` (a
temporary error; another attempt is scheduled) each carry ``dispatch``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.dispatch import Signal

from .models import Dispatch

logger = logging.getLogger("dispatcher.signals")

dispatch_sent = Signal()
dispatch_failed = Signal()
dispatch_retry = Signal()


def send_outcomes(sent: Sequence[Any], failed: Sequence[Any], retry: Sequence[Any]) -> None:
    for signal, dispatches in ((dispatch_sent, sent), (dispatch_failed, failed), (dispatch_retry, retry)):
        if not signal.has_listeners(Dispatch):
            continue
        for dispatch in dispatches:
            for receiver, response in signal.send_robust(sender=Dispatch, dispatch=dispatch):
                if isinstance(response, Exception):
                    logger.error("receiver %r of %s failed: %r", receiver, signal, response)
