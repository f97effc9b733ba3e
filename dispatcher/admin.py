from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.filters import AllValuesFieldListFilter, FieldListFilter
from django.contrib.admin.utils import get_last_value_from_parameters
from django.contrib.admin.views.main import ORDER_VAR, PAGE_VAR, ChangeList
from django.contrib.contenttypes.models import ContentType
from django.core.paginator import Page, Paginator
from django.db.models import Field, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from . import counters
from .api import cancel, retry_now
from .model_events import watched_models
from .models import (
    ChannelPreference,
    DeliveryReceipt,
    DigestItem,
    DigestWindow,
    Dispatch,
    DispatchError,
    FallbackHop,
    Message,
    ModelEventSubscription,
    Subscription,
    Suppression,
)
from .registry import get_registered_messenger_objects

#: Most rows the admin counts for a filter the counters cannot answer (a
#: message type, a receipt, a search): past it the list says "10000+" pages'
#: worth and stops counting, where an exact count would scan the table.
COUNT_CAP = 10_000


@admin.action(description="Retry now")
def retry_now_action(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    count = retry_now(queryset)
    modeladmin.message_user(request, f"{count} dispatches queued again.", messages.SUCCESS)


@admin.action(description="Cancel pending and erroring dispatches")
def cancel_action(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    if queryset.model is Message:
        queryset = Dispatch.objects.filter(message__in=queryset)
    count = cancel(queryset)
    modeladmin.message_user(request, f"{count} dispatches cancelled.", messages.SUCCESS)


class DispatchErrorInline(admin.TabularInline):
    model = DispatchError
    extra = 0
    can_delete = False
    fields = ("attempt", "error_class", "text", "permanent", "created")
    readonly_fields = fields
    ordering = ("-attempt", "-id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DeliveryReceiptInline(admin.TabularInline):
    model = DeliveryReceipt
    extra = 0
    can_delete = False
    fields = ("event", "provider", "occurred_at", "reason", "permanent", "created")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FallbackHopInline(admin.StackedInline):
    model = FallbackHop
    fk_name = "dispatch"
    extra = 0
    can_delete = False
    fields = ("hops", "previous", "next", "fell_back_at")
    readonly_fields = fields
    verbose_name = "fallback chain"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="chain")
    def hops(self, obj: FallbackHop) -> str:
        parts = []
        for i, hop in enumerate(obj.chain):
            label = f"{hop.get('messenger')}:{hop.get('address') or '-'}"
            if hop.get("skipped"):
                label += f" (skipped: {hop['skipped']})"
            parts.append(f"[{label}]" if i == obj.position else label)
        return " -> ".join(parts)


class ReceiptFilter(admin.SimpleListFilter):
    title = "receipt"
    parameter_name = "receipt"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(DeliveryReceipt.Event.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(receipts__event=self.value())
        return queryset


class CountedPaginator(Paginator):
    """A paginator told its count (from the counters) or that counts at most
    COUNT_CAP + 1 rows (``SELECT count(*) FROM (... LIMIT 10001)``): the
    changelist of ten million dispatches never runs a full ``COUNT(*)``."""

    def __init__(self, object_list: Any, per_page: int, known: int | None = None, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.known = known

    @cached_property
    def count(self) -> int:
        if self.known is not None:
            return self.known
        return self.object_list.order_by()[: COUNT_CAP + 1].count()

    def page(self, number: Any) -> Page:
        """A page in two reads: its ids, then its rows. Asked for whole rows,
        PostgreSQL reads the primary key backwards and checks each row's
        status, which is the cheapest plan until a backlog holds the newest
        ids: behind a million pending rows, the first page of sent ones took
        700 ms. Asked for ids alone, it reads the filter's own index, (status,
        id) or (messenger, id), without visiting the rows."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        return self._get_page(self.object_list.filter(pk__in=ids), number, self)


class MessengerFilter(AllValuesFieldListFilter):
    """The messenger filter without ``SELECT DISTINCT messenger`` over every
    dispatch: its choices are the registered messengers and those the
    counters still count rows for (one removed from settings, say)."""

    def __init__(self, field: Field, request: HttpRequest, params: dict[str, Any], model: Any,
                 model_admin: Any, field_path: str) -> None:
        self.lookup_kwarg = field_path
        self.lookup_kwarg_isnull = f"{field_path}__isnull"
        self.lookup_val = params.get(self.lookup_kwarg)
        self.lookup_val_isnull = get_last_value_from_parameters(params, self.lookup_kwarg_isnull)
        self.empty_value_display = model_admin.get_empty_value_display()
        self.lookup_choices = sorted(set(get_registered_messenger_objects()) | set(counters.totals()))
        FieldListFilter.__init__(self, field, request, params, model, model_admin, field_path)


#: The changelist's parameters that are no filter (paging, ordering, popups).
_NOT_FILTERS = {PAGE_VAR, ORDER_VAR, "_popup", "_to_field", "e"}


def _counted(request: HttpRequest) -> int | None:
    """The count of the changelist from the counters when its only filters are
    status and messenger (exact); None when something else filters it. Read
    once per request (the paginator and the list both ask)."""
    if not hasattr(request, "_dispatcher_count"):
        request._dispatcher_count = _count_from_counters(request)  # type: ignore[attr-defined]
    return request._dispatcher_count  # type: ignore[attr-defined]


def _count_from_counters(request: HttpRequest) -> int | None:
    filters = {k.removesuffix("__exact"): request.GET[k] for k in request.GET if k not in _NOT_FILTERS}
    if len(filters) != len(set(request.GET) - _NOT_FILTERS) or not set(filters) <= {"status", "messenger"}:
        return None
    by_messenger = counters.totals()
    status, messenger = filters.get("status"), filters.get("messenger")
    return sum(
        n for alias, by_status in by_messenger.items() if messenger is None or alias == messenger
        for s, n in by_status.items() if status is None or s == status
    )


class CountedChangeList(ChangeList):
    """When the counters say a filter matches nothing (failed dispatches of a
    messenger that never fails, say), the list asks the database nothing: that
    query would read one filter's whole index looking for the other."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.none() if _counted(request) == 0 else queryset


@admin.register(Dispatch)
class DispatchAdmin(admin.ModelAdmin):
    """Dispatches, newest first. With ten million rows the list stays fast:
    its count comes from the counters (status and messenger filters) or is
    capped (other filters and the search), each filter's page is read from
    an index backwards ((status, id), (messenger, id)), and facet counts, a
    scan per choice, are off."""

    list_display = (
        "id", "message_link", "messenger", "address", "status", "attempts",
        "next_attempt_at", "dispatched_at", "read_at",
    )
    list_filter = ("status", ("messenger", MessengerFilter), "message__message_type", ReceiptFilter)
    ordering = ("-id",)
    show_facets = admin.ShowFacets.NEVER
    paginator = CountedPaginator
    # Exact match: served by an index, where a "contains" search scans the table.
    search_fields = ("=address",)
    list_select_related = ("message",)
    readonly_fields = (
        "message", "messenger", "recipient", "address", "status", "attempts", "next_attempt_at",
        "queued_at", "lease_expires_at", "claim_token", "dispatched_at", "read_at", "created", "result",
    )
    raw_id_fields = ("message", "recipient")
    inlines = [DispatchErrorInline, DeliveryReceiptInline, FallbackHopInline]
    actions = [retry_now_action, cancel_action]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CountedChangeList

    def get_paginator(self, request: HttpRequest, queryset: QuerySet, per_page: int, orphans: int = 0,
                      allow_empty_first_page: bool = True) -> CountedPaginator:
        return CountedPaginator(queryset, per_page, known=_counted(request), orphans=orphans,
                                allow_empty_first_page=allow_empty_first_page)

    @admin.display(description="message", ordering="message")
    def message_link(self, obj: Dispatch) -> str:
        url = reverse("admin:dispatcher_message_change", args=[obj.message_id])
        return format_html('<a href="{}">{}</a>', url, obj.message)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "message_type", "sender", "priority", "created", "dispatches_link")
    list_filter = ("message_type",)
    search_fields = ("idempotency_key",)
    readonly_fields = ("message_type", "context", "sender", "priority", "idempotency_key", "created",
                       "dispatches_link")
    actions = [cancel_action]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="dispatches")
    def dispatches_link(self, obj: Message) -> str:
        url = reverse("admin:dispatcher_dispatch_changelist") + f"?message__id__exact={obj.pk}"
        return format_html('<a href="{}">dispatches</a>', url)


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("message_type", "messenger", "recipient", "address", "created")
    list_filter = ("message_type", "messenger")
    search_fields = ("address", "recipient__username", "recipient__email")
    raw_id_fields = ("recipient",)


@admin.register(ModelEventSubscription)
class ModelEventSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("content_type", "action", "object_id", "messenger", "recipient", "address",
                    "active", "fired_count")
    list_filter = ("action", "active", "messenger", "content_type")
    search_fields = ("address", "recipient__username", "recipient__email")
    raw_id_fields = ("recipient",)
    readonly_fields = ("fired_count", "created")

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "content_type":
            # Only watched models can be subscribed to.
            labels = watched_models()
            kwargs["queryset"] = ContentType.objects.filter(
                pk__in=[ContentType.objects.get_for_model(m).pk for m in labels.values()]
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    """The suppression list: add an address by hand, or delete an entry once
    the user fixed their mailbox (dispatches to it go out again)."""

    list_display = ("address", "kind", "message_type", "reason", "created", "dispatch")
    list_filter = ("kind", "reason")
    search_fields = ("=address",)
    raw_id_fields = ("dispatch",)
    readonly_fields = ("created",)
    fields = ("kind", "address", "message_type", "reason", "detail", "dispatch", "created")

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        from_form = obj.address
        obj.address = from_form.strip().lower() if obj.kind == "email" else from_form.strip()
        super().save_model(request, obj, form, change)


@admin.register(DeliveryReceipt)
class DeliveryReceiptAdmin(admin.ModelAdmin):
    list_display = ("dispatch", "event", "provider", "occurred_at", "permanent", "reason")
    list_filter = ("event", "provider", "permanent")
    raw_id_fields = ("dispatch",)
    readonly_fields = ("dispatch", "event", "provider", "occurred_at", "reason", "permanent", "payload",
                       "created")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class DigestItemInline(admin.TabularInline):
    model = DigestItem
    extra = 0
    can_delete = False
    fields = ("context", "created")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DigestWindow)
class DigestWindowAdmin(admin.ModelAdmin):
    list_display = ("id", "message_type", "messenger", "address", "status", "item_count", "opened_at",
                    "closes_at", "closed_at", "dispatch")
    list_filter = ("status", "message_type", "messenger")
    search_fields = ("=address",)
    readonly_fields = ("message_type", "messenger", "address", "recipient", "status", "opened_at",
                       "closes_at", "item_count", "closed_at", "message", "dispatch")
    inlines = [DigestItemInline]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ChannelPreference)
class ChannelPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "message_type", "channels")
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)
