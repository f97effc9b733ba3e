"""Model-event subscriptions: notify when objects are created, edited or deleted.

Unlike django_notifications, which hooks every save of every model, signals
are connected only for watched models (``DISPATCHER_WATCHED_MODELS`` or
:func:`watch_model`), identified by ``app_label.model``. A save only
schedules work after its transaction commits, and the evaluation runs in a
Celery task that receives ids, not pickled instances (a deleted object's
field values travel as a JSON snapshot, since the row is gone).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from celery import current_app
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.forms.models import model_to_dict
from django.template import Context, Template, TemplateSyntaxError
from django.template.base import VariableNode

from .models import ModelEventSubscription

logger = logging.getLogger("dispatcher.model_events")

EVENT_TASK = "dispatcher.model_event"
Action = ModelEventSubscription.Action

DEFAULT_SUBJECT = "{{ model }} {{ action }}: {{ object }}"
DEFAULT_BODY = "{{ model }} #{{ pk }} was {{ action_past }}."

_watched: dict[str, type[models.Model]] = {}


def label_of(model: type[models.Model]) -> str:
    return model._meta.label_lower


def resolve_model(model: type[models.Model] | str) -> type[models.Model]:
    """A model class from itself or from ``"app_label.model"``."""
    return apps.get_model(model) if isinstance(model, str) else model


def watch_model(model_or_label: type[models.Model] | str) -> None:
    """Allow subscriptions to a model's events, and connect its signals."""
    model = resolve_model(model_or_label)
    label = label_of(model)
    if label in _watched:
        return
    _watched[label] = model
    uid = f"dispatcher.model_events:{label}"
    post_save.connect(_on_save, sender=model, dispatch_uid=uid, weak=False)
    post_delete.connect(_on_delete, sender=model, dispatch_uid=uid, weak=False)


def watched_models() -> dict[str, type[models.Model]]:
    return dict(_watched)


def load_from_settings() -> None:
    from django.conf import settings

    for label in settings.DISPATCHER_WATCHED_MODELS:
        watch_model(label)


# -- signals: cheap, after commit ------------------------------------------------------
def _snapshot(instance: models.Model) -> dict[str, Any]:
    data = model_to_dict(instance)
    data["pk"] = instance.pk
    data["object"] = str(instance)
    # Through JSON, as a task argument must be: dates become strings.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


def _publish(label: str, pk: Any, action: str, snapshot: dict[str, Any] | None) -> None:
    current_app.send_task(EVENT_TASK, args=(label, str(pk), action, snapshot), queue="dispatcher")


def _has_subscribers(model: type[models.Model], actions: list[str]) -> bool:
    content_type = ContentType.objects.get_for_model(model)  # cached after the first call
    return ModelEventSubscription.objects.filter(
        content_type=content_type, action__in=actions, active=True
    ).exists()


def _on_save(sender: type[models.Model], instance: models.Model, created: bool, raw: bool = False,
             **kwargs: Any) -> None:
    if raw:  # fixtures loading
        return
    action = Action.CREATE if created else Action.EDIT
    if not _has_subscribers(sender, [action]):
        return
    label, pk = label_of(sender), instance.pk
    transaction.on_commit(lambda: _publish(label, pk, action, None), using=kwargs.get("using"))


def _on_delete(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    if not _has_subscribers(sender, [Action.DELETE]):
        return
    label, pk, snapshot = label_of(sender), instance.pk, _snapshot(instance)
    transaction.on_commit(lambda: _publish(label, pk, Action.DELETE, snapshot), using=kwargs.get("using"))


# -- evaluation, in a task -------------------------------------------------------------
PAST = {Action.CREATE: "created", Action.EDIT: "edited", Action.DELETE: "deleted"}


def handle_event(label: str, pk: str, action: str, snapshot: dict[str, Any] | None = None) -> int:
    """Notify the subscribers of one event; returns how many dispatches were scheduled."""
    from .api import recipients, schedule_messages
    from .messages import ModelEventMessage

    model = apps.get_model(label)
    if snapshot is None:
        instance = model._default_manager.filter(pk=pk).first()
        if instance is None:
            return 0  # deleted before the task ran; the delete event reports it
        snapshot = _snapshot(instance)
    content_type = ContentType.objects.get_for_model(model)
    subscriptions = [
        s
        for s in ModelEventSubscription.objects.filter(
            content_type=content_type, action=action, active=True
        ).filter(models.Q(object_id__isnull=True) | models.Q(object_id=str(pk)))
        .select_related("recipient")
        if _matches(s.filters, snapshot)
    ]
    if not subscriptions:
        return 0
    context = {**snapshot, "model": model._meta.verbose_name, "action": action,
               "action_past": PAST[Action(action)]}
    groups: dict[tuple[str, str, str], list[ModelEventSubscription]] = defaultdict(list)
    for s in subscriptions:
        key = (s.messenger, s.subject_template or DEFAULT_SUBJECT, s.body_template or DEFAULT_BODY)
        groups[key].append(s)
    scheduled = 0
    with transaction.atomic():
        for (messenger, subject_t, body_t), subs in groups.items():
            targets = recipients(messenger, [s.recipient if s.recipient_id else s.address for s in subs])
            message = ModelEventMessage(
                subject=_render(subject_t, context), text=_render(body_t, context),
                model=label, action=action, object_id=str(pk),
            )
            [(_, dispatches)] = schedule_messages(message, targets)
            scheduled += len(dispatches)
        ids = [s.pk for s in subscriptions]
        ModelEventSubscription.objects.filter(pk__in=ids).update(fired_count=models.F("fired_count") + 1)
        if action == Action.DELETE:
            # The object is gone: its one-object delete subscriptions have done their job.
            ModelEventSubscription.objects.filter(pk__in=ids, object_id__isnull=False).update(active=False)
    return scheduled


def _matches(filters: dict[str, Any], snapshot: dict[str, Any]) -> bool:
    return all(str(snapshot.get(field)) == str(value) for field, value in (filters or {}).items())


def _render(template: str, context: dict[str, Any]) -> str:
    return Template(template).render(Context(context, autoescape=False)).strip()


# -- validation --------------------------------------------------------------------------
def validate_subscription(subscription: ModelEventSubscription) -> None:
    """Refuse subscriptions to unwatched models, unknown fields and broken templates."""
    from .registry import get_registered_messenger_object

    model = subscription.content_type.model_class()
    if model is None or label_of(model) not in _watched:
        raise ValidationError(
            f"{subscription.content_type.app_label}.{subscription.content_type.model} is not watched: "
            "add it to DISPATCHER_WATCHED_MODELS or call watch_model()"
        )
    try:
        get_registered_messenger_object(subscription.messenger)
    except LookupError as exc:
        raise ValidationError(str(exc)) from None
    fields = {f.name for f in model._meta.concrete_fields} | {
        f.attname for f in model._meta.concrete_fields
    }
    unknown = set(subscription.filters or {}) - fields
    if unknown:
        raise ValidationError(f"unknown fields in filters: {', '.join(sorted(unknown))}")
    allowed = fields | {"pk", "object", "model", "action", "action_past"}
    for name in ("subject_template", "body_template"):
        source = getattr(subscription, name)
        if not source:
            continue
        try:
            template = Template(source)
        except TemplateSyntaxError as exc:
            raise ValidationError(f"{name}: {exc}") from None
        for node in template.nodelist.get_nodes_by_type(VariableNode):
            var = node.filter_expression.var
            root = getattr(var, "var", None)
            head = str(root).split(".")[0] if root is not None else ""
            if head and getattr(var, "lookups", None) and head not in allowed:
                raise ValidationError(f"{name}: unknown field {head!r}")


# -- API ---------------------------------------------------------------------------------
def subscribe_to_model_event(
    model: type[models.Model] | str,
    action: str,
    recipient: Any,
    messenger: str = "smtp",
    object_id: Any = None,
    filters: dict[str, Any] | None = None,
    subject_template: str = "",
    body_template: str = "",
) -> ModelEventSubscription:
    """Subscribe a user or a raw address to ``create``/``edit``/``delete`` of a model.

    ``model`` is a model class or ``"app_label.model"``; ``object_id`` limits
    it to one object. Raises ValidationError for an unwatched model, unknown
    fields or a template that does not compile.
    """
    model = resolve_model(model)
    if action not in Action.values:
        raise ValidationError(f"unknown action {action!r}: use one of {', '.join(Action.values)}")
    is_address = isinstance(recipient, str)
    return ModelEventSubscription.objects.create(
        content_type=ContentType.objects.get_for_model(model),
        action=action,
        object_id=None if object_id is None else str(object_id),
        filters=filters or {},
        messenger=messenger,
        recipient=None if is_address else recipient,
        address=recipient if is_address else "",
        subject_template=subject_template,
        body_template=body_template,
    )


def unsubscribe_from_model_event(
    model: type[models.Model] | str, action: str, recipient: Any, object_id: Any = None
) -> int:
    """Deactivate matching subscriptions; returns how many."""
    model = resolve_model(model)
    qs = ModelEventSubscription.objects.filter(
        content_type=ContentType.objects.get_for_model(model), action=action, active=True,
        object_id=None if object_id is None else str(object_id),
    )
    qs = qs.filter(address=recipient) if isinstance(recipient, str) else qs.filter(recipient=recipient)
    return qs.update(active=False)


def unsubscribe_dispatch_model_event(dispatch: Any) -> int:
    """Deactivate the model-event subscriptions that made ``dispatch``."""
    context = dispatch.message.context
    model = apps.get_model(context["model"])
    qs = ModelEventSubscription.objects.filter(
        content_type=ContentType.objects.get_for_model(model),
        action=context["action"],
        messenger=dispatch.messenger,
        active=True,
    ).filter(models.Q(object_id__isnull=True) | models.Q(object_id=context["object_id"]))
    if dispatch.recipient_id:
        qs = qs.filter(recipient_id=dispatch.recipient_id)
    else:
        qs = qs.filter(recipient__isnull=True, address=dispatch.address)
    return qs.update(active=False)
