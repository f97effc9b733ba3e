from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.inbox.browser_steps import browser, driver  # noqa: F401  (headless Chromium, for the browser tests)


@pytest.fixture
def users(django_user_model):
    """ann, bob and cat, with passwords "pw"."""
    return SimpleNamespace(**{
        name: django_user_model.objects.create_user(name, f"{name}@example.org", "pw")
        for name in ("ann", "bob", "cat")
    })
