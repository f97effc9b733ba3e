"""pytest plugin: the ``notifications`` fixture (see :mod:`dispatcher.testing`).

Registered through the ``pytest11`` entry point, so pytest loads it in any
project that installs the package; this repository, which runs from its
checkout, imports the fixture in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from dispatcher.testing import Notifications


@pytest.fixture
def notifications(db: Any) -> Iterator[Notifications]:
    """In-memory messengers in place of the configured ones, and deliveries
    in the test's process: ``notifications.sent(...)``, ``notifications.outbox``."""
    # Imported here: pytest loads plugins before Django is set up, and the
    # engine needs the app registry.
    from dispatcher.testing import Notifications

    captured = Notifications().start()
    try:
        yield captured
    finally:
        captured.stop()
