from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.contenttypes.models import ContentType
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from .api import cancel, retry_now
from .model_events import watched_models
from .models import Dispatch, DispatchError, Message, ModelEventSubscription, Subscription


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


@admin.register(Dispatch)
class DispatchAdmin(admin.ModelAdmin):
    list_display = (
        "id", "message_link", "messenger", "address", "status", "attempts",
        "next_attempt_at", "dispatched_at", "read_at",
    )
    list_filter = ("status", "messenger", "message__message_type")
    # Exact match: served by an index, where a "contains" search scans the table.
    search_fields = ("=address",)
    list_select_related = ("message",)
    readonly_fields = (
        "message", "messenger", "recipient", "address", "status", "attempts", "next_attempt_at",
        "queued_at", "lease_expires_at", "claim_token", "dispatched_at", "read_at", "created",
    )
    raw_id_fields = ("message", "recipient")
    inlines = [DispatchErrorInline]
    actions = [retry_now_action, cancel_action]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

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
