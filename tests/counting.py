"""Counters against a real count: what every test that changes dispatches can assert."""

from __future__ import annotations

from django.db.models import Count

from dispatcher import counters
from dispatcher.models import Dispatch, DispatchError


def real_totals() -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Dispatches per messenger and status, errors per messenger and permanence,
    counted by the ORM (GROUP BY over the tables), independently of the triggers' SQL."""
    dispatches: dict[str, dict[str, int]] = {}
    for messenger, status, n in (Dispatch.objects.order_by().values_list("messenger", "status")
                                 .annotate(n=Count("id"))):
        dispatches.setdefault(messenger, {})[status] = n
    errors: dict[str, dict[str, int]] = {}
    for messenger, permanent, n in (DispatchError.objects.order_by()
                                    .values_list("dispatch__messenger", "permanent").annotate(n=Count("id"))):
        errors.setdefault(messenger, {})["permanent" if permanent else "temporary"] = n
    return dispatches, errors


def assert_counters_exact() -> None:
    """The counters say what a real count says, by messenger and status and by day."""
    dispatches, errors = real_totals()
    assert counters.totals() == dispatches
    assert counters.totals("error") == errors
    assert counters.counted() == counters.real_counts()
