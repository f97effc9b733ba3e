"""The operator dashboard (staff only) and its retry action.

Everything on the page comes from a fixed set of aggregate queries in
:mod:`dispatcher.dashboard.stats`, so it stays fast with millions of rows.
The only state change is "retry", a POST with a CSRF token that needs the
``dispatcher.change_dispatch`` permission on top of staff status.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST, require_safe

from ..api import retry_now
from ..models import Dispatch
from . import outcomes, stats
from .broker import queue_depths
from .workers import unserved

#: Most dispatches one retry POST may name (a page shows at most FAILURES_MAX).
RETRY_MAX = 500
FAILURES_LIMIT = 25
FAILURES_MAX = 200
CHART_MINUTES = 60


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(value or default)))
    except ValueError:
        return default


@require_safe
@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Counts, throughput chart, queue depths and recent failures on one page."""
    now = timezone.now()
    counts = stats.counts_by_messenger_status()
    messengers = stats.known_messengers(counts)
    due, oldest = stats.backlog(now, counts)
    broker = queue_depths(stats.known_messengers())
    failures_messenger = request.GET.get("messenger") or None
    limit = _int(request.GET.get("limit"), FAILURES_LIMIT, 1, FAILURES_MAX)
    throughput = stats.sent_per_minute(CHART_MINUTES, now)
    beyond = outcomes.outcomes(counts)

    rows = []
    for alias in messengers:
        by_status = counts.get(alias, {})
        rows.append({
            "messenger": alias,
            "counts": [by_status.get(s, 0) for s in stats.STATUSES],
            "total": sum(by_status.values()),
            "due": due.get(alias, 0),
            "broker": broker.depths.get(alias) if broker.ok else None,
        })
    totals = [sum(counts.get(alias, {}).get(s, 0) for alias in messengers) for s in stats.STATUSES]
    # Due dispatches of a messenger no running worker consumes wait for ever: say so.
    not_served, _ = unserved(due) if broker.ok else ([], None)
    context = {
        "unserved": not_served,
        **admin.site.each_context(request),
        "title": "Dispatcher dashboard",
        "now": now,
        "statuses": stats.STATUSES,
        "rows": rows,
        "totals": totals,
        "grand_total": sum(totals),
        "due_total": sum(due.values()),
        "broker": broker,
        "oldest_pending": stats.format_age(oldest),
        "chart_minutes": CHART_MINUTES,
        "chart": throughput.as_chart_data(),
        "sent_last_hour": throughput.total,
        # A messenger without rows has no failures; and an unknown value (a NUL
        # byte, say) never reaches the database, which may refuse it.
        "failures": (stats.recent_failures(limit, failures_messenger, list(counts))
                     if failures_messenger is None or failures_messenger in counts else []),
        "failures_messenger": failures_messenger,
        "failures_limit": limit,
        "can_retry": request.user.has_perm("dispatcher.change_dispatch"),
        "flow": stats.flow(stats.known_messengers()),
        # Receipts, skips, digests, fallbacks (dispatcher.dashboard.outcomes).
        "outcomes": beyond,
        "outcomes_names": [o.replace("_", " ") for o in outcomes.OUTCOMES],
        "outcomes_rows": [(alias, [row.get(o, 0) for o in outcomes.OUTCOMES])
                          for alias, row in sorted(beyond.by_messenger.items())],
        "outcomes_totals": [beyond.totals[o] for o in outcomes.OUTCOMES],
        "outcomes_chart": outcomes.per_minute(CHART_MINUTES, now).as_chart_data(),
    }
    return render(request, "dispatcher/dashboard/index.html", context)


@require_POST
@staff_member_required
def retry(request: HttpRequest) -> HttpResponse:
    """Make the posted dispatches due now (``retry_now``), then back to the dashboard."""
    if not request.user.has_perm("dispatcher.change_dispatch"):
        raise PermissionDenied("retrying dispatches needs the dispatcher.change_dispatch permission")
    back = reverse("dispatcher:dashboard")
    if request.POST.get("messenger"):
        back += "?" + urlencode({"messenger": request.POST["messenger"][:50]})
    ids = []
    for value in request.POST.getlist("dispatch")[: RETRY_MAX + 1]:
        try:
            ids.append(int(value))
        except ValueError:
            messages.error(request, f"Not a dispatch id: {value[:20]!r}.")
            return HttpResponseRedirect(back)
    if len(ids) > RETRY_MAX:
        messages.error(request, f"At most {RETRY_MAX} dispatches can be retried at once.")
    elif not ids:
        messages.warning(request, "No dispatch selected.")
    else:
        count = retry_now(Dispatch.objects.filter(pk__in=ids))
        skipped = len(set(ids)) - count
        text = f"{count} dispatch{'es' if count != 1 else ''} queued again."
        if skipped:
            text += f" {skipped} skipped (already sent, sending or cancelled)."
        messages.success(request, text)
    return HttpResponseRedirect(back)
