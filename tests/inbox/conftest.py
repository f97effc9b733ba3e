from __future__ import annotations

from types import SimpleNamespace

import pytest

from dispatcher.inbox.signals import message_read, message_sent
from tests.inbox.browser_steps import browser, driver  # noqa: F401  (headless Chromium, for the browser tests)


@pytest.fixture
def users(django_user_model):
    """Three users with e-mail addresses: ann, bob and cat."""
    return SimpleNamespace(**{
        name: django_user_model.objects.create_user(name, f"{name}@example.org", "pw")
        for name in ("ann", "bob", "cat")
    })


@pytest.fixture
def signals():
    """What message_sent and message_read received, in order."""
    seen: dict[str, list[dict]] = {"sent": [], "read": []}

    def on_sent(sender, **kwargs):
        seen["sent"].append({"sender": sender, **kwargs})

    def on_read(sender, **kwargs):
        seen["read"].append({"sender": sender, **kwargs})

    message_sent.connect(on_sent, weak=False)
    message_read.connect(on_read, weak=False)
    yield seen
    message_sent.disconnect(on_sent)
    message_read.disconnect(on_read)
