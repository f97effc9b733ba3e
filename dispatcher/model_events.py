"""Model-event subscriptions: notify when objects are created, edited or deleted.

Unlike django_notifications, which hooks every save of every model, signals
are connected only for watched models (``DISPATCHER_WATCHED_MODELS`` or
:func:`watch_model`), identified by ``app_label.model``. A save only
schedules work after its transaction commits, and the evaluation runs in a
Celery task that receives ids, not pickled instances (a deleted object's
field values travel as a JSON snapshot, since the row is gone).

A notification shows an object to whoever subscribed, so each watched model
says two things (see :func:`watch_model`):

- which of its fields a notification may show (and a filter may test): no
  others reach a template, whatever the template asks for;
- who may subscribe to which object: a permission hook, asked when the
  subscription is made *and* for every event, since rights change.

Templates are user input: they are compiled by a sandboxed engine without
``{% include %}``, ``{% debug %}``, ``{% load %}`` and the other tags that
reach beyond the object (:mod:`dispatcher.event_templates`).
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import current_app
from django.apps import apps
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.forms.models import model_to_dict
from django.template import TemplateSyntaxError
from django.template.base import FilterExpression, Variable, VariableNode
from django.utils.module_loading import import_string

from messengers.exceptions import InvalidAddress

from . import event_templates
from .api import Recipient, recipients, schedule_messages
from .exceptions import InvalidRecipient, UnknownMessenger
from .messages import ModelEventMessage
from .models import ModelEventSubscription
from .registry import get_registered_messenger_object

logger = logging.getLogger("dispatcher.model_events")

EVENT_TASK = "dispatcher.model_event"
Action = ModelEventSubscription.Action

DEFAULT_SUBJECT = "{{ model }} {{ action }}: {{ object }}"
DEFAULT_BODY = "{{ model }} #{{ pk }} was {{ action_past }}."
#: What every template may use besides the model's shown fields.
EVENT_NAMES = frozenset({"pk", "object", "model", "action", "action_past"})

#: ``permission(recipient, obj) -> bool``: may this user (or raw address)
#: receive events about ``obj``? ``obj`` is None for a subscription to every
#: object of the model (and for one whose object does not exist yet).
Permission = Callable[[Any, models.Model | None], bool]


@dataclass(frozen=True)
class WatchedModel:
    """What subscribers of one model may see, and who may subscribe."""

    model: type[models.Model]
    #: Names of the fields a notification may show and a filter may test.
    fields: frozenset[str]
    permission: Permission

    def field_names(self) -> set[str]:
        """The shown fields under both their names and attnames (``user``, ``user_id``)."""
        names: set[str] = set()
        for field in self.model._meta.concrete_fields:
            if field.name in self.fields or field.attname in self.fields:
                names.update((field.name, field.attname))
        return names


_watched: dict[str, WatchedModel] = {}


def label_of(model: type[models.Model]) -> str:
    return model._meta.label_lower


def resolve_model(model: type[models.Model] | str) -> type[models.Model]:
    """A model class from itself or from ``"app_label.model"``."""
    return apps.get_model(model) if isinstance(model, str) else model


def default_permission(model: type[models.Model], recipient: Any, obj: models.Model | None) -> bool:
    """Without a hook: a user needs the model's ``view`` permission (object-level
    backends are asked about the object too); a raw address is trusted, since
    only code (the site's, or staff in the admin) can subscribe one."""
    if isinstance(recipient, str):
        return True
    if not getattr(recipient, "is_active", False):
        return False
    perm = f"{model._meta.app_label}.view_{model._meta.model_name}"
    return bool(recipient.has_perm(perm) or (obj is not None and recipient.has_perm(perm, obj)))


def watch_model(
    model_or_label: type[models.Model] | str,
    fields: Iterable[str] = (),
    permission: Permission | str | None = None,
) -> WatchedModel:
    """Allow subscriptions to a model's events, and connect its signals.

    ``fields``: the fields a notification may show (names or attnames); by
    default none, so only ``pk``, ``object`` (``str()`` of it), ``model`` and
    the action. ``permission``: a callable ``(recipient, obj) -> bool`` or its
    dotted path; by default :func:`default_permission`. Calling it again for
    the same model replaces both, so an app's ``ready()`` can refine what the
    settings declared.
    """
    model = resolve_model(model_or_label)
    label = label_of(model)
    known = {f.name for f in model._meta.concrete_fields} | {f.attname for f in model._meta.concrete_fields}
    fields = frozenset([fields] if isinstance(fields, str) else fields)
    unknown = fields - known
    if unknown:
        raise ImproperlyConfigured(f"watch_model({label}): no such fields: {', '.join(sorted(unknown))}")
    if isinstance(permission, str):
        permission = import_string(permission)
    if permission is None:
        permission = functools.partial(default_permission, model)
    if not callable(permission):
        raise ImproperlyConfigured(f"watch_model({label}): permission must be callable")
    watched = WatchedModel(model, fields, permission)
    if label not in _watched:
        uid = f"dispatcher.model_events:{label}"
        post_save.connect(_on_save, sender=model, dispatch_uid=uid, weak=False)
        post_delete.connect(_on_delete, sender=model, dispatch_uid=uid, weak=False)
    _watched[label] = watched
    return watched


def unwatch_model(model_or_label: type[models.Model] | str) -> None:
    """Stop watching a model: no more events, and queued ones send nothing."""
    model = resolve_model(model_or_label)
    label = label_of(model)
    if _watched.pop(label, None) is not None:
        uid = f"dispatcher.model_events:{label}"
        post_save.disconnect(sender=model, dispatch_uid=uid)
        post_delete.disconnect(sender=model, dispatch_uid=uid)


def watched_models() -> dict[str, type[models.Model]]:
    return {label: w.model for label, w in _watched.items()}


def watched(model_or_label: type[models.Model] | str) -> WatchedModel | None:
    label = model_or_label if isinstance(model_or_label, str) else label_of(model_or_label)
    return _watched.get(label.lower())


def load_from_settings() -> None:
    """``DISPATCHER_WATCHED_MODELS``: labels, or ``{label: {"fields": [...], "permission": ...}}``."""
    configured = settings.DISPATCHER_WATCHED_MODELS
    if isinstance(configured, Mapping):
        for label, options in configured.items():
            watch_model(label, **(options or {}))
    else:
        for label in configured:
            watch_model(label)


# -- signals: cheap, after commit ------------------------------------------------------
def _delete_snapshot(instance: models.Model) -> dict[str, Any]:
    """What the task needs once the row is gone: its column values (to rebuild
    the object for the permission hook and the shown fields), its pk and str()."""
    columns = {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}
    data = {"pk": instance.pk, "object": str(instance), "columns": columns}
    # Through JSON, as a task argument must be: dates become strings.
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


def _rebuild(model: type[models.Model], snapshot: dict[str, Any]) -> models.Model:
    columns = snapshot.get("columns") or {}
    values = {}
    for field in model._meta.concrete_fields:
        if field.attname in columns:
            try:
                values[field.attname] = field.to_python(columns[field.attname])
            except ValidationError:
                values[field.attname] = None
    return model(**values)


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
    label, pk, snapshot = label_of(sender), instance.pk, _delete_snapshot(instance)
    transaction.on_commit(lambda: _publish(label, pk, Action.DELETE, snapshot), using=kwargs.get("using"))


# -- evaluation, in a task -------------------------------------------------------------
PAST = {Action.CREATE: "created", Action.EDIT: "edited", Action.DELETE: "deleted"}


def shown_values(instance: models.Model, policy: WatchedModel) -> dict[str, Any]:
    """The fields a notification may show, under names and attnames, as JSON values."""
    names = [f.name for f in policy.model._meta.concrete_fields if f.name in policy.field_names()]
    data = model_to_dict(instance, fields=names) if names else {}
    for field in policy.model._meta.concrete_fields:
        if field.name in data and field.attname != field.name:
            data[field.attname] = data[field.name]
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


def _target(subscription: ModelEventSubscription) -> Any:
    return subscription.recipient if subscription.recipient_id else subscription.address


def _usable(subscription: ModelEventSubscription, policy: WatchedModel, instance: models.Model,
            label: str) -> Recipient | None:
    """The recipient of one subscription for this event, or None (logged) when
    it may not or cannot receive it: one bad subscriber never stops the others."""
    who = _target(subscription)
    try:
        allowed = policy.permission(who, instance)
    except Exception:
        logger.exception("model event %s: the permission hook failed for subscription %s; skipped",
                         label, subscription.pk)
        return None
    if not allowed:
        logger.info("model event %s: subscription %s may not see this object; skipped",
                    label, subscription.pk)
        return None
    try:
        for source in (subscription.subject_template, subscription.body_template):
            if source:
                event_templates.compile_template(source)
        [target] = recipients(subscription.messenger, who)
    except (UnknownMessenger, InvalidRecipient, InvalidAddress, TemplateSyntaxError, ValueError) as exc:
        logger.warning("model event %s: skipping subscription %s: %s", label, subscription.pk, exc)
        return None
    return target


def handle_event(label: str, pk: str, action: str, snapshot: dict[str, Any] | None = None) -> int:
    """Notify the subscribers of one event; returns how many dispatches were scheduled."""
    policy = _watched.get(label)
    if policy is None:
        # No longer watched (or never): its subscriptions, valid once or not, send nothing.
        logger.info("model event %s #%s: the model is not watched; nothing sent", label, pk)
        return 0
    model = policy.model
    if snapshot is None:
        instance = model._default_manager.filter(pk=pk).first()
        if instance is None:
            return 0  # deleted before the task ran; the delete event reports it
        shown_object = str(instance)
    else:
        instance = _rebuild(model, snapshot)
        shown_object = str(snapshot.get("object", ""))
    values = shown_values(instance, policy)
    content_type = ContentType.objects.get_for_model(model)
    subscriptions = [
        s
        for s in ModelEventSubscription.objects.filter(
            content_type=content_type, action=action, active=True
        ).filter(models.Q(object_id__isnull=True) | models.Q(object_id=str(pk)))
        .select_related("recipient")
        if _matches(s.filters, values)
    ]
    if not subscriptions:
        return 0
    context = {**values, "pk": pk, "object": shown_object, "model": str(model._meta.verbose_name),
               "action": action, "action_past": PAST[Action(action)]}
    groups: dict[tuple[str, str, str], list[Recipient]] = defaultdict(list)
    fired = []
    for s in subscriptions:
        target = _usable(s, policy, instance, label)
        if target is None:
            continue
        fired.append(s.pk)
        groups[(s.messenger, s.subject_template or DEFAULT_SUBJECT, s.body_template or DEFAULT_BODY)].append(
            target
        )
    scheduled = 0
    with transaction.atomic():
        for (_, subject_t, body_t), targets in groups.items():
            message = ModelEventMessage(
                subject=event_templates.render(subject_t, context),
                text=event_templates.render(body_t, context),
                model=label, action=action, object_id=str(pk),
            )
            [(_, dispatches)] = schedule_messages(message, targets)
            scheduled += len(dispatches)
        ModelEventSubscription.objects.filter(pk__in=fired).update(fired_count=models.F("fired_count") + 1)
        if action == Action.DELETE:
            # The object is gone: its one-object delete subscriptions have done their job.
            ids = [s.pk for s in subscriptions]
            ModelEventSubscription.objects.filter(pk__in=ids, object_id__isnull=False).update(active=False)
    return scheduled


def _matches(filters: dict[str, Any], values: dict[str, Any]) -> bool:
    """Every filter on a shown field matches; a filter on any other field never
    does (it would let a subscriber probe a value it may not see)."""
    if not isinstance(filters, dict):
        return not filters
    return all(field in values and str(values[field]) == str(value) for field, value in filters.items())


# -- validation --------------------------------------------------------------------------
def _variables(template: Any) -> Iterable[Variable]:
    """The variables a compiled template reads in ``{{ }}`` and as filter arguments."""
    for node in template.nodelist.get_nodes_by_type(VariableNode):
        expression: FilterExpression = node.filter_expression
        if isinstance(expression.var, Variable):
            yield expression.var
        for _func, args in expression.filters:
            for is_variable, arg in args:
                if is_variable and isinstance(arg, Variable):
                    yield arg


def _subscription_object(model: type[models.Model], object_id: Any) -> models.Model | None:
    if object_id is None:
        return None
    try:
        return model._default_manager.filter(pk=object_id).first()
    except (ValueError, TypeError, ValidationError):
        raise ValidationError(f"object_id {object_id!r} is not an id of {label_of(model)}") from None


def validate_subscription(subscription: ModelEventSubscription) -> None:
    """Refuse subscriptions to unwatched models, fields a notification may not
    show, templates that do not compile in the sandbox, unusable addresses,
    and recipients the model's permission hook refuses."""
    if subscription.content_type_id is None:
        # A form posted without one (the admin reports the field as well).
        raise ValidationError("a subscription needs a model (content_type)")
    model = subscription.content_type.model_class()
    policy = _watched.get(label_of(model)) if model is not None else None
    if model is None or policy is None:
        raise ValidationError(
            f"{subscription.content_type.app_label}.{subscription.content_type.model} is not watched: "
            "add it to DISPATCHER_WATCHED_MODELS or call watch_model()"
        )
    try:
        get_registered_messenger_object(subscription.messenger)
    except LookupError as exc:
        raise ValidationError(str(exc)) from None
    who = _target(subscription)
    try:
        recipients(subscription.messenger, who)
    except (InvalidRecipient, InvalidAddress) as exc:
        raise ValidationError(f"no usable address: {exc}") from None
    model_fields = {f.name for f in model._meta.concrete_fields} | {
        f.attname for f in model._meta.concrete_fields
    }
    shown = policy.field_names()
    filters = subscription.filters or {}
    if not isinstance(filters, dict):
        raise ValidationError("filters must be a mapping of field names to values")
    unknown = set(filters) - model_fields
    if unknown:
        raise ValidationError(f"unknown fields in filters: {', '.join(sorted(unknown))}")
    hidden = set(filters) - shown
    if hidden:
        raise ValidationError(f"filters on fields a notification may not show: {', '.join(sorted(hidden))}")
    allowed = shown | EVENT_NAMES
    for name in ("subject_template", "body_template"):
        source = getattr(subscription, name)
        if not source:
            continue
        try:
            template = event_templates.compile_template(source)
        except TemplateSyntaxError as exc:
            raise ValidationError(
                f"{name}: {exc} (allowed tags: {', '.join(event_templates.ALLOWED_TAGS)})"
            ) from None
        for var in _variables(template):
            head = str(var.var).split(".")[0]
            if var.lookups and head not in allowed:
                what = "a field a notification may not show" if head in model_fields else "unknown field"
                raise ValidationError(f"{name}: {what} {head!r}")
    obj = _subscription_object(model, subscription.object_id)
    if not policy.permission(who, obj):
        raise ValidationError(f"{who} may not subscribe to {label_of(model)} events"
                              + (f" of object {subscription.object_id}" if subscription.object_id else ""))


# The model runs the validators it is given; it does not import this module.
if validate_subscription not in ModelEventSubscription.validators:
    ModelEventSubscription.validators.append(validate_subscription)


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
    it to one object. Raises ValidationError for an unwatched model, a field a
    notification may not show, a template that does not compile (or uses a
    tag beyond the object), an address the messenger cannot use, or a
    recipient the model's permission hook refuses.
    """
    model = resolve_model(model)
    if action not in Action.values:
        raise ValidationError(f"unknown action {action!r}: use one of {', '.join(Action.values)}")
    is_address = isinstance(recipient, str)
    address = ""
    if is_address:
        try:
            [target] = recipients(messenger, recipient)
        except (UnknownMessenger, InvalidRecipient, InvalidAddress) as exc:
            raise ValidationError(f"no usable address: {exc}") from None
        address = target.address
    return ModelEventSubscription.objects.create(
        content_type=ContentType.objects.get_for_model(model),
        action=action,
        object_id=None if object_id is None else str(object_id),
        filters=filters or {},
        messenger=messenger,
        recipient=None if is_address else recipient,
        address=address,
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


def unsubscribe_dispatch_model_event(dispatch: Any, made_before: datetime | None = None) -> int:
    """Deactivate the model-event subscriptions that made ``dispatch``.

    Only those made before ``made_before`` (the dispatch's creation): a
    subscription made again later was not the reason for this message, and an
    old link must not undo it.
    """
    context = dispatch.message.context
    model = apps.get_model(context["model"])
    qs = ModelEventSubscription.objects.filter(
        content_type=ContentType.objects.get_for_model(model),
        action=context["action"],
        messenger=dispatch.messenger,
        active=True,
    ).filter(models.Q(object_id__isnull=True) | models.Q(object_id=context["object_id"]))
    if made_before is not None:
        qs = qs.filter(created__lte=made_before)
    if dispatch.recipient_id:
        qs = qs.filter(recipient_id=dispatch.recipient_id)
    else:
        qs = qs.filter(recipient__isnull=True, address=dispatch.address)
    return qs.update(active=False)
