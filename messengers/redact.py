"""Keep secrets out of logs, stored error texts and the admin.

Messengers register the secrets they hold (tokens, passwords); any text that
leaves the engine goes through :func:`redact`, which also masks well-known
token shapes inside URLs (``/bot<token>/``, ``access_token=...``).
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_secrets: set[str] = set()

_PATTERNS = [
    re.compile(r"(/bot)[^/\s]+"),
    re.compile(
        r"((?:access_token|token|api_key|apikey|key|secret|password|auth|signature|sig)=)[^&\s'\"]+",
        re.I,
    ),
    # "Authorization: <credentials>" or "Authorization Bearer <token>", but not
    # the word in ordinary text ("User authorization failed").
    re.compile(
        r"(Authorization(?::\s*(?:Bearer|Basic|OAuth)?\s*|\s+(?:Bearer|Basic|OAuth)\s+))[^\s,'\"]+", re.I
    ),
    # "scheme://user:password@host", and "scheme://:password@host" (Redis has no user name)
    re.compile(r"(://[^:/@\s]*:)[^@/\s]+(@)"),
]


def register_secret(*values: object) -> None:
    """Remember secret values so they are masked wherever they appear."""
    for value in values:
        if value is not None and len(str(value)) >= 4:
            _secrets.add(str(value))


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return _mask(text, _PATTERNS)


def _mask(text: str, patterns: list[re.Pattern[str]] | tuple[re.Pattern[str], ...]) -> str:
    """Mask what each pattern matches, keeping its group 1 (and group 2, when it has one)."""
    for pattern in patterns:
        text = pattern.sub(lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex == 2 else ""), text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in the records of libraries that log what they send.

    Client libraries (urllib3, oauthlib, slixmpp) log URLs, headers and wire
    bytes at DEBUG; a record is rewritten before any handler sees it.
    ``patterns`` mask what only that library's records hold (an XMPP SASL
    payload, say), as :func:`redact`'s own patterns do: group 1 is kept.
    """

    def __init__(self, patterns: tuple[re.Pattern[str], ...] = ()) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        masked = redact(_mask(message, self.patterns))
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # A traceback quotes exception texts (a database URL with its
            # password, say): formatted and masked once, here; formatters use it.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(_mask(record.exc_text, self.patterns))
        return True


def redact_loggers(*names: str, patterns: tuple[re.Pattern[str], ...] = ()) -> RedactingFilter:
    """Put one :class:`RedactingFilter` on each named logger; returns it.

    On the logger itself, not a handler: a record is filtered where it is
    made, whatever handlers the site configures.
    """
    redacting = RedactingFilter(patterns)
    for name in names:
        logging.getLogger(name).addFilter(redacting)
    return redacting
