"""SMS against a fake Twilio Messages API on loopback."""

from __future__ import annotations

import pytest

from dispatcher.api import recipients, register_messenger_objects
from dispatcher.models import Dispatch
from messengers.exceptions import InvalidAddress
from messengers.sms import TwilioSMSMessenger
from tests.fakes.twilio import FakeTwilio, twilio_error

from .conftest import delay, deliver, errors

pytestmark = pytest.mark.django_db

SID, TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-auth-token-secret-55"


@pytest.fixture
def fake(serve):
    app = FakeTwilio(SID, TOKEN)
    app.server = serve(app)
    register_messenger_objects(TwilioSMSMessenger(SID, TOKEN, "+15005550006", api_base=app.server.url))
    return app


def test_sms_is_sent_with_basic_auth(fake):
    [dispatch] = deliver("sms", "Your code is 1234", "+49 151 1234-5678")
    assert dispatch.status == "sent" and dispatch.address == "+4915112345678"
    [request] = fake.server.received
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{SID}/Messages.json")
    assert request.headers["authorization"].startswith("Basic ")
    assert request.form == {"To": "+4915112345678", "From": "+15005550006", "Body": "Your code is 1234"}
    # Twilio's message SID is kept: status callbacks are matched by it.
    assert dispatch.result["status"] == "queued" and dispatch.result["sid"].startswith("SM")


def test_messaging_service_instead_of_a_from_number(fake):
    register_messenger_objects(TwilioSMSMessenger(SID, TOKEN, messaging_service_sid="MG123",
                                                  api_base=fake.server.url))
    deliver("sms", "Hi", "+15551230000")
    assert fake.messages == [{"To": "+15551230000", "MessagingServiceSid": "MG123", "Body": "Hi"}]


@pytest.mark.parametrize("address", ["015112345678", "+0123", "+1234567890123456", "call me"])
def test_addresses_must_be_e164(fake, address):
    with pytest.raises(InvalidAddress, match="E.164"):
        recipients("sms", address)
    assert not Dispatch.objects.exists()


def test_invalid_number_is_permanent(fake):
    fake.invalid.add("+15551230000")
    [dispatch] = deliver("sms", "Hi", "+15551230000")
    assert dispatch.status == "failed"
    assert "error 21211: Invalid 'To' Phone Number" in errors(dispatch)[0].text


@pytest.mark.parametrize(("reply", "min_delay"), [
    (twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "30"}), 25),
    (twilio_error(503, 20503, "Service Unavailable"), 0),
    (twilio_error(500, 20500, "Internal Server Error"), 0),
])
def test_rate_limits_and_server_errors_are_temporary(fake, reply, min_delay):
    fake.replies = [reply]
    [dispatch] = deliver("sms", "Hi", "+15551230000")
    assert dispatch.status == "error"
    assert delay(dispatch) >= min_delay


def test_wrong_auth_token_is_permanent(fake):
    register_messenger_objects(TwilioSMSMessenger(SID, "wrong-token-xyz", "+15005550006",
                                                  api_base=fake.server.url))
    [dispatch] = deliver("sms", "Hi", "+15551230000")
    assert dispatch.status == "failed"
    assert "error 20003" in errors(dispatch)[0].text


def test_a_text_over_1600_characters_is_refused_at_scheduling_and_nothing_is_written(fake):
    from dispatcher.api import recipients, schedule_messages
    from dispatcher.exceptions import MessageTooLong
    from dispatcher.models import Dispatch

    with pytest.raises(MessageTooLong, match="1601 characters; messenger 'sms' takes at most 1600"):
        schedule_messages("x" * 1601, recipients("sms", "+4915112345678"))
    assert not Dispatch.objects.exists() and fake.server.received == []
