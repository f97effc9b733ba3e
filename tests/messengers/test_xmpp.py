"""The xmpp messenger against a real Prosody server on loopback.

Messages are checked where a user would see them: in a second XMPP client
logged in as the recipient. Prosody comes from the Debian package; without
it these tests skip, unless REQUIRE_SERVICES=1 (CI), where they fail.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from dispatcher.api import recipients, register_messenger_objects, schedule_messages, send_test_message
from dispatcher.delivery import deliver_batch
from dispatcher.exceptions import InvalidRecipient, MessageTooLong
from dispatcher.models import Dispatch, DispatchError
from messengers.exceptions import (
    InvalidAddress,
    MessengerConfigurationError,
    PermanentError,
    TemporaryError,
)
from messengers.xmpp import XMPPMessenger
from tests.fakes import prosody
from tests.fakes.processes import ProxyProcess
from tests.fakes.prosody import Account, Listener, ProsodyServer
from tests.services import free_port, wait_for

pytestmark = pytest.mark.django_db


def _need_prosody() -> None:
    reason = prosody.missing()
    if reason:
        if settings.REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ProsodyServer]:
    """Prosody with a self-signed certificate (STARTTLS, direct TLS) and XEP-0198."""
    _need_prosody()
    srv = ProsodyServer(tmp_path_factory.mktemp("prosody-tls"))
    srv.sender = srv.register("sender")  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory) -> Iterator[ProsodyServer]:
    """Prosody without TLS and without XEP-0198 (mod_smacks off)."""
    _need_prosody()
    srv = ProsodyServer(tmp_path_factory.mktemp("prosody-plain"), tls=False, stream_management=False)
    srv.sender = srv.register("sender")  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@pytest.fixture
def listen() -> Iterator:
    """``listen(server)``: a fresh recipient account, logged in and listening."""
    started: list[Listener] = []

    def start(srv: ProsodyServer, account: Account | None = None) -> Listener:
        listener = Listener(srv, account or srv.register())
        started.append(listener)
        return listener

    yield start
    for listener in started:
        listener.stop()


def messenger(srv: ProsodyServer, **options) -> XMPPMessenger:
    """A messenger sending as the server's sender account, STARTTLS with the test CA."""
    sender = srv.sender  # type: ignore[attr-defined]
    options.setdefault("ca_file", str(srv.ca_file) if srv.ca_file else None)
    options.setdefault("timeout", 10)
    return XMPPMessenger(sender.jid, options.pop("password", sender.password),
                         host="127.0.0.1", port=options.pop("port", srv.port), **options)


def deliver(m: XMPPMessenger, text: str, addresses: list[str]) -> list[Dispatch]:
    """The engine's path: schedule, then deliver the batch in this process."""
    register_messenger_objects(m)
    [(_, dispatches)] = schedule_messages(text, recipients("xmpp", addresses))
    deliver_batch("xmpp", [d.pk for d in dispatches])
    return list(Dispatch.objects.filter(pk__in=[d.pk for d in dispatches]).order_by("pk"))


def errors_of(dispatch: Dispatch) -> list[DispatchError]:
    return list(DispatchError.objects.filter(dispatch=dispatch))


def wait_for_bodies(listener: Listener, count: int) -> list[str]:
    return wait_for(lambda: len(listener.received()) >= count and listener.bodies(), 20, 0.05,
                    f"{count} messages at {listener.account.jid}")


def flush_to(listener: Listener, srv: ProsodyServer, marker: str = "-- end --") -> list[prosody.Received]:
    """Everything the listener got before ``marker``, sent after the batch.

    The server hands one recipient's messages over in the order it handled
    them, and the batch was handled before the marker was sent, so a late
    duplicate would show up here.
    """
    messenger(srv, plaintext=srv.ca_file is None).send_test_message(listener.account.jid, marker)
    wait_for(lambda: marker in listener.bodies(), 20, 0.05, "the end marker")
    received = listener.received()
    return received[: [m.body for m in received].index(marker)]


# -- sessions ----------------------------------------------------------------------


def test_starttls_batch_is_received_with_the_right_body_over_one_session(server, listen):
    ann, bob = listen(server), listen(server)
    dispatches = deliver(messenger(server), "Your parcel has arrived", [ann.account.jid, bob.account.jid])

    assert {d.status for d in dispatches} == {"sent"}
    for listener in (ann, bob):
        [got] = flush_to(listener, server)
        assert got.body == "Your parcel has arrived"
        assert got.sender.startswith(server.sender.jid + "/")
    # One connection per batch: both came from the same session (full JID).
    assert ann.received()[0].sender == bob.received()[0].sender


def test_plaintext_session_on_a_server_without_stream_management(plain_server, listen):
    ann = listen(plain_server)
    m = messenger(plain_server, plaintext=True)
    dispatches = deliver(m, "Plain hello", [ann.account.jid])
    assert [d.status for d in dispatches] == ["sent"]
    assert wait_for_bodies(ann, 1) == ["Plain hello"]


def test_direct_tls_session(server, listen):
    ann = listen(server)
    m = messenger(server, direct_tls=True, port=server.direct_tls_port)
    assert [d.status for d in deliver(m, "Over direct TLS", [ann.account.jid])] == ["sent"]
    assert wait_for_bodies(ann, 1) == ["Over direct TLS"]


def test_tls_is_required_unless_plaintext_is_asked_for(plain_server, listen):
    ann = listen(plain_server)
    logins = plain_server.logs().count(f"Authenticated as {plain_server.sender.jid}")
    dispatches = deliver(messenger(plain_server), "never in clear", [ann.account.jid])
    assert [d.status for d in dispatches] == ["failed"]
    [error] = errors_of(dispatches[0])
    assert "does not offer STARTTLS" in error.text and error.permanent
    # The password was never sent: the server saw no login from the sender.
    assert plain_server.logs().count(f"Authenticated as {plain_server.sender.jid}") == logins
    assert flush_to(ann, plain_server) == []
    # (flush_to logged in, in plaintext as asked: the log shows such logins.)
    assert plain_server.logs().count(f"Authenticated as {plain_server.sender.jid}") == logins + 1


def test_untrusted_certificate_is_a_permanent_failure(server, listen):
    ann = listen(server)
    dispatches = deliver(messenger(server, ca_file=None), "x", [ann.account.jid])
    assert [d.status for d in dispatches] == ["failed"]
    [error] = errors_of(dispatches[0])
    assert "not trusted" in error.text
    assert flush_to(ann, server) == []


def test_verify_false_still_encrypts_without_checking(server, listen):
    ann = listen(server)
    m = messenger(server, ca_file=None, verify=False)
    assert [d.status for d in deliver(m, "unverified", [ann.account.jid])] == ["sent"]
    assert wait_for_bodies(ann, 1) == ["unverified"]


# -- failures ------------------------------------------------------------------------


def test_wrong_password_fails_every_dispatch_with_the_reason(server, listen):
    ann, bob = listen(server), listen(server)
    m = messenger(server, password="not the password")
    dispatches = deliver(m, "x", [ann.account.jid, bob.account.jid, "carl@dispatcher.test"])

    assert [d.status for d in dispatches] == ["failed"] * 3
    for dispatch in dispatches:
        [error] = errors_of(dispatch)
        assert error.permanent and error.error_class == "PermanentError"
        assert "authentication failed" in error.text and "not-authorized" in error.text
        assert "not the password" not in error.text
    assert flush_to(ann, server) == []


def test_server_down_is_temporary(server, listen):
    port = free_port()  # nothing listens there
    dispatches = deliver(messenger(server, port=port), "x", ["ann@dispatcher.test", "bob@dispatcher.test"])
    assert [d.status for d in dispatches] == ["error", "error"]
    for dispatch in dispatches:
        [error] = errors_of(dispatch)
        assert not error.permanent and error.error_class == "TemporaryError"
        assert f"cannot connect to XMPP server 127.0.0.1:{port}" in error.text
        assert dispatch.next_attempt_at > dispatch.created


def test_unknown_host_is_temporary(server):
    m = messenger(server, timeout=30)  # room for a resolver that times out instead of answering
    m.host = "xmpp.nonexistent.invalid"  # .invalid never resolves (RFC 6761)
    [dispatch] = deliver(m, "x", ["ann@dispatcher.test"])
    assert dispatch.status == "error"
    [error] = errors_of(dispatch)
    assert "cannot resolve xmpp.nonexistent.invalid" in error.text and not error.permanent


def test_a_server_that_never_answers_times_out_as_temporary(server):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(5)  # accepts the TCP connection, never says a word
        m = messenger(server, port=silent.getsockname()[1], timeout=1)
        [dispatch] = deliver(m, "x", ["ann@dispatcher.test"])
    assert dispatch.status == "error"
    [error] = errors_of(dispatch)
    assert "no session within 1s" in error.text and not error.permanent


def test_invalid_jid_is_refused_at_scheduling(server):
    register_messenger_objects(messenger(server))
    for bad in ["ann@@dispatcher.test", "a b@dispatcher.test", "dispatcher.test", "", "@dispatcher.test"]:
        with pytest.raises(InvalidAddress):
            schedule_messages("x", recipients("xmpp", ["ok@dispatcher.test", bad]))
    assert not Dispatch.objects.exists()
    # Addresses are stored normalised.
    [(_, [d])] = schedule_messages("x", recipients("xmpp", "Ann@Dispatcher.TEST"))
    assert d.address == "ann@dispatcher.test"


def test_bad_jid_or_unknown_account_fail_alone_and_the_rest_goes_out(server, listen):
    ann, bob = listen(server), listen(server)
    register_messenger_objects(messenger(server))
    nobody = f"nobody-{os.getpid()}@{server.domain}"
    addresses = [ann.account.jid, "slipped@dispatcher.test", nobody, bob.account.jid]
    [(_, dispatches)] = schedule_messages("Batch note", recipients("xmpp", addresses))
    # One bad address slipped past validation (written by another path).
    Dispatch.objects.filter(pk=dispatches[1].pk).update(address="slipped@@dispatcher.test")
    deliver_batch("xmpp", [d.pk for d in dispatches])

    by_pk = {d.pk: d for d in Dispatch.objects.filter(pk__in=[d.pk for d in dispatches])}
    statuses = [by_pk[d.pk].status for d in dispatches]
    assert statuses == ["sent", "failed", "failed", "sent"]
    [bad_jid] = errors_of(by_pk[dispatches[1].pk])
    assert "not a valid JID" in bad_jid.text and bad_jid.permanent
    [unknown] = errors_of(by_pk[dispatches[2].pk])
    assert "service-unavailable" in unknown.text and unknown.permanent  # bounced by the server
    for listener in (ann, bob):
        assert [m.body for m in flush_to(listener, server)] == ["Batch note"]


def test_a_text_too_long_for_the_server_fails_alone(server, listen):
    ann = listen(server)
    register_messenger_objects(messenger(server, max_text_length=100))
    with pytest.raises(MessageTooLong, match="takes at most 100"):  # refused before writing
        schedule_messages("x" * 101, recipients("xmpp", ann.account.jid))
    # A text that got past scheduling (the limit lowered since, or a text
    # rendered per recipient) fails alone at send time.
    register_messenger_objects(messenger(server))
    rows = schedule_messages(["short one", "x" * 101, "short two"], recipients("xmpp", ann.account.jid))
    register_messenger_objects(messenger(server, max_text_length=100))
    ids = [dispatches[0].pk for _, dispatches in rows]
    deliver_batch("xmpp", ids)
    statuses = dict(Dispatch.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["sent", "failed", "sent"]
    assert "over max_text_length=100" in errors_of(Dispatch.objects.get(pk=ids[1]))[0].text
    assert [m.body for m in flush_to(ann, server)] == ["short one", "short two"]


# -- the worker's view -----------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_thread_loop_or_socket_left_behind_between_batches(server, listen):
    ann = listen(server)
    good, bad = messenger(server), messenger(server, password="wrong")
    good.host = bad.host = "localhost"  # a name: resolved on the loop's executor threads

    def batch(m: XMPPMessenger, text: str) -> str:
        [d] = deliver(m, text, [ann.account.jid])
        return d.status

    assert batch(good, "warm-up") == "sent"  # first use loads modules and certificates
    threads, fds = set(threading.enumerate()), _fds()
    assert [batch(good, "one"), batch(bad, "two"), batch(good, "three")] == ["sent", "failed", "sent"]
    assert set(threading.enumerate()) == threads
    assert _fds() == fds  # every loop, selector and socket was closed
    assert good._loop is None and good._client is None  # the registered object never holds one
    assert [m.body for m in flush_to(ann, server)] == ["warm-up", "one", "three"]


def test_send_test_message(server, listen):
    ann = listen(server)
    m = messenger(server)
    m.send_test_message(ann.account.jid, "Test from the messenger")
    register_messenger_objects(m)
    send_test_message("xmpp", ann.account.jid, "Test from the API")
    assert wait_for_bodies(ann, 2) == ["Test from the messenger", "Test from the API"]

    with pytest.raises(PermanentError, match="authentication failed"):
        messenger(server, password="wrong").send_test_message(ann.account.jid, "x")
    with pytest.raises(TemporaryError, match="cannot connect"):
        messenger(server, port=free_port()).send_test_message(ann.account.jid, "x")
    with pytest.raises(InvalidAddress):
        m.send_test_message("not a jid", "x")


def test_users_are_addressed_by_their_jid_attribute(server, django_user_model):
    register_messenger_objects(messenger(server))
    ann = django_user_model.objects.create(username="ann")
    with pytest.raises(InvalidRecipient, match="no address"):
        recipients("xmpp", ann)
    ann.jid = "Ann@Dispatcher.test"
    [recipient] = recipients("xmpp", ann)
    assert recipient.address == "ann@dispatcher.test"


def test_configuration_errors_are_caught_early():
    with pytest.raises(MessengerConfigurationError, match="exclusive"):
        XMPPMessenger("bot@example.org", "pw", direct_tls=True, plaintext=True)
    with pytest.raises(MessengerConfigurationError, match="user@domain"):
        XMPPMessenger("example.org", "pw")
    with pytest.raises(MessengerConfigurationError, match="proxy"):
        XMPPMessenger("bot@example.org", "pw", proxy="ftp://127.0.0.1:21")
    m = XMPPMessenger("bot@example.org/notifier", "pw")
    assert (m.host, m.port, m.mode) == ("example.org", 5222, "starttls")
    assert XMPPMessenger("bot@example.org", "pw", direct_tls=True).port == 5223


# -- proxies -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["socks5", "http"])
def test_connects_through_a_proxy(server, listen, kind, tmp_path):
    ann = listen(server)
    proxy = ProxyProcess(tmp_path, "proxyuser", "proxypass")
    try:
        m = messenger(server, proxy={"https": proxy.url(kind)})
        assert [d.status for d in deliver(m, f"via {kind}", [ann.account.jid])] == ["sent"]
        assert wait_for_bodies(ann, 1) == [f"via {kind}"]
        assert proxy.targets == [("127.0.0.1", server.port)]  # the proxy carried the stream

        wrong = messenger(server, proxy=lambda: proxy.url(kind).replace("proxypass", "nope"))
        [d] = deliver(wrong, "x", [ann.account.jid])
        # As for the HTTP messengers: temporary, fixing the proxy must not lose messages.
        assert d.status == "error" and "the proxy refused our credentials" in errors_of(d)[0].text
        assert "nope" not in errors_of(d)[0].text
    finally:
        proxy.stop()


@pytest.mark.parametrize(("scheme", "resolved_by_us"), [("socks5", True), ("socks5h", False)])
def test_socks5h_lets_the_proxy_resolve_the_server_name(server, listen, tmp_path, scheme, resolved_by_us):
    ann = listen(server)
    proxy = ProxyProcess(tmp_path)
    try:
        m = messenger(server, proxy=proxy.url(scheme))
        m.host = "localhost"
        assert [d.status for d in deliver(m, f"via {scheme}", [ann.account.jid])] == ["sent"]
        assert proxy.targets == [("127.0.0.1" if resolved_by_us else "localhost", server.port)]
    finally:
        proxy.stop()


def test_no_password_in_logs_or_errors_and_sasl_payloads_masked(server, listen, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    ann = listen(server)
    proxy = ProxyProcess(tmp_path, "proxyuser", "proxy-secret-91")
    try:
        m = messenger(server, proxy=proxy.url("socks5"))
        assert [d.status for d in deliver(m, "logged", [ann.account.jid])] == ["sent"]
        wrong = messenger(server, proxy=proxy.url("http", credentials=("proxyuser", "wrong-proxy-pass-5")))
        [d] = deliver(wrong, "x", [ann.account.jid])
    finally:
        proxy.stop()
    assert d.status == "error" and "wrong-proxy-pass-5" not in errors_of(d)[0].text
    wire = caplog.text
    assert re.search(r"<auth\b[^>]*>\*\*\*<", wire)  # slixmpp's wire log was captured, masked
    assert not re.search(r"<(auth|response)\b[^>]*>(?!\*\*\*<)[^<]", wire)
    password = server.sender.password
    for secret in (password, base64.b64encode(password.encode()).decode(), "proxy-secret-91",
                   "wrong-proxy-pass-5"):
        assert secret not in wire, secret


def test_a_dead_proxy_is_temporary(server):
    m = messenger(server, proxy=f"socks5://127.0.0.1:{free_port()}")
    [dispatch] = deliver(m, "x", ["ann@dispatcher.test"])
    assert dispatch.status == "error"
    assert "cannot connect" in errors_of(dispatch)[0].text


# -- through a real Celery worker ----------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_sends_500_in_one_batch_each_received_once(server, listen, workers):
    ann, bob = listen(server), listen(server)
    options = {"from_jid": server.sender.jid, "password": server.sender.password, "host": "127.0.0.1",
               "port": server.port, "ca_file": str(server.ca_file), "timeout": 20}
    workers("xmpp", concurrency=1, DISPATCHER_BATCH_SIZE="500", TEST_EXTRA_MESSENGERS=json.dumps(
        {"xmpp": {"class": "messengers.xmpp.XMPPMessenger", "options": options}}
    ))
    register_messenger_objects(XMPPMessenger(**options))  # for validation in this process
    texts = [f"Notice {i}" for i in range(250)]
    with override_settings(DISPATCHER_BATCH_SIZE=500, DISPATCHER_FANOUT_TASKS=1):
        schedule_messages(texts, recipients("xmpp", [ann.account.jid, bob.account.jid]))

    wait_for(lambda: Counter(Dispatch.objects.values_list("status", flat=True)) == {"sent": 500},
             120, 0.3, "all 500 xmpp dispatches to be sent")
    for listener in (ann, bob):
        received = flush_to(listener, server)
        assert Counter(m.body for m in received) == Counter(texts)  # each exactly once
        # One batch, one connection: every message came from the same session.
        assert len({m.sender for m in received}) == 1
    assert ann.received()[0].sender == bob.received()[0].sender


def test_stream_lost_mid_batch_keeps_what_was_confirmed_and_retries_the_rest(server, listen, tmp_path):
    ann = listen(server)
    # Plaintext, so that the proxy can see the stream: it cuts the connection
    # instead of forwarding the client's second XEP-0198 ack request.
    proxy = ProxyProcess(tmp_path, cut_on=b"<r xmlns", cut_at=2)
    try:
        cut = messenger(server, plaintext=True, proxy=proxy.url("socks5"))
        register_messenger_objects(cut)
        texts = [f"n{i}" for i in range(6)]
        rows = schedule_messages(texts, recipients("xmpp", ann.account.jid))
        ids = [dispatches[0].pk for _, dispatches in rows]
        deliver_batch("xmpp", ids)
    finally:
        proxy.stop()

    statuses = dict(Dispatch.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["sent"] + ["error"] * 5
    for pk in ids[1:]:
        [error] = errors_of(Dispatch.objects.get(pk=pk))
        assert "closed before the server confirmed" in error.text and not error.permanent

    # Retried on a healthy connection: every message arrives; the one acknowledged
    # the first time is not sent again. (The second may have reached the server
    # before the cut: it is sent again all the same, at least once is the guarantee.)
    Dispatch.objects.filter(pk__in=ids).update(next_attempt_at=Dispatch.objects.get(pk=ids[0]).created)
    register_messenger_objects(messenger(server))
    deliver_batch("xmpp", ids)
    assert set(Dispatch.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"sent"}
    counts = Counter(m.body for m in flush_to(ann, server))
    assert set(counts) == set(texts) and counts["n0"] == 1
