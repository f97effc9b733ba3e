"""What an XMPP error means for a dispatch: retry later, or never.

The engine retries a TemporaryError and fails a PermanentError at once, so
the whole policy for XMPP's error conditions is kept here, in one place.
"""

from __future__ import annotations

from ..exceptions import MessengerError, PermanentError, TemporaryError

# Error conditions worth a retry even when the server types them "cancel".
TEMPORARY_CONDITIONS = frozenset({
    "internal-server-error",
    "remote-server-timeout",
    "resource-constraint",
    "recipient-unavailable",
})
# Stream errors that a retry of the same configuration will not fix.
# (policy-violation is not one: servers use it for rate limits too.)
PERMANENT_STREAM_ERRORS = frozenset({"host-unknown", "not-authorized", "improper-addressing"})


def xmpp_error_to_exception(condition: str, error_type: str, text: str, to: str) -> MessengerError:
    """Map an error stanza bounced for one message to a Temporary/PermanentError.

    RFC 6120 §8.3.2: type ``wait`` means retry later; ``cancel``, ``modify``
    and ``auth`` mean the same stanza will not succeed.
    """
    detail = f"XMPP server refused the message to {to}: {condition or 'error'} ({error_type or 'no type'})"
    if text:
        detail += f": {text}"
    if error_type == "wait" or condition in TEMPORARY_CONDITIONS:
        return TemporaryError(detail)
    return PermanentError(detail)


def stream_error_to_exception(condition: str, text: str, domain: str) -> MessengerError:
    """Map a stream error (the server closing the whole stream) to the batch's outcome."""
    detail = f"XMPP stream error from {domain}: {condition}" + (f": {text}" if text else "")
    return PermanentError(detail) if condition in PERMANENT_STREAM_ERRORS else TemporaryError(detail)
