"""The smtp messenger against a real Postfix on loopback (tests/fakes/postfix.py).

The Postfix is as strict as a careful MX: bare <LF> is refused for every
client, it speaks STARTTLS with a certificate from a private CA, and one of
its two ports offers SMTPUTF8 while the other does not. What it stored in its
mailboxes is what these tests read. Without Postfix these tests skip, unless
REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from email.headerregistry import Address
from email.message import EmailMessage

import dkim
import pytest
from django.conf import settings

from dispatcher.api import recipients, register_messenger_objects, retry_now, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.messages import EmailHtmlMessage, EmailTextMessage
from dispatcher.models import Dispatch
from messengers.smtp import SMTPMessenger
from tests.fakes import postfix
from tests.fakes.postfix import DOMAIN, GONE, IDN_A_LABEL, IDN_DOMAIN, IDN_USER, PostfixServer
from tests.messengers.conftest import deliver, errors
from tests.messengers.test_smtp import dns_txt, rsa_key_pem
from tests.services import BASE

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def postfix_server() -> Iterator[PostfixServer]:
    reason = postfix.missing()
    if reason:
        if settings.REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    server = PostfixServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mta(postfix_server: PostfixServer) -> PostfixServer:
    """The module's Postfix with empty mailboxes."""
    postfix_server.clear()
    return postfix_server


def use(mta: PostfixServer, port: int | None = None, trust: bool = True, **options) -> SMTPMessenger:
    """Register the ``smtp`` messenger for Postfix, over STARTTLS trusting its private CA."""
    options.setdefault("from_email", "Dispatcher <noreply@example.org>")
    messenger = SMTPMessenger(host="127.0.0.1", port=port or mta.port, use_tls=True,
                              ca_file=str(mta.ca_file) if trust else None, **options)
    register_messenger_objects(messenger)
    return messenger


def at(user: str) -> str:
    return f"{user}@{DOMAIN}"


def text_of(mail: EmailMessage, subtype: str = "plain") -> str:
    part = mail.get_body((subtype,))
    assert part is not None, mail
    return part.get_content()


# -- 1. CRLF ----------------------------------------------------------------------------------------

BODIES = [
    "One line",
    "Two lines\nwith a trailing newline\n",
    "Windows\r\nline ends\r\n",
    ".\n..a line of dots\n.",
    "Grüße, Здравствуйте, こんにちは\n",
    "long " * 300 + "\n",
]


def test_a_strict_crlf_postfix_accepts_every_mail(mta):
    use(mta)
    sent = 0
    for i, body in enumerate(BODIES):
        rows = deliver("smtp", EmailTextMessage(f"Body {i}", body), [at(f"alice+{i}.{n}") for n in range(10)])
        assert {d.status for d in rows} == {"sent"}, errors(rows[0])
        sent += len(rows)
    [row] = deliver("smtp", EmailHtmlMessage("HTML", "<p>Hello\n<b>there</b></p>\n"), at("alice"))
    assert row.status == "sent", errors(row)
    mails = mta.mails("alice", sent + 1)
    assert len(mails) == sent + 1
    received = {mail["Subject"]: mail for mail in mails}
    for i, body in enumerate(BODIES):
        expected = body.replace("\r\n", "\n")
        expected += "" if expected.endswith("\n") else "\n"  # SMTP data always ends a line
        assert text_of(received[f"Body {i}"]) == expected  # and not one stray blank line
    assert text_of(received["HTML"], "html") == "<p>Hello\n<b>there</b></p>\n"
    assert "bare <LF>" not in mta.logs()


# -- 2. to 4.: non-ASCII, decoded as sent; addresses; Message-ID ---------------------------------------

def test_non_ascii_subject_body_and_display_name_arrive_decoded(mta):
    use(mta, from_email="Grüße-Team Ünïcødé <team@example.org>")
    subject = "Grüße – Привет – 你好 👋 " + "ä" * 80  # long enough to be folded
    text = "Straße\nこんにちは\n"
    html = "<p>Straße <b>こんにちは</b> 👋</p>\n"
    [row] = deliver("smtp", EmailHtmlMessage(subject, {"html": html, "text": text}), at("bob"))
    assert row.status == "sent", errors(row)
    [mail] = mta.mails("bob")
    assert mail["Subject"] == subject
    assert mail["From"].addresses == (Address("Grüße-Team Ünïcødé", addr_spec="team@example.org"),)
    assert text_of(mail) == text
    assert text_of(mail, "html") == html
    assert mail["Message-ID"] == f"<dispatch-{row.pk}.{row.message_id}@example.org>"
    assert mail["Return-Path"] == "<team@example.org>"
    assert "with ESMTPS" in mail["Received"]  # it went over TLS


def test_a_non_ascii_local_part_is_delivered_with_smtputf8(mta):
    use(mta)
    [row] = deliver("smtp", EmailTextMessage("UTF-8", "Hallo"), at("jürgen"))
    assert row.status == "sent", errors(row)
    [raw] = _wait_raw(mta, "jürgen")
    assert f"To: {at('jürgen')}\n".encode() in raw
    assert f"Delivered-To: {at('jürgen')}\n".encode() in raw


def test_without_smtputf8_only_that_dispatch_fails_and_the_connection_stays_clean(mta):
    use(mta, port=mta.ascii_port)
    rows = deliver("smtp", "batch", [at("alice"), at("jürgen"), at("bob")])
    assert [d.status for d in rows] == ["sent", "failed", "sent"], [errors(d) for d in rows]
    assert "SMTPUTF8" in errors(rows[1])[0].text
    # The next batch goes over the same kept connection: no "503 nested MAIL command".
    [row] = deliver("smtp", "next", at("carol"))
    assert row.status == "sent", errors(row)
    assert len(mta.mails("carol")) == 1 and len(mta.mails("alice")) == 1 and len(mta.mails("bob")) == 1
    assert mta.raw_mails("jürgen") == []


def test_an_internationalized_domain_is_sent_as_its_a_label(mta):
    use(mta, port=mta.ascii_port)
    [row] = deliver("smtp", "IDN", f"{IDN_USER}@{IDN_DOMAIN}")
    assert row.status == "sent", errors(row)
    [mail] = mta.mails(IDN_USER)
    assert mail["To"] == f"{IDN_USER}@{IDN_A_LABEL}"
    assert mail["Delivered-To"] == f"{IDN_USER}@{IDN_A_LABEL}"


# -- what worked before, kept: 550, 450, an outage, an untrusted certificate -------------------------------

def test_a_refused_recipient_fails_and_a_deferred_one_is_retried(mta):
    use(mta)
    rows = deliver("smtp", "x", [at("alice"), at("nobody"), "tempfail@dispatcher.test", at("bob")])
    assert [d.status for d in rows] == ["sent", "failed", "error", "sent"], [errors(d) for d in rows]
    assert "550" in errors(rows[1])[0].text
    assert "450" in errors(rows[2])[0].text and rows[2].next_attempt_at is not None
    assert len(mta.mails("alice")) == 1 and len(mta.mails("bob")) == 1


def test_an_outage_is_retried_and_then_sent(mta):
    use(mta)
    mta.stop()
    try:
        [row] = deliver("smtp", "during the outage", at("carol"))
        assert row.status == "error", errors(row)
        assert "Connection" in errors(row)[0].text or "SMTP" in errors(row)[0].text
    finally:
        mta.start()
    retry_now(Dispatch.objects.filter(pk=row.pk))
    deliver_batch("smtp", [row.pk])
    row.refresh_from_db()
    assert row.status == "sent", errors(row)
    assert row.attempts == 2
    assert mta.mails("carol")[0].get_content().strip() == "during the outage"


def test_an_untrusted_certificate_is_refused(mta):
    use(mta)  # a trusting messenger first, so a kept connection exists
    [ok] = deliver("smtp", "trusted", at("dave"))
    assert ok.status == "sent"
    use(mta, trust=False)
    [row] = deliver("smtp", "untrusted", at("dave"))
    assert row.status == "failed"
    assert "certificate not trusted" in errors(row)[0].text
    mta.wait_idle()
    assert [m.get_content().strip() for m in mta.mails("dave")] == ["trusted"]


# -- 5. the CA file from the environment -------------------------------------------------------------------

def send_from_environment(mta: PostfixServer, tmp_path, **env: str) -> subprocess.CompletedProcess:
    """``send_test_message`` in a fresh process configured from the environment alone."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")
             and k not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL"}}
    code = ("import django; django.setup();"
            "from dispatcher.api import send_test_message as s;"
            "s('smtp', 'carol@dispatcher.test', 'from env')")
    return subprocess.run(
        [sys.executable, "-c", code], cwd=BASE, capture_output=True, text=True, timeout=120,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", "DISPATCHER_VAR_DIR": str(tmp_path),
             "DISPATCHER_SMTP_HOST": "127.0.0.1", "DISPATCHER_SMTP_PORT": str(mta.port),
             "DISPATCHER_SMTP_USE_TLS": "1", "DISPATCHER_FROM_EMAIL": "Env <env@example.org>", **env},
    )


def test_a_private_ca_is_trusted_from_the_environment(mta, tmp_path):
    refused = send_from_environment(mta, tmp_path)
    assert refused.returncode != 0 and "certificate not trusted" in refused.stderr
    done = send_from_environment(mta, tmp_path, DISPATCHER_SMTP_CA_FILE=str(mta.ca_file))
    assert done.returncode == 0, done.stderr[-3000:]
    [mail] = mta.mails("carol")
    assert mail.get_content().strip() == "from env"
    assert mail["From"].addresses[0].addr_spec == "env@example.org"


# -- 6. DKIM ---------------------------------------------------------------------------------------

def test_the_dkim_signature_of_a_received_mail_verifies(mta, tmp_path):
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(rsa_key_pem())
    use(mta, from_email="Grüße Team <team@example.org>", dkim_selector="s2025", dkim_key_file=str(key_file))
    [row] = deliver("smtp", EmailHtmlMessage("Signiert – Grüße", "<p>Straße</p>"), at("alice"))
    assert row.status == "sent", errors(row)
    [raw] = _wait_raw(mta, "alice")
    # As a receiving MTA reads it: Postfix stored it with LF line ends, and
    # added Return-Path, Delivered-To and Received above the signature.
    on_the_wire = raw.replace(b"\n", b"\r\n")
    assert b"\r\nDKIM-Signature: " in on_the_wire
    assert dkim.verify(on_the_wire, dnsfunc=dns_txt("s2025", "example.org"))
    forged = on_the_wire.replace(b"<p>Stra", b"<p>Xtra")
    assert not dkim.verify(forged, dnsfunc=dns_txt("s2025", "example.org"))


# -- 7. bounce address ---------------------------------------------------------------------------------

def test_a_bounce_comes_back_to_the_address_of_its_dispatch(mta):
    """GONE is accepted, then meets the error: transport; Postfix bounces it to
    the envelope sender, bounces+<id>@dispatcher.test."""
    messenger = use(mta, bounce_address="bounces+{id}@dispatcher.test")
    rows = deliver("smtp", "will bounce", [GONE, at("alice")])
    assert [d.status for d in rows] == ["sent", "sent"]  # accepted; the bounce comes later
    [bounce] = mta.mails("bounces")
    assert bounce["From"].addresses[0].username == "MAILER-DAEMON"
    assert messenger.bounce_dispatch_id(bounce["X-Original-To"]) == rows[0].pk
    assert messenger.bounce_dispatch_id(str(bounce["To"])) == rows[0].pk
    assert "gone@nowhere.invalid" in bounce.as_string()
    [delivered] = mta.mails("alice")
    assert delivered["Return-Path"] == f"<bounces+{rows[1].pk}@dispatcher.test>"
    assert delivered["From"].addresses[0].addr_spec == "noreply@example.org"


def _wait_raw(mta: PostfixServer, user: str, count: int = 1) -> list[bytes]:
    mta.mails(user, count)
    return mta.raw_mails(user)


# -- issue #13: a subject with CR/LF never reaches Postfix -----------------------------------------------

def test_a_subject_with_crlf_fails_its_dispatch_and_the_rest_of_the_batch_is_sent(mta):
    use(mta)
    [(_, ok)] = schedule_messages(EmailTextMessage("Fine", "x"), recipients("smtp", at("alice")))
    [(_, bad)] = schedule_messages(EmailTextMessage("Hi\r\nBcc: bob@dispatcher.test", "x"),
                                   recipients("smtp", at("carol")))
    deliver_batch("smtp", [d.pk for d in bad + ok])
    statuses = dict(Dispatch.objects.filter(pk__in=[d.pk for d in bad + ok]).values_list("address", "status"))
    assert statuses == {at("alice"): "sent", at("carol"): "failed"}
    assert len(mta.mails("alice")) == 1
    mta.wait_idle()
    assert mta.raw_mails("bob") == [] and mta.raw_mails("carol") == []
