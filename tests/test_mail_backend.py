"""Django's mail through the dispatcher (EMAIL_BACKEND = "dispatcher.mail.EmailBackend").

The reference is Django's own SMTP backend: the same EmailMessage is sent by
it to an aiosmtpd server of its own, and what our worker delivers must read
the same (From, To, Cc, Reply-To, Subject, extra headers, text and HTML
parts, attachment names, types and bytes; Date and Message-ID are per mail).
"""

from __future__ import annotations

import base64
from email.mime.image import MIMEImage
from typing import Any

import pytest
from django.contrib.auth.views import PasswordResetView
from django.core import mail as django_mail
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection, send_mail
from django.urls import include, path

from dispatcher import mail as dispatcher_mail
from dispatcher.api import recipients, register_messenger_objects, retry_now, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.exceptions import InvalidAddress
from dispatcher.messages import EmailHtmlMessage, EmailTextMessage, MailTooLarge
from dispatcher.models import Dispatch, Message
from messengers.base import Attachment
from messengers.postmark import PostmarkMessenger
from messengers.smtp import SMTPMessenger
from tests.fakes.postmark import FakePostmark
from tests.fakes.server import FakeServer
from tests.services import SMTPServer, free_port, wait_for

# The test module is its own URLconf: the password-reset views of django.contrib.auth.
urlpatterns = [
    path("reset-html/", PasswordResetView.as_view(
        html_email_template_name="registration/password_reset_email.html",
        extra_email_context={"site_name": "Dispatcher tests"},
    ), name="reset-html"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("dispatcher/", include("dispatcher.urls")),
]

BACKEND = "dispatcher.mail.EmailBackend"
STANDARD = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "content-type",
            "mime-version", "content-transfer-encoding"}
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f"
       b"\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND"
       b"\xaeB`\x82")


# -- reading a received mail ----------------------------------------------------------------
def _lines(text: str) -> str:
    return text.replace("\r\n", "\n")


def _addresses(mail: Any, name: str) -> list[tuple[str, str]]:
    header = mail[name]
    return [(a.display_name, a.addr_spec) for a in header.addresses] if header is not None else []


def semantic(mail: Any) -> dict[str, Any]:
    """What a reader of the mail sees, without what differs per mail (Date, Message-ID)."""
    text: list[str] = []
    html: list[str] = []
    attachments: list[tuple] = []
    for part in mail.walk():
        if part.is_multipart() and part.get_content_type() != "message/rfc822":
            continue
        disposition = part.get_content_disposition()
        ctype = part.get_content_type()
        if disposition is None and ctype in ("text/plain", "text/html") and part.get_filename() is None:
            (text if ctype == "text/plain" else html).append(_lines(part.get_content()))
            continue
        if ctype == "message/rfc822":
            [inner] = part.get_payload()
            content: Any = semantic(inner)
        elif part.get_content_maintype() == "text":
            content = _lines(part.get_content())
        else:
            content = part.get_payload(decode=True)
        attachments.append((part.get_filename(), ctype, disposition, part["Content-ID"], content))
        if ctype == "message/rfc822":
            break  # its own parts were read by semantic(inner)
    return {
        "from": _addresses(mail, "From"), "to": _addresses(mail, "To"), "cc": _addresses(mail, "Cc"),
        "reply-to": _addresses(mail, "Reply-To"), "subject": str(mail["Subject"]),
        "headers": {k.lower(): str(v) for k, v in mail.items() if k.lower() not in STANDARD},
        "text": text, "html": html, "attachments": attachments,
    }


def sent_by_django(message: EmailMessage) -> tuple[Any, list[str]]:
    """The same message through Django's SMTP backend to an aiosmtpd server of its own."""
    server = SMTPServer()
    try:
        connection = get_connection("django.core.mail.backends.smtp.EmailBackend",
                                    host="127.0.0.1", port=server.port, use_tls=False, use_ssl=False)
        assert connection.send_messages([message]) == 1
        [(_, rcpt)] = server.handler.envelopes
        [received] = server.messages
        return received, rcpt
    finally:
        server.stop()


def rich_message() -> EmailMultiAlternatives:
    message = EmailMultiAlternatives(
        subject="Réunion : ordre du jour",
        body="Bonjour,\nvoici l'ordre du jour.\n",
        from_email='"Équipe, Support" <support@example.org>',
        to=["Ann Example <ann@example.org>", "bob@example.org"],
        cc=["Jörg Müller <joerg@example.org>"],
        bcc=["hidden@example.org"],
        reply_to=["Replies <reply@example.org>"],
        headers={"X-Campaign": "q3-report", "List-Id": "<reports.example.org>"},
    )
    message.attach_alternative(
        "<p>Bonjour, <b>voici</b> l'ordre du jour.</p><img src=\"cid:logo@example.org\">", "text/html"
    )
    message.attach("report.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40, "application/pdf")
    message.attach("notes.txt", "Première ligne\nSecond line\n")
    message.attach("données.csv", b"a,b\n1,2\n", "text/csv")
    # Not UTF-8: Django makes it application/octet-stream.
    message.attach("blob.bin", b"\xff\xfe\x00 binary", "text/plain")
    logo = MIMEImage(PNG, "png")
    logo.add_header("Content-ID", "<logo@example.org>")
    logo.add_header("Content-Disposition", "inline", filename="logo.png")
    message.attach(logo)
    message.attach("forwarded.eml", EmailMessage("Inner", "inner body\n", "x@example.org", ["y@example.org"]),
                   "message/rfc822")
    return message


# -- through real worker processes -------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_rich_mail_through_a_worker_reads_as_djangos_smtp_backend_writes_it(workers, sink, settings):
    settings.EMAIL_BACKEND = BACKEND
    workers("mail", smtp_port=sink.port)
    message = rich_message()
    assert message.send() == 1

    wait_for(lambda: len(sink.messages) >= 4, 60, 0.2, "the four recipients' mails")
    expected, expected_rcpt = sent_by_django(message)
    assert sorted(rcpt for _, rcpts in sink.handler.envelopes for rcpt in rcpts) == sorted(expected_rcpt) == [
        "ann@example.org", "bob@example.org", "hidden@example.org", "joerg@example.org"]
    reference = semantic(expected)
    assert reference["attachments"][3][:2] == ("blob.bin", "application/octet-stream")
    assert len(reference["attachments"]) == 6 and reference["html"] and reference["text"]
    for received in sink.messages:
        assert semantic(received) == reference
        assert received["Bcc"] is None and "hidden@example.org" not in str(received.get_all("To") or [])
        assert received["Message-ID"] and received["Date"]
    rows = Dispatch.objects.filter(message__message_type="django_email")
    assert sorted(rows.values_list("address", "status")) == [
        ("ann@example.org", "sent"), ("bob@example.org", "sent"),
        ("hidden@example.org", "sent"), ("joerg@example.org", "sent")]


@pytest.mark.e2e
@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_password_reset_mail_goes_through_a_worker(workers, sink, settings, client, monkeypatch,
                                                   django_user_model):
    settings.EMAIL_BACKEND = BACKEND
    handed: list[EmailMessage] = []
    send_messages = dispatcher_mail.EmailBackend.send_messages

    def recording(self, messages):
        handed.extend(messages)
        return send_messages(self, messages)

    monkeypatch.setattr(dispatcher_mail.EmailBackend, "send_messages", recording)
    django_user_model.objects.create_user("ann", "ann@example.org", "an old password")
    workers("reset", smtp_port=sink.port)

    response = client.post("/reset-html/", {"email": "ann@example.org"})
    assert response.status_code == 302
    [handed_message] = handed
    wait_for(lambda: sink.messages, 60, 0.2, "the password-reset mail")
    [received] = sink.messages
    expected, rcpt = sent_by_django(handed_message)
    assert rcpt == ["ann@example.org"] and sink.handler.envelopes[0][1] == rcpt
    assert semantic(received) == semantic(expected)
    body = semantic(received)
    assert "/accounts/reset/" in body["text"][0] and "/accounts/reset/" in body["html"][0]
    assert "Dispatcher tests" in body["subject"]
    [dispatch] = Dispatch.objects.all()
    assert (dispatch.status, dispatch.messenger) == ("sent", "smtp")
    assert dispatch.message.message_type == "django_email"


# -- in process: the rest of the contract --------------------------------------------------------
@pytest.mark.django_db
def test_send_mail_schedules_one_dispatch_per_recipient_and_nothing_is_sent_before(settings, smtp_server):
    settings.EMAIL_BACKEND = BACKEND
    to = ["a@example.org", "A <a@example.org>", "b@example.org"]
    assert send_mail("Hi", "Body", "from@example.org", to) == 1
    [message] = Message.objects.all()
    assert message.message_type == "django_email"
    assert sorted(message.dispatches.values_list("address", flat=True)) == ["a@example.org", "b@example.org"]
    assert smtp_server.messages == []  # scheduled, not sent by the web process
    deliver_batch("smtp", list(message.dispatches.values_list("pk", flat=True)))
    assert [m["To"] for m in smtp_server.messages] == [", ".join(to)] * 2
    assert {m["From"] for m in smtp_server.messages} == {"from@example.org"}


@pytest.mark.django_db
def test_a_mail_over_the_size_limit_is_refused_with_the_reason(settings):
    settings.EMAIL_BACKEND = BACKEND
    settings.DISPATCHER_MAIL_MAX_BYTES = 1000
    message = EmailMessage("Big", "x", "from@example.org", ["a@example.org"])
    message.attach("big.bin", b"\0" * 1001, "application/octet-stream")
    with pytest.raises(MailTooLarge, match=r"weighs 1002 bytes .* at most 1000 .*DISPATCHER_MAIL_MAX_BYTES"):
        message.send()
    assert get_connection(BACKEND, fail_silently=True).send_messages([message]) == 0
    with pytest.raises(MailTooLarge):
        EmailTextMessage("Big", "x", attachments=[("big.bin", b"\0" * 1000)])
    with pytest.raises(MailTooLarge):
        EmailHtmlMessage("Big", "<p>" + "x" * 1000 + "</p>")
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_a_bad_address_raises_unless_fail_silently(settings):
    settings.EMAIL_BACKEND = BACKEND
    with pytest.raises(InvalidAddress):
        send_mail("Hi", "Body", "from@example.org", ["not an address"])
    assert send_mail("Hi", "Body", "from@example.org", ["not an address"], fail_silently=True) == 0
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_another_email_messenger_by_setting(settings, smtp_server):
    register_messenger_objects(SMTPMessenger("tx@example.org", host="127.0.0.1", port=smtp_server.port))
    other = SMTPMessenger("tx@example.org", host="127.0.0.1", port=smtp_server.port)
    other.alias = "smtp_tx"
    register_messenger_objects(other)
    settings.EMAIL_BACKEND = BACKEND
    settings.DISPATCHER_MAIL_MESSENGER = "smtp_tx"
    send_mail("Hi", "Body", None, ["a@example.org"])
    [dispatch] = Dispatch.objects.all()
    assert dispatch.messenger == "smtp_tx"
    # ... and per connection: get_connection(BACKEND, messenger="smtp")
    get_connection(BACKEND, messenger="smtp").send_messages([EmailMessage("x", "y", None, ["b@example.org"])])
    assert Dispatch.objects.get(address="b@example.org").messenger == "smtp"


@pytest.mark.django_db
def test_what_cannot_be_carried_is_refused(settings):
    settings.EMAIL_BACKEND = BACKEND
    message = EmailMultiAlternatives("Invite", "text", "from@example.org", ["a@example.org"])
    message.attach_alternative("BEGIN:VCALENDAR", "text/calendar")
    with pytest.raises(dispatcher_mail.UnsupportedMail, match="text/calendar"):
        message.send()
    with pytest.raises(django_mail.BadHeaderError):  # as Django's SMTP backend refuses it
        send_mail("Hi\nBcc: x@example.org", "Body", "from@example.org", ["a@example.org"])


@pytest.mark.django_db
def test_email_message_types_carry_attachments(smtp_server, tmp_path):
    path = tmp_path / "agenda.txt"
    path.write_text("1. Welcome\n")
    [(_, dispatches)] = schedule_messages(
        [EmailHtmlMessage("Agenda", "<p>See attached</p>", attachments=[
            ("logo.png", PNG, "image/png"), path, Attachment("raw.bin", b"\x00\x01", "application/x-raw")])],
        recipients("smtp", "a@example.org"))
    [(_, more)] = schedule_messages(EmailTextMessage("Text", "plain", attachments=[("é.txt", "ü")]),
                                    recipients("smtp", "b@example.org"))
    deliver_batch("smtp", [d.pk for d in dispatches + more])
    by_to = {m["To"]: semantic(m) for m in smtp_server.messages}
    assert by_to["a@example.org"]["html"] == ["<p>See attached</p>"]
    assert by_to["a@example.org"]["attachments"] == [
        ("logo.png", "image/png", "attachment", None, PNG),
        ("agenda.txt", "text/plain", "attachment", None, "1. Welcome\n"),
        ("raw.bin", "application/x-raw", "attachment", None, b"\x00\x01"),
    ]
    assert by_to["b@example.org"]["attachments"] == [("é.txt", "text/plain", "attachment", None, "ü")]
    assert by_to["b@example.org"]["text"] == ["plain"]


@pytest.mark.django_db
def test_postmark_carries_the_attachments_and_headers(settings):
    fake = FakePostmark("pm-token")
    server = FakeServer(fake)
    try:
        register_messenger_objects(PostmarkMessenger("pm-token", "noreply@example.org", api_base=server.url))
        settings.EMAIL_BACKEND = BACKEND
        settings.DISPATCHER_MAIL_MESSENGER = "postmark"
        message = rich_message()
        message.send()
        ids = list(Dispatch.objects.values_list("pk", flat=True))
        deliver_batch("postmark", ids)
        assert set(Dispatch.objects.values_list("status", flat=True)) == {"sent"}
        by_to = {r.json["To"]: r.json for r in server.received}
    finally:
        server.stop()
    assert sorted(by_to) == ["ann@example.org", "bob@example.org", "hidden@example.org", "joerg@example.org"]
    sent = by_to["hidden@example.org"]
    assert sent["From"] == '"Équipe, Support" <support@example.org>'
    assert sent["ReplyTo"] == "Replies <reply@example.org>"
    assert sent["Subject"] == "Réunion : ordre du jour"
    assert sent["HtmlBody"].startswith("<p>Bonjour") and sent["TextBody"].startswith("Bonjour,")
    assert {h["Name"]: h["Value"] for h in sent["Headers"]} == {
        "X-Campaign": "q3-report", "List-Id": "<reports.example.org>"}
    names = [(a["Name"], a["ContentType"], a.get("ContentID")) for a in sent["Attachments"]]
    assert names == [("report.pdf", "application/pdf", None), ("notes.txt", "text/plain", None),
                     ("données.csv", "text/csv", None), ("blob.bin", "application/octet-stream", None),
                     ("logo.png", "image/png", "cid:logo@example.org"),
                     ("forwarded.eml", "message/rfc822", None)]
    assert base64.b64decode(sent["Attachments"][4]["Content"]) == PNG


@pytest.mark.django_db
def test_a_django_mail_is_retried_until_the_server_takes_it(settings):
    port = free_port()
    register_messenger_objects(SMTPMessenger("noreply@example.org", host="127.0.0.1", port=port, timeout=2))
    settings.EMAIL_BACKEND = BACKEND
    send_mail("Retry me", "Body", "from@example.org", ["a@example.org"])
    [dispatch] = Dispatch.objects.all()
    deliver_batch("smtp", [dispatch.pk])  # nobody listens on the port yet
    dispatch.refresh_from_db()
    assert dispatch.status == "error" and dispatch.errors.count() == 1
    server = SMTPServer.on_port(port)
    try:
        retry_now(Dispatch.objects.filter(pk=dispatch.pk))
        deliver_batch("smtp", [dispatch.pk])
        dispatch.refresh_from_db()
        assert dispatch.status == "sent" and dispatch.attempts == 2
        assert [m["Subject"] for m in server.messages] == ["Retry me"]
    finally:
        server.stop()
