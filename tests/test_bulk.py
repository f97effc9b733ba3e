"""Writing a fan-out's rows in bulk: the query count does not grow with it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dispatcher.api import recipients, schedule_messages

pytestmark = pytest.mark.django_db


def test_query_count_does_not_grow_with_recipients():
    def queries(n: int) -> int:
        targets = recipients("smtp", [f"user{i}@example.org" for i in range(n)])
        with CaptureQueriesContext(connection) as ctx:
            schedule_messages("hello", targets)
        return len(ctx.captured_queries)

    assert queries(5) == queries(1500)
