"""Signed, expiring per-dispatch links: unsubscribe and mark-read.

A token names one dispatch and one action, is signed with SECRET_KEY (salted)
and expires after DISPATCHER_LINK_MAX_AGE seconds. Every dispatch gets its own
token, so one recipient's link never works for another.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "dispatcher.links"
UNSUBSCRIBE = "u"
READ = "r"


class BadToken(Exception):
    """A link token that is tampered with, expired, or for another action."""


def make_token(dispatch_id: int, action: str) -> str:
    return signing.dumps([dispatch_id, action], salt=SALT, compress=False)


def read_token(token: str, action: str) -> int:
    try:
        dispatch_id, token_action = signing.loads(
            token, salt=SALT, max_age=settings.DISPATCHER_LINK_MAX_AGE
        )
    except signing.SignatureExpired as exc:
        raise BadToken("this link has expired") from exc
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise BadToken("this link is not valid") from exc
    if token_action != action:
        raise BadToken("this link is not valid")
    return int(dispatch_id)


def absolute(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path


def unsubscribe_url(dispatch: Any) -> str:
    return absolute(reverse("dispatcher:unsubscribe", args=[make_token(dispatch.pk, UNSUBSCRIBE)]))


def one_click_unsubscribe_url(dispatch: Any) -> str:
    token = make_token(dispatch.pk, UNSUBSCRIBE)
    return absolute(reverse("dispatcher:unsubscribe-one-click", args=[token]))


def read_pixel_url(dispatch: Any) -> str:
    return absolute(reverse("dispatcher:read-pixel", args=[make_token(dispatch.pk, READ)]))


def unsubscribe_headers(dispatch: Any) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe headers for e-mail."""
    return {
        "List-Unsubscribe": f"<{one_click_unsubscribe_url(dispatch)}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
