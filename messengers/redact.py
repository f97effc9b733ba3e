"""Keep secrets out of logs, stored error texts and the admin.

Messengers register the secrets they hold (tokens, passwords); any text that
leaves the engine goes through :func:`redact`, which also masks well-known
token shapes inside URLs (``/bot<token>/``, ``access_token=...``).
"""

from __future__ import annotations

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
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex == 2 else ""), text)
    return text
