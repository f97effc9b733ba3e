"""Signals about deliveries, and about what recipients do with a message.

``dispatch_sent``, ``dispatch_failed`` (final) and ``dispatch_retry`` (a
temporary error; another attempt is scheduled) each carry ``dispatch``, sent
after the outcome is committed.

``unsubscribed`` and ``dispatch_read`` are sent when a recipient uses a link
of a message (the unsubscribe page or RFC 8058 one-click, the read pixel),
with ``request``, ``message`` and ``dispatch``, by the message type class;
``unsubscribed`` also carries ``removed`` (how many subscriptions went) and
``dispatch_read`` ``first`` (whether this is the first time it was read).
``unsubscribe_failed`` and ``read_failed`` are sent for a link that is
tampered with or expired, with ``request``, ``message=None``,
``dispatch=None`` and ``reason``. Under django-sitemessage's names:
``sig_unsubscribe_success``, ``sig_unsubscribe_failed``,
``sig_mark_read_success``, ``sig_mark_read_failed``.
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

unsubscribed = Signal()
unsubscribe_failed = Signal()
dispatch_read = Signal()
read_failed = Signal()

# django-sitemessage's names for the same signals.
sig_unsubscribe_success = unsubscribed
sig_unsubscribe_failed = unsubscribe_failed
sig_mark_read_success = dispatch_read
sig_mark_read_failed = read_failed


def send_outcomes(sent: Sequence[Any], failed: Sequence[Any], retry: Sequence[Any]) -> None:
    for signal, dispatches in ((dispatch_sent, sent), (dispatch_failed, failed), (dispatch_retry, retry)):
        if not signal.has_listeners(Dispatch):
            continue
        for dispatch in dispatches:
            for receiver, response in signal.send_robust(sender=Dispatch, dispatch=dispatch):
                if isinstance(response, Exception):
                    logger.error("receiver %r of %s failed: %r", receiver, signal, response)


def send_link_signal(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send a recipient's-link signal; a failing receiver is logged, never shown to the recipient."""
    if not signal.has_listeners(sender):
        return
    for receiver, response in signal.send_robust(sender=sender, **kwargs):
        if isinstance(response, Exception):
            logger.error("receiver %r of %s failed: %r", receiver, signal, response)
