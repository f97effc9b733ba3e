"""The delivery engine, in process, against a real SMTP server."""

from __future__ import annotations

import uuid

import pytest
from aiosmtpd.smtp import AuthResult

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.delivery import claim, deliver_batch
from dispatcher.messages import EmailHtmlMessage, EmailTextMessage
from dispatcher.models import Dispatch
from messengers.smtp import SMTPMessenger
from tests.services import SMTPServer

pytestmark = pytest.mark.django_db


def ids(dispatches) -> list[int]:
    return [d.pk for d in dispatches]


def test_batch_is_delivered_and_marked_sent(smtp_server):
    [(_, dispatches)] = schedule_messages(
        EmailTextMessage("Greetings", "Body text"), recipients("smtp", ["a@example.org", "b@example.org"])
    )
    result = deliver_batch("smtp", ids(dispatches))
    assert (result.claimed, result.sent) == (2, 2)
    assert sorted(m["To"] for m in smtp_server.messages) == ["a@example.org", "b@example.org"]
    for mail in smtp_server.messages:
        assert mail["Subject"] == "Greetings"
        assert mail.get_content().strip() == "Body text"
        assert mail["Date"]
    rows = Dispatch.objects.filter(pk__in=ids(dispatches))
    assert {(d.status, d.attempts, d.claim_token, d.lease_expires_at) for d in rows} == {
        ("sent", 1, None, None)
    }
    assert all(d.dispatched_at for d in rows)


def test_message_id_is_stable_per_dispatch(smtp_server):
    [(_, [dispatch])] = schedule_messages("x", recipients("smtp", "a@example.org"))
    messenger = SMTPMessenger("noreply@example.org")
    expected = f"<dispatch-{dispatch.pk}.{dispatch.message_id}@example.org>"
    # The same from another process's messenger object: a retried send carries the same id.
    other = SMTPMessenger("other@example.org")
    assert messenger.message_id(dispatch) == other.message_id(dispatch) == expected
    deliver_batch("smtp", [dispatch.pk])
    assert smtp_server.messages[0]["Message-ID"] == expected


def test_html_mail_has_both_parts(smtp_server):
    [(_, ds)] = schedule_messages(EmailHtmlMessage("S", "<p>Hi <i>there</i></p>"),
                                  recipients("smtp", "a@example.org"))
    deliver_batch("smtp", ids(ds))
    mail = smtp_server.messages[0]
    assert mail.get_body(("html",)).get_content().strip() == "<p>Hi <i>there</i></p>"
    assert mail.get_body(("plain",)).get_content().strip() == "Hi there"


def test_second_claim_of_the_same_ids_gets_nothing(smtp_server):
    [(_, dispatches)] = schedule_messages("x", recipients("smtp", ["a@example.org", "b@example.org"]))
    assert claim("smtp", ids(dispatches), uuid.uuid4()) == 2
    assert claim("smtp", ids(dispatches), uuid.uuid4()) == 0
    assert deliver_batch("smtp", ids(dispatches)).claimed == 0
    assert smtp_server.messages == []


def test_sent_dispatches_are_not_sent_again(smtp_server):
    [(_, dispatches)] = schedule_messages("x", recipients("smtp", ["a@example.org"]))
    deliver_batch("smtp", ids(dispatches))
    deliver_batch("smtp", ids(dispatches))
    assert len(smtp_server.messages) == 1


def test_wrong_messenger_alias_claims_nothing(smtp_server):
    [(_, dispatches)] = schedule_messages("x", recipients("smtp", ["a@example.org"]))
    assert deliver_batch("mymessenger", ids(dispatches)).claimed == 0


def test_seed_messenger_marks_sent(django_user_model):
    user2 = django_user_model.objects.create(username="user2")
    [(_, dispatches)] = schedule_messages(
        "Some plain text message", recipients("mymessenger", ["user1--address", user2])
    )
    assert [d.address for d in dispatches] == ["user1--address", "user2--address"]
    deliver_batch("mymessenger", ids(dispatches))
    assert set(Dispatch.objects.values_list("status", flat=True)) == {"sent"}


class AuthRecorder:
    def __init__(self):
        self.attempts = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        self.attempts.append(mechanism)
        return AuthResult(success=True)


def test_tls_required_but_not_offered_fails_without_sending_login():
    auth = AuthRecorder()
    server = SMTPServer(authenticator=auth, auth_require_tls=False)
    try:
        register_messenger_objects(
            SMTPMessenger("from@example.org", "user1", "user1password", host="127.0.0.1",
                          port=server.port, use_tls=True)
        )
        [(_, [dispatch])] = schedule_messages("x", recipients("smtp", "a@example.org"))
        deliver_batch("smtp", [dispatch.pk])
    finally:
        server.stop()
    dispatch.refresh_from_db()
    assert dispatch.status == "failed"
    assert "does not offer STARTTLS" in dispatch.errors.get().text
    assert auth.attempts == [] and server.messages == []


def test_login_is_used_when_given():
    auth = AuthRecorder()
    server = SMTPServer(authenticator=auth, auth_require_tls=False)
    try:
        register_messenger_objects(
            SMTPMessenger("from@example.org", "user1", "user1password", host="127.0.0.1", port=server.port)
        )
        [(_, [dispatch])] = schedule_messages("x", recipients("smtp", "a@example.org"))
        deliver_batch("smtp", [dispatch.pk])
    finally:
        server.stop()
    dispatch.refresh_from_db()
    assert dispatch.status == "sent"
    assert auth.attempts and len(server.messages) == 1


class CountingSink:
    """Counts SMTP sessions (EHLOs) as well as mails."""

    def __init__(self):
        from dispatcher.smtp_sink import SinkHandler

        self.sink = SinkHandler()
        self.ehlos = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):
        return await self.sink.handle_DATA(server, session, envelope)


@pytest.mark.parametrize("keepalive, sessions", [(30.0, 1), (0, 3)])
def test_connection_is_kept_between_batches_of_one_process(keepalive, sessions):
    handler = CountingSink()
    server = SMTPServer(handler)
    try:
        register_messenger_objects(SMTPMessenger("f@example.org", host="127.0.0.1", port=server.port,
                                                 keepalive=keepalive))
        for i in range(3):
            [(_, dispatches)] = schedule_messages(f"batch {i}", recipients("smtp", f"u{i}@example.org"))
            deliver_batch("smtp", ids(dispatches))
    finally:
        server.stop()
    assert len(handler.sink.messages) == 3
    assert handler.ehlos == sessions


def test_a_dead_kept_connection_is_replaced():
    port = None
    for attempt in range(2):
        server = SMTPServer() if port is None else SMTPServer.on_port(port)
        port = server.port
        try:
            register_messenger_objects(SMTPMessenger("f@example.org", host="127.0.0.1", port=port))
            [(_, [dispatch])] = schedule_messages("x", recipients("smtp", f"u{attempt}@example.org"))
            deliver_batch("smtp", [dispatch.pk])
            dispatch.refresh_from_db()
            assert dispatch.status == "sent"  # the second batch did not use the dead connection
            assert len(server.messages) == 1
        finally:
            server.stop()
