"""Who may watch which Profile: how an application writes its permission hook."""

from __future__ import annotations

from typing import Any

#: What a Profile notification may show: its public fields, never ``bio`` or its owner.
PROFILE_FIELDS = ("full_name", "location")


def may_watch_profile(recipient: Any, profile: Any) -> bool:
    """Raw addresses are subscribed by the site's own code. A user may watch
    every profile (each event is checked again) and, of single profiles, those
    nobody owns and their own."""
    if isinstance(recipient, str):
        return True
    if not recipient.is_active:
        return False
    return profile is None or profile.user_id in (None, recipient.pk)
