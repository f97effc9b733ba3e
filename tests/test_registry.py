"""The registries of messengers and message types."""

from __future__ import annotations

import pytest

from dispatcher.api import (
    get_registered_messenger_object,
    get_registered_messenger_objects,
    register_message_types,
    register_messenger_objects,
)
from dispatcher.exceptions import UnknownMessenger
from dispatcher.messages import MessageBase
from dispatcher.registry import get_registered_message_type
from tests.seed_messenger import MyMessenger


def test_registries():
    assert isinstance(get_registered_messenger_objects()["mymessenger"], MyMessenger)

    class Custom(MessageBase):
        alias = "custom_test_type"

    register_message_types(Custom)
    assert get_registered_message_type("custom_test_type") is Custom
    with pytest.raises(TypeError):
        register_messenger_objects(object())
    with pytest.raises(UnknownMessenger):
        get_registered_messenger_object("missing")
