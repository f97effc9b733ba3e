"""The smtp messenger against aiosmtpd on loopback: what reaches the wire.

The fast tests; tests/messengers/test_smtp_postfix.py runs the same
promises against a real Postfix. The sink here keeps each mail's raw bytes
as received and the MAIL FROM options, so line endings, SMTPUTF8 and the
envelope can be asserted exactly.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from email import message_from_string, policy
from email.headerregistry import Address
from types import SimpleNamespace
from typing import Any

import dkim
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from config import messenger_settings
from dispatcher.api import (
    get_registered_messenger_object,
    recipients,
    register_message_types,
    register_messenger_objects,
    schedule_messages,
)
from dispatcher.delivery import deliver_batch
from dispatcher.messages import EmailHtmlMessage, EmailTextMessage, MessageBase
from dispatcher.models import Dispatch
from dispatcher.smtp_sink import SinkHandler
from messengers.base import Envelope, Rendered
from messengers.exceptions import InvalidAddress, MessengerConfigurationError
from messengers.outcomes import Outcomes
from messengers.smtp import SMTPMessenger
from tests.messengers.conftest import deliver, errors
from tests.services import BASE, SMTPServer

pytestmark = pytest.mark.django_db

BARE_LF = re.compile(rb"(?<!\r)\n")
BARE_CR = re.compile(rb"\r(?!\n)")


class RawSink(SinkHandler):
    """Keeps the bytes of each mail as they came off the wire, and MAIL FROM's options."""

    def __init__(self) -> None:
        super().__init__()
        self.raw: list[bytes] = []
        self.mail_options: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.raw.append(envelope.original_content)
        self.mail_options.append(list(envelope.mail_options))
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def sink() -> Iterator[Callable[..., tuple[SMTPServer, RawSink]]]:
    """``sink(smtputf8=False, **messenger_options)``: an aiosmtpd server and the
    ``smtp`` messenger pointing at it."""
    servers: list[SMTPServer] = []

    def start(smtputf8: bool = False, from_email: str = "noreply@example.org",
              server_options: dict | None = None, **options: Any) -> tuple[SMTPServer, RawSink]:
        handler = RawSink()
        server = SMTPServer(handler, enable_SMTPUTF8=smtputf8, **(server_options or {}))
        servers.append(server)
        register_messenger_objects(SMTPMessenger(from_email, host="127.0.0.1", port=server.port, **options))
        return server, handler

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sink_with() -> Iterator[Callable[..., SMTPServer]]:
    """``sink_with(handler, **messenger_options)``: a server with that handler, and ``smtp`` on it."""
    servers: list[SMTPServer] = []

    def start(handler: Any, **options: Any) -> SMTPServer:
        server = SMTPServer(handler)
        servers.append(server)
        register_messenger_objects(SMTPMessenger("noreply@example.org", host="127.0.0.1", port=server.port,
                                                 **options))
        return server

    yield start
    for server in servers:
        server.stop()


def statuses(rows: list[Dispatch]) -> dict[str, str]:
    return {d.address: d.status for d in rows}


# -- 1. CRLF on the wire ------------------------------------------------------------------

TEXTS = {
    "ascii": "Line one\nLine two\n",
    "crlf and lone cr": "One\r\nTwo\rThree\n",
    "dots": ".\n..leading dots\n.\n",
    "non-ascii": "Grüße aus Köln\nЗдравствуйте\n",
    "long line": "x" * 1200 + "\nend\n",
}


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_every_line_on_the_wire_ends_in_crlf_and_no_blank_line_is_added(sink, text):
    _, handler = sink()
    [row] = deliver("smtp", EmailTextMessage("Lines", text), "a@example.org")
    assert row.status == "sent"
    [raw] = handler.raw
    assert not BARE_LF.search(raw), raw[-200:]
    assert not BARE_CR.search(raw), raw[-200:]
    [mail] = handler.messages
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    # (the parser keeps CRLF in the payload, as it came)
    assert mail.get_content().replace("\r\n", "\n") == expected  # no stray blank line at the end


def test_an_html_mail_has_crlf_only(sink):
    _, handler = sink()
    [row] = deliver("smtp", EmailHtmlMessage("Grüße", "<p>Hallo\n<b>Welt</b></p>\n"), "a@example.org")
    assert row.status == "sent"
    assert not BARE_LF.search(handler.raw[0]) and not BARE_CR.search(handler.raw[0])
    html = handler.messages[0].get_body(("html",)).get_content()
    assert html.replace("\r\n", "\n") == "<p>Hallo\n<b>Welt</b></p>\n"


# -- 2. non-ASCII addresses ---------------------------------------------------------------------

def test_a_non_ascii_local_part_fails_only_its_dispatch_when_the_server_lacks_smtputf8(sink):
    server, handler = sink(smtputf8=False)
    rows = deliver("smtp", "x", ["a@example.org", "grüße@example.org", "b@example.org"])
    assert statuses(rows) == {"a@example.org": "sent", "grüße@example.org": "failed", "b@example.org": "sent"}
    [error] = errors(rows[1])
    assert "SMTPUTF8" in error.text
    assert sorted(rcpt for _, (rcpt,) in handler.envelopes) == ["a@example.org", "b@example.org"]
    # The kept connection is clean: the next batch on it is sent.
    [row] = deliver("smtp", "next", "c@example.org")
    assert row.status == "sent", errors(row)
    assert len(handler.messages) == 3


def test_a_non_ascii_local_part_goes_with_smtputf8_when_offered(sink):
    _, handler = sink(smtputf8=True)
    [row] = deliver("smtp", EmailTextMessage("Hallo", "x"), "grüße@bücher.example")
    assert row.status == "sent", errors(row)
    [(mail_from, rcpts)] = handler.envelopes
    assert rcpts == ["grüße@xn--bcher-kva.example"]
    assert "SMTPUTF8" in handler.mail_options[0]
    assert "To: grüße@xn--bcher-kva.example\r\n".encode() in handler.raw[0]
    utf8_mail = message_from_string(handler.raw[0].decode("utf-8"), policy=policy.default)
    assert utf8_mail["To"].addresses[0].addr_spec == "grüße@xn--bcher-kva.example"


def test_an_internationalized_domain_is_idna_encoded(sink):
    _, handler = sink(smtputf8=False)
    [row] = deliver("smtp", "x", "anna@bücher.example")
    assert row.status == "sent", errors(row)
    assert handler.envelopes == [("noreply@example.org", ["anna@xn--bcher-kva.example"])]
    assert "SMTPUTF8" not in handler.mail_options[0]
    assert handler.messages[0]["To"] == "anna@xn--bcher-kva.example"


def test_a_domain_idna_cannot_encode_is_refused_at_scheduling():
    register_messenger_objects(SMTPMessenger("noreply@example.org"))
    with pytest.raises(InvalidAddress, match="domain"):
        recipients("smtp", "anna@bü..example")


def test_a_failed_transaction_never_leaves_the_connection_dirty(sink):
    """A recipient the server refuses mid-batch, then one whose address cannot be
    sent: each batch afterwards still goes through on the kept connection."""
    _, handler = sink(smtputf8=False)
    for attempt in range(3):
        rows = deliver("smtp", f"try {attempt}", ["ok@example.org", "grüße@example.org"])
        assert [d.status for d in rows] == ["sent", "failed"], [errors(d) for d in rows]
    assert len(handler.messages) == 3


class SlowData(RawSink):
    """Answers DATA only after ``delays`` seconds, one delay per mail, and counts sessions."""

    def __init__(self, *delays: float) -> None:
        super().__init__()
        self.delays = list(delays)
        self.ehlos = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list) -> list:
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        return await super().handle_DATA(server, session, envelope)


def test_a_timeout_inside_a_transaction_drops_the_connection(sink_with):
    handler = SlowData(3, 0)
    sink_with(handler, timeout=1)
    rows = deliver("smtp", "x", ["slow@example.org", "next@example.org"])
    assert [d.status for d in rows] == ["error", "sent"], [errors(d) for d in rows]
    assert "timed out" in errors(rows[0])[0].text
    assert handler.ehlos == 2  # the second dispatch did not use the connection left mid-DATA


class Interrupted(BaseException):
    """Stands for what no messenger may swallow (a worker's shutdown, Ctrl-C)."""


def test_a_batch_interrupted_inside_a_transaction_does_not_keep_its_connection(sink_with):
    handler = SlowData(2)
    sink_with(handler)

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(Interrupted):
            deliver("smtp", "interrupted", "a@example.org")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The next batch gets a connection of its own, not the one left waiting for DATA's reply.
    [row] = deliver("smtp", "after", "b@example.org")
    assert row.status == "sent", errors(row)
    assert handler.ehlos == 2


# -- 3. and 4. the From address ------------------------------------------------------------------

def test_message_id_of_a_from_with_a_display_name(sink):
    _, handler = sink(from_email="Team <team@example.org>")
    [row] = deliver("smtp", "x", "a@example.org")
    [message_id] = re.findall(rb"^Message-ID: (.*?)\r?$", handler.raw[0], re.M)
    assert message_id.decode() == f"<dispatch-{row.pk}.{row.message_id}@example.org>"


def test_a_non_ascii_display_name_is_encoded_and_the_address_kept(sink):
    _, handler = sink(from_email="Grüße Team <team@example.org>")
    [row] = deliver("smtp", "x", "a@example.org")
    assert row.status == "sent"
    mail = handler.messages[0]
    assert mail["From"].addresses == (Address("Grüße Team", addr_spec="team@example.org"),)
    from_line = next(line for line in handler.raw[0].split(b"\r\n") if line.startswith(b"From:"))
    assert from_line.endswith(b" <team@example.org>") and from_line.isascii()
    assert handler.envelopes[0][0] == "team@example.org"


def test_a_from_without_an_address_is_refused_at_construction():
    with pytest.raises(MessengerConfigurationError, match="from_email"):
        SMTPMessenger("Team")


# -- 5. a private CA, from options and from the environment -------------------------------------------

@pytest.fixture(scope="module")
def private_ca() -> trustme.CA:
    return trustme.CA()


def starttls_options(ca: trustme.CA) -> dict:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return {"tls_context": context, "require_starttls": True}


def test_ca_file_makes_a_private_ca_trusted(sink, private_ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    private_ca.cert_pem.write_to_path(str(ca_file))
    _, handler = sink(server_options=starttls_options(private_ca), use_tls=True, ca_file=str(ca_file))
    [row] = deliver("smtp", "over TLS", "a@example.org")
    assert row.status == "sent", errors(row)
    assert len(handler.messages) == 1


def test_without_ca_file_the_private_ca_is_not_trusted(sink, private_ca):
    _, handler = sink(server_options=starttls_options(private_ca), use_tls=True)
    [row] = deliver("smtp", "over TLS", "a@example.org")
    assert row.status == "failed"
    assert "certificate not trusted" in errors(row)[0].text
    assert handler.messages == []


def test_an_unreadable_ca_file_is_a_configuration_error(tmp_path):
    with pytest.raises(MessengerConfigurationError, match="ca_file"):
        SMTPMessenger("a@example.org", ca_file=str(tmp_path / "missing.pem"))


def test_every_smtp_option_has_an_environment_variable(monkeypatch, tmp_path):
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(rsa_key_pem())
    env = {
        "DISPATCHER_FROM_EMAIL": "Team <team@example.org>",
        "DISPATCHER_SMTP_HOST": "smtp.example.org", "DISPATCHER_SMTP_PORT": "587",
        "DISPATCHER_SMTP_USER": "user", "DISPATCHER_SMTP_PASSWORD": "secret-pw",
        "DISPATCHER_SMTP_USE_TLS": "1", "DISPATCHER_SMTP_TIMEOUT": "12",
        "DISPATCHER_SMTP_CA_FILE": "/etc/ssl/private-ca.pem", "DISPATCHER_SMTP_KEEPALIVE": "0",
        "DISPATCHER_SMTP_DKIM_SELECTOR": "mail", "DISPATCHER_SMTP_DKIM_DOMAIN": "example.org",
        "DISPATCHER_SMTP_DKIM_KEY_FILE": str(key_file),
        "DISPATCHER_SMTP_BOUNCE_ADDRESS": "bounces+{id}@example.org",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options = messenger_settings.from_environment()["smtp"]["options"]
    assert options == {
        "from_email": "Team <team@example.org>", "host": "smtp.example.org", "port": 587,
        "login": "user", "password": "secret-pw", "use_tls": True, "use_ssl": False, "timeout": 12.0,
        "ca_file": "/etc/ssl/private-ca.pem", "keepalive": 0.0,
        "dkim_selector": "mail", "dkim_domain": "example.org", "dkim_key_file": str(key_file),
        "bounce_address": "bounces+{id}@example.org",
    }
    monkeypatch.delenv("DISPATCHER_SMTP_DKIM_KEY_FILE")
    monkeypatch.setenv("DISPATCHER_SMTP_DKIM_KEY", rsa_key_pem().decode().replace("\n", "\\n"))
    options = messenger_settings.from_environment()["smtp"]["options"]
    assert options["dkim_key"] == rsa_key_pem().decode()  # "\n" written as two characters works too


# -- 6. DKIM ---------------------------------------------------------------------------------

_KEY: list[bytes] = []


def rsa_key_pem() -> bytes:
    if not _KEY:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _KEY.append(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return _KEY[0]


def dns_txt(selector: str, domain: str) -> Callable[..., bytes | None]:
    """What ``<selector>._domainkey.<domain>`` would hold in DNS."""
    public = serialization.load_pem_private_key(rsa_key_pem(), None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == f"{selector}._domainkey.{domain}.".encode() else None

    return lookup


def test_a_dkim_signature_verifies(sink, tmp_path):
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(rsa_key_pem())
    _, handler = sink(from_email="Grüße Team <team@example.org>", dkim_selector="mail2025",
                      dkim_key_file=str(key_file))
    [row] = deliver("smtp", EmailHtmlMessage("Grüße", "<p>Signed</p>"), "a@example.org")
    assert row.status == "sent", errors(row)
    raw = handler.raw[0]
    assert raw.startswith(b"DKIM-Signature: ")
    signature = handler.messages[0]["DKIM-Signature"]
    assert "d=example.org" in signature and "s=mail2025" in signature
    assert dkim.verify(raw, dnsfunc=dns_txt("mail2025", "example.org"))
    tampered = raw.replace(b"Signed", b"Forged")
    assert not dkim.verify(tampered, dnsfunc=dns_txt("mail2025", "example.org"))


def test_dkim_covers_both_one_click_unsubscribe_headers():
    messenger = SMTPMessenger("team@example.org", dkim_selector="mail2025", dkim_key=rsa_key_pem())
    headers = {"List-Unsubscribe": "<https://example.org/u/1>",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    data = messenger.prepare(Envelope(1, "a@example.org", Rendered("Hi", "text", headers=headers))).data
    signature = message_from_string(data.decode(), policy=policy.default)["DKIM-Signature"]
    signed = [h.strip() for h in re.search(r"h=([^;]*);", signature).group(1).split(":")]  # type: ignore[union-attr]
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject", "message-id"} <= set(signed)
    assert dkim.verify(data, dnsfunc=dns_txt("mail2025", "example.org"))


def test_dkim_options_are_checked_at_construction(tmp_path):
    with pytest.raises(MessengerConfigurationError, match="dkim"):
        SMTPMessenger("a@example.org", dkim_selector="mail")  # no key
    with pytest.raises(MessengerConfigurationError, match="dkim"):
        SMTPMessenger("a@example.org", dkim_selector="mail", dkim_key="not a key")
    with pytest.raises(MessengerConfigurationError, match="dkim"):
        SMTPMessenger("a@example.org", dkim_selector="mail", dkim_key_file=str(tmp_path / "none.pem"))


# -- 7. bounce address (VERP) ----------------------------------------------------------------------

def test_the_bounce_address_carries_the_dispatch_id(sink):
    _, handler = sink(from_email="Team <team@example.org>", bounce_address="bounces+{id}@example.org")
    rows = deliver("smtp", "x", ["a@example.org", "b@example.org"])
    assert sorted(handler.envelopes) == sorted(
        (f"bounces+{row.pk}@example.org", [row.address]) for row in rows
    )
    assert all(m["From"] == "Team <team@example.org>" for m in handler.messages)
    messenger = SMTPMessenger("team@example.org", bounce_address="bounces+{id}@example.org")
    assert messenger.bounce_dispatch_id(f"bounces+{rows[0].pk}@example.org") == rows[0].pk
    assert messenger.bounce_dispatch_id(f"Bounces+{rows[0].pk}@EXAMPLE.ORG") == rows[0].pk
    assert messenger.bounce_dispatch_id("bounces+x@example.org") is None
    assert messenger.bounce_dispatch_id("team@example.org") is None
    assert SMTPMessenger("team@example.org").bounce_dispatch_id("bounces+1@example.org") is None


@pytest.mark.parametrize("template", ["bounces@example.org", "bounces+{id}", "b+{id}+{id}@example.org",
                                      "b+{dispatch}@example.org"])
def test_a_bounce_address_without_one_id_is_refused(template):
    with pytest.raises(MessengerConfigurationError, match="bounce_address"):
        SMTPMessenger("team@example.org", bounce_address=template)


# -- issue #13: control characters in a subject; a non-ASCII password --------------------------------------

class PerRecipientSubject(MessageBase):
    """A subject rendered per recipient, as a site's own message type may do."""

    alias = "per_recipient_subject"

    @classmethod
    def render(cls, message_model: Any, dispatch: Any) -> Rendered:
        return Rendered(subject=message_model.context["subjects"][dispatch.address], text="Hello")


@pytest.mark.parametrize("bad", ["Hi\r\nBcc: victim@example.org", "Hi\nBcc: victim@example.org",
                                 "Grüße\r\nBcc: victim@example.org", "Hi \x1b[31mred", "Hi\x07"])
def test_a_subject_with_a_control_character_fails_only_its_dispatch_at_once(sink, bad):
    _, handler = sink()
    register_message_types(PerRecipientSubject)
    subjects = {"a@example.org": "Fine", "b@example.org": bad, "c@example.org": "Grüße"}
    [(_, dispatches)] = schedule_messages(PerRecipientSubject({"subjects": subjects}),
                                          recipients("smtp", list(subjects)))
    deliver_batch("smtp", [d.pk for d in dispatches])
    rows = list(Dispatch.objects.filter(pk__in=[d.pk for d in dispatches]).order_by("id"))
    assert statuses(rows) == {"a@example.org": "sent", "b@example.org": "failed", "c@example.org": "sent"}
    assert rows[1].attempts == 1
    assert "control character" in errors(rows[1])[0].text
    assert sorted(m["Subject"] for m in handler.messages) == ["Fine", "Grüße"]
    assert not any(m["Bcc"] for m in handler.messages)


def test_a_control_character_in_any_header_fails_the_dispatch(sink):
    """Through the messenger contract directly: envelopes in, outcomes out."""
    _, handler = sink()
    envelopes = [
        Envelope(1, "a@example.org", Rendered("ok", "x", headers={"List-Unsubscribe": "<https://x/u>"})),
        Envelope(2, "b@example.org",
                 Rendered("ok", "x", headers={"List-Unsubscribe": "<https://x>\r\nBcc: v@x"})),
        Envelope(3, "c@example.org", Rendered("ok", "x")),
    ]
    recorder = Outcomes()
    batch = get_registered_messenger_object("smtp").for_batch(recorder)
    batch.before_send()
    try:
        batch.send(None, None, envelopes)
    finally:
        batch.after_send()
    outcomes = [recorder.get(e) for e in envelopes]
    assert [o.status for o in outcomes if o] == ["sent", "failed", "sent"]
    assert "control character" in str(outcomes[1].error if outcomes[1] else "")
    assert len(handler.messages) == 2 and not any(m["Bcc"] for m in handler.messages)


@pytest.mark.parametrize("password", ["pässwörd-123", "密码secret", "secret\u00a0"])
def test_a_non_ascii_password_is_a_configuration_error_that_does_not_show_it(password):
    with pytest.raises(MessengerConfigurationError) as caught:
        SMTPMessenger("a@example.org", "user", password, host="127.0.0.1")
    text = str(caught.value)
    assert "password" in text and text.isascii()
    assert not any(str(n) in text for n in range(len(password)))  # no position either
    assert password not in text and password.encode("ascii", "ignore").decode() not in text


def test_a_non_ascii_password_from_the_environment_stops_startup_without_showing_it(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")
             and k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL"}}
    password = "pässwörd-Ω"
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=BASE, capture_output=True, text=True,
        timeout=120, env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings",
                          "DISPATCHER_VAR_DIR": str(tmp_path),
                          "DISPATCHER_SMTP_USER": "user", "DISPATCHER_SMTP_PASSWORD": password},
    )
    assert started.returncode != 0
    assert "MessengerConfigurationError: smtp: the password has characters outside ASCII" in started.stderr
    assert not any(c in started.stderr for c in "äöΩ") and "rd-" not in started.stderr


_BATCH_CASES = [
    Rendered(subject="Hi", text="Hello\nthere"),
    Rendered(subject="Héllo", text="Grüße, ça va"),
    Rendered(subject="S", html="<p>x</p>"),
    Rendered(subject="S", text="t", html="<p>x</p>"),
    Rendered(subject="S", text="t", headers={"List-Unsubscribe": "<https://x.example/u>",
                                             "Reply-To": "a@b.example", "X-Long": "v" * 1200}),
    Rendered(subject="S", text="t", headers={"To": "Ünï <u@example.org>"}),
    Rendered(subject="", text=""),
    Rendered(subject="S", text="line\n.\nend\r\n"),
]


@pytest.mark.parametrize("rendered", _BATCH_CASES)
def test_a_batch_writes_the_same_bytes_as_build_email(rendered):
    """A batch's copy writes a mail from its header lines and the body it
    already wrote for the message: byte for byte what ``build_email`` gives
    (but the Date, and a multipart's boundary, which differ from mail to mail anyway)."""
    messenger = SMTPMessenger("Bench <bench@example.org>")
    batch = messenger.for_batch(Outcomes())

    def normal(data: bytes) -> bytes:
        data = re.sub(rb"Date: [^\r]*", b"Date: -", data)
        return re.sub(rb"={15}\d+==", b"BOUNDARY", data)

    for pk in (5, 6):  # the second one from the batch's cache
        dispatch = SimpleNamespace(pk=pk, message_id=7, address="user@example.org", rendered=rendered)
        fast = batch.prepare(dispatch).data
        assert normal(fast) == normal(messenger.build_email(dispatch).as_bytes())
        assert messenger.prepare(dispatch).data is not None  # the registered messenger keeps no cache
    assert messenger.bodies is None
