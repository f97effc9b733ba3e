"""SMTP PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write when the
server offers it, the replies read together; refusals handled as without it.

The server here is a small real SMTP server on a loopback socket that
records each chunk it reads, so the test sees what went in one write.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from email.policy import compat32

import pytest

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch
from messengers.smtp import SMTPMessenger
from messengers.smtp.compose import POLICY, Sender, build_message, wire_address

pytestmark = pytest.mark.django_db


class PipeServer:
    """Speaks enough SMTP for a client; answers ``refuse`` recipients with
    550 and ``busy`` senders with 451; offers PIPELINING when told to."""

    def __init__(self, pipelining: bool = True):
        self.pipelining = pipelining
        self.chunks: list[bytes] = []
        self.messages: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn: socket.socket) -> None:
        buffer = b""
        in_data = False
        refused = False
        data = b""
        conn.sendall(b"220 pipe.test ESMTP\r\n")
        with conn:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                self.chunks.append(chunk)
                buffer += chunk
                while True:
                    if in_data:
                        end = buffer.find(b"\r\n.\r\n")
                        if end < 0:
                            break
                        data, buffer = buffer[: end + 2], buffer[end + 5:]
                        self.messages.append(data.replace(b"\r\n..", b"\r\n."))
                        conn.sendall(b"250 queued\r\n")
                        in_data = False
                        continue
                    line, sep, rest = buffer.partition(b"\r\n")
                    if not sep:
                        break
                    buffer = rest
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        extensions = [b"250-pipe.test", b"250-SIZE 10000000"]
                        if self.pipelining:
                            extensions.append(b"250-PIPELINING")
                        conn.sendall(b"\r\n".join(extensions) + b"\r\n250 8BITMIME\r\n")
                    elif verb == b"MAIL":
                        refused = b"busy" in line
                        conn.sendall(b"451 try later\r\n" if refused else b"250 ok\r\n")
                    elif verb == b"RCPT":
                        bad = b"refuse" in line or refused
                        refused = refused or bad
                        conn.sendall(b"550 no such user\r\n" if bad else b"250 ok\r\n")
                    elif verb == b"DATA":
                        if refused:
                            conn.sendall(b"554 no valid recipients\r\n")
                        else:
                            in_data = True
                            conn.sendall(b"354 go ahead\r\n")
                    elif verb == b"RSET":
                        refused = False
                        conn.sendall(b"250 reset\r\n")
                    elif verb == b"QUIT":
                        conn.sendall(b"221 bye\r\n")
                        return
                    else:
                        conn.sendall(b"250 ok\r\n")

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture(params=[True, False], ids=["offered", "not-offered"])
def server(request) -> Iterator[PipeServer]:
    srv = PipeServer(pipelining=request.param)
    register_messenger_objects(SMTPMessenger("noreply@example.org", host="127.0.0.1", port=srv.port,
                                             keepalive=0))
    yield srv
    srv.stop()


def deliver(addresses: list[str], text: str = "Hello") -> list[Dispatch]:
    [(_, dispatches)] = schedule_messages(text, recipients("smtp", addresses))
    deliver_batch("smtp", [d.pk for d in dispatches])
    return [Dispatch.objects.get(pk=d.pk) for d in dispatches]


def test_commands_go_in_one_write_when_the_server_offers_pipelining(server):
    sent = deliver(["a@example.org", "b@example.org"], "Hello\n.a line starting with a dot\nbye")
    assert [d.status for d in sent] == ["sent", "sent"]
    grouped = [c for c in server.chunks if c.startswith(b"MAIL FROM") and b"RCPT TO" in c and b"DATA" in c]
    assert len(grouped) == (2 if server.pipelining else 0)
    assert len(server.messages) == 2
    assert b"\r\n.a line starting with a dot\r\n" in server.messages[0]  # dot-stuffed on the wire, intact


def test_a_refused_recipient_fails_alone_and_the_connection_goes_on(server):
    sent = deliver(["a@example.org", "refuse@example.org", "c@example.org"])
    assert [d.status for d in sent] == ["sent", "failed", "sent"]
    assert "550" in sent[1].errors.get().text
    assert len(server.messages) == 2


def test_a_temporary_refusal_of_the_sender_is_retried(server):
    register_messenger_objects(SMTPMessenger("busy@example.org", host="127.0.0.1", port=server.port,
                                             keepalive=0))
    [dispatch] = deliver(["a@example.org"])
    assert dispatch.status == "error" and "451" in dispatch.errors.get().text


@pytest.mark.parametrize("subject", ["Weekly report", "  spaced  out\tsubject ", "Grüße aus Köln", "x" * 1200,
                                     "a;b,c<d>e\"f'(g)[h]=?i?="])
@pytest.mark.parametrize("html", ["", "<p>Hello <b>you</b></p>"])
def test_the_fast_header_path_writes_the_bytes_compat32_writes(subject, html):
    """Headers written directly (the common ASCII case) are byte for byte what
    compat32's folding would write, for every header of real mails."""
    headers = {"List-Unsubscribe": "<https://example.org/u/" + "t" * 1100 + ">",
               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Tag": "  kept  as  is "}
    mail = build_message(Sender("Team <noreply@example.org>"), wire_address("anna@bücher.example"), subject,
                         "Hello\nthere " * 50, html, headers, "<dispatch-1.1@example.org>")
    slow = compat32.clone(max_line_length=998, linesep="\r\n")
    assert mail.as_bytes(policy=POLICY) == mail.as_bytes(policy=slow)
