"""Registries of configured messengers and message types, keyed by alias."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from messengers.base import MessengerBase

from .exceptions import UnknownMessageType, UnknownMessenger
from .messages import BUILTIN_MESSAGE_TYPES, MessageBase

_messengers: dict[str, MessengerBase] = {}
_message_types: dict[str, type[MessageBase]] = {}


def register_messenger_objects(*messengers: MessengerBase) -> None:
    """Register configured messenger objects under their ``alias``."""
    for messenger in messengers:
        if not isinstance(messenger, MessengerBase):
            raise TypeError(f"{messenger!r} is not a MessengerBase instance")
        if not messenger.alias:
            raise ValueError(f"{type(messenger).__name__} has no alias")
        _messengers[messenger.alias] = messenger


def get_registered_messenger_objects() -> dict[str, MessengerBase]:
    return dict(_messengers)


def get_registered_messenger_object(alias: str) -> MessengerBase:
    try:
        return _messengers[alias]
    except (KeyError, TypeError):
        raise UnknownMessenger(alias) from None


def register_message_types(*message_types: type[MessageBase]) -> None:
    for message_type in message_types:
        if not (isinstance(message_type, type) and issubclass(message_type, MessageBase)):
            raise TypeError(f"{message_type!r} is not a MessageBase subclass")
        _message_types[message_type.alias] = message_type


def get_registered_message_types() -> dict[str, type[MessageBase]]:
    return dict(_message_types)


def get_registered_message_type(alias: str) -> type[MessageBase]:
    try:
        return _message_types[alias]
    except (KeyError, TypeError):
        raise UnknownMessageType(alias) from None


def load_from_settings() -> None:
    """Register the built-in message types and ``settings.DISPATCHER_MESSENGERS``.

    The settings key is the alias, so one class may be configured twice
    (``smtp`` and ``smtp_bulk``, say) with different options.
    """
    register_message_types(*BUILTIN_MESSAGE_TYPES)
    for alias, conf in getattr(settings, "DISPATCHER_MESSENGERS", {}).items():
        cls = import_string(conf["class"])
        messenger = cls(**conf.get("options", {}))
        messenger.alias = alias
        register_messenger_objects(messenger)
