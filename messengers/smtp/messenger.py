"""The SMTP messenger, on smtplib: one connection per batch, kept open between
batches of the same worker process for ``keepalive`` seconds."""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..base import MessengerBase
from ..exceptions import (
    InvalidAddress,
    MessengerConfigurationError,
    MessengerError,
    PermanentError,
    TemporaryError,
)
from ..redact import redact
from .compose import (
    EMAIL_RE,
    BodyCache,
    BounceAddress,
    DKIMSigner,
    Sender,
    WireAddress,
    build_message,
    mail_headers,
    plain_header_lines,
    wire_address,
)
from .connections import IDLE, ConnectionKey, close

logger = logging.getLogger(__name__)


def classify_smtp_error(exc: BaseException) -> Exception:
    """Map an smtplib error to a Temporary/PermanentError (5xx replies are permanent)."""
    code = None
    detail = str(exc)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()), (None, b""))
        detail = f"recipient refused: {code} {_text(reply)}"
    elif isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        detail = f"{code} {_text(exc.smtp_error)}"
    if isinstance(code, int) and 500 <= code < 600:
        return PermanentError(f"SMTP {detail}")
    return TemporaryError(f"SMTP {type(exc).__name__}: {detail}")


def _text(reply: Any) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


@dataclass(frozen=True)
class Outgoing:
    """One dispatch, ready for a transaction."""

    sender: WireAddress
    recipient: WireAddress
    data: bytes

    @property
    def utf8(self) -> bool:
        return self.sender.utf8 or self.recipient.utf8


class SMTPMessenger(MessengerBase):
    """Sends e-mail through an SMTP server.

    ``SMTPMessenger('from@example.org', 'user1', 'user1password',
    host='smtp.example.org', use_tls=True)``. With ``use_tls`` the server must
    offer STARTTLS: if it does not, the batch fails and the login is never sent
    in plaintext. Options are described in docs/messengers.md.
    """

    alias = "smtp"
    title = "E-mail"
    capabilities = frozenset({"text", "email"})
    secret_options = ("password", "dkim_private_key")

    def __init__(
        self,
        from_email: str | None = None,
        login: str | None = None,
        password: str | None = None,
        host: str = "localhost",
        port: int | None = None,
        use_tls: bool = False,
        use_ssl: bool = False,
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        keepalive: float = 30.0,
        dkim_selector: str | None = None,
        dkim_domain: str | None = None,
        dkim_key: str | bytes | None = None,
        dkim_key_file: str | None = None,
        bounce_address: str | None = None,
        pipelining: bool = True,
    ) -> None:
        if use_tls and use_ssl:
            raise MessengerConfigurationError("smtp: use_tls and use_ssl are exclusive")
        # smtplib encodes AUTH credentials as ASCII; the error it raises
        # otherwise names the character and its position in the password.
        if password and not password.isascii():
            raise MessengerConfigurationError(
                "smtp: the password has characters outside ASCII, which SMTP AUTH as smtplib "
                "speaks it cannot send; use an ASCII password for this account"
            )
        if login and not login.isascii():
            raise MessengerConfigurationError("smtp: the login has characters outside ASCII")
        self.from_email = from_email or "dispatcher@localhost"
        self.sender = Sender(self.from_email)
        #: the bare address of from_email ("Name <a@b>" -> "a@b"), for MAIL FROM
        self.envelope_from = self.sender.wire.address
        self.login = login
        self.password = password
        self.host = host or "localhost"
        self.port = port or (465 if use_ssl else 25)
        self.use_tls = use_tls
        self.use_ssl = use_ssl
        self.timeout = timeout
        if ssl_context is None:
            try:
                ssl_context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise MessengerConfigurationError(
                    f"smtp: ca_file {ca_file!r} is not a readable PEM file of CA certificates: {exc}"
                ) from None
        self.ssl_context = ssl_context
        self.keepalive = keepalive
        self.dkim: DKIMSigner | None = None
        if dkim_selector or dkim_key or dkim_key_file:
            if not dkim_selector:
                raise MessengerConfigurationError("smtp: dkim_key needs dkim_selector")
            self.dkim = DKIMSigner(dkim_selector, dkim_domain or self.sender.domain, dkim_key, dkim_key_file)
            self.dkim_private_key = self.dkim.key.decode("ascii", "replace")  # masked: a secret option
        self.bounce = BounceAddress(bounce_address) if bounce_address else None
        #: RFC 2920: with a server that offers PIPELINING, MAIL, RCPT and DATA go
        #: in one write and their replies are read together: two round trips a
        #: mail instead of four.
        self.pipelining = pipelining
        self.connection: smtplib.SMTP | None = None
        #: set while a transaction is open on ``connection``: such a connection is never kept
        self._in_transaction = False
        #: The bodies a batch's copy has written (see :meth:`for_batch`); None: none kept.
        self.bodies: BodyCache | None = None

    def for_batch(self, recorder: Any) -> SMTPMessenger:
        """A batch's copy, with a cache of its own of the bodies it writes (a
        copy is used by one thread; the registered messenger keeps none)."""
        clone = super().for_batch(recorder)
        assert isinstance(clone, SMTPMessenger)
        clone.bodies = BodyCache()
        return clone

    def __repr__(self) -> str:
        return f"<SMTPMessenger {self.host}:{self.port} from={self.from_email}>"

    @classmethod
    def get_address(cls, recipient: Any) -> Any:
        return getattr(recipient, "email", recipient)

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if not EMAIL_RE.match(address):
            raise InvalidAddress(f"smtp: {address!r} is not an e-mail address")
        if not address.isascii():
            wire_address(address)  # a domain IDNA cannot encode is refused here
        return address

    def bounce_dispatch_id(self, address: str) -> int | None:
        """The dispatch a bounce sent to ``address`` is about (see ``bounce_address``)."""
        return self.bounce.dispatch_id(address) if self.bounce else None

    # -- connection --------------------------------------------------------------
    @property
    def connection_key(self) -> ConnectionKey:
        # The TLS context is part of the key: a connection made trusting one
        # CA is never handed to a messenger that trusts another.
        return (self.host, self.port, self.login, self.use_tls, self.use_ssl, id(self.ssl_context))

    def before_send(self) -> None:
        reused = IDLE.take(self.connection_key, self.keepalive) if self.keepalive else None
        self.connection = reused or self._connect()
        self._in_transaction = False

    def after_send(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if self.keepalive and not self._in_transaction:
            IDLE.give(self.connection_key, connection)
        else:
            close(connection)
        self._in_transaction = False

    def _connect(self) -> smtplib.SMTP:
        try:
            if self.use_ssl:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            conn.ehlo()
            if self.use_tls:
                if not conn.has_extn("starttls"):
                    conn.close()
                    raise PermanentError(
                        f"SMTP server {self.host}:{self.port} does not offer STARTTLS and "
                        "use_tls is set: refusing to continue without TLS"
                    )
                conn.starttls(context=self.ssl_context)
                conn.ehlo()
            if self.login:
                conn.login(self.login, self.password or "")
            return conn
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentError(f"SMTP authentication failed: {exc.smtp_code}") from exc
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"SMTP server {self.host}:{self.port} certificate not trusted: {exc}"
            ) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise classify_smtp_error(exc) from exc

    def _discard(self) -> None:
        """Drop the connection (its state is unknown); the next dispatch opens a new one."""
        connection, self.connection = self.connection, None
        self._in_transaction = False
        if connection is not None:
            connection.close()

    def _reset(self) -> None:
        """End a failed transaction with RSET, or drop the connection if that fails."""
        try:
            if self.connection is not None and self.connection.rset()[0] == 250:
                self._in_transaction = False
                return
        except (smtplib.SMTPException, OSError):
            pass
        self._discard()

    # -- building ----------------------------------------------------------------
    def message_id(self, dispatch: Any) -> str:
        """Stable per dispatch, so a retried send is recognisable as the same mail."""
        if dispatch.pk:
            return f"<dispatch-{dispatch.pk}.{dispatch.message_id}@{self.sender.domain}>"
        return f"<test-{uuid.uuid4().hex}@{self.sender.domain}>"

    def build_email(self, dispatch: Any) -> Any:
        """The e-mail for one dispatch, as an ``email.message.Message``."""
        rendered = dispatch.rendered
        return build_message(
            self.sender, wire_address(dispatch.address), rendered.subject or "", rendered.text or "",
            rendered.html or "", rendered.headers, self.message_id(dispatch),
            getattr(rendered, "attachments", ()),
        )

    def mail_bytes(self, dispatch: Any, recipient: WireAddress) -> bytes:
        """The bytes of :meth:`build_email`'s mail. In a batch, a mail without
        attachments whose headers are all plain ASCII lines is written from
        those lines and the body the batch already wrote for its message
        (the same bytes but for a multipart's boundary, which a batch reuses)."""
        rendered = dispatch.rendered
        attachments: Sequence[Any] = getattr(rendered, "attachments", ())
        if self.bodies is None or attachments:
            return self.build_email(dispatch).as_bytes()
        lines = plain_header_lines(mail_headers(self.sender, recipient, rendered.subject or "",
                                                rendered.headers, self.message_id(dispatch)))
        if lines is None:
            return self.build_email(dispatch).as_bytes()
        head, body = self.bodies.parts(rendered.text or "", rendered.html or "")
        return head + lines + body

    def prepare(self, dispatch: Any) -> Outgoing:
        """Envelope and bytes of one dispatch; raises PermanentError if it can never be sent."""
        try:
            recipient = wire_address(dispatch.address)
        except InvalidAddress as exc:
            raise PermanentError(str(exc)) from None
        sender = self.bounce.for_dispatch(dispatch.pk) if self.bounce else self.sender.wire
        data = self.mail_bytes(dispatch, recipient)
        if self.dkim is not None:
            data = self.dkim.sign(data)
        return Outgoing(sender, recipient, data)

    # -- sending -----------------------------------------------------------------
    def send(self, message_cls: Any, message_model: Any, dispatch_models: Sequence[Any]) -> None:
        for dispatch in dispatch_models:
            try:
                outgoing = self.prepare(dispatch)
            except MessengerError as exc:
                self.mark_exception(dispatch, exc)
                continue
            except Exception as exc:  # a bug, or a mail the library cannot write: this one only
                logger.warning("smtp: cannot build dispatch %s: %s", dispatch.pk, redact(repr(exc)))
                self.mark_error(dispatch, exc)
                continue
            if self.connection is None:
                self.connection = self._connect()
            self._transaction(dispatch, self.connection, outgoing)

    def _transaction(self, dispatch: Any, connection: smtplib.SMTP, outgoing: Outgoing) -> None:
        options: list[str] = []
        if outgoing.utf8:
            if not connection.has_extn("smtputf8"):
                self.mark_failed(dispatch, PermanentError(
                    f"SMTP server {self.host}:{self.port} does not offer SMTPUTF8, which the address "
                    f"{(outgoing.recipient if outgoing.recipient.utf8 else outgoing.sender).address!r} needs"
                ))
                return
            options = ["SMTPUTF8", "BODY=8BITMIME"] if connection.has_extn("8bitmime") else ["SMTPUTF8"]
        self._in_transaction = True
        try:
            if self.pipelining and connection.has_extn("pipelining"):
                pipelined(connection, outgoing, options)
            else:
                # sendmail, not send_message: the envelope is known, no need to
                # parse it back out of the headers.
                connection.sendmail(outgoing.sender.address, [outgoing.recipient.address], outgoing.data,
                                    mail_options=options)
        except smtplib.SMTPServerDisconnected as exc:
            # The connection is gone: this dispatch is retried later, the
            # next one gets a fresh connection.
            self._discard()
            self.mark_error(dispatch, classify_smtp_error(exc))
        except smtplib.SMTPException as exc:
            self._reset()
            self.mark_exception(dispatch, classify_smtp_error(exc))
        except OSError as exc:  # SMTPException is an OSError: keep this after it
            self._discard()
            self.mark_error(dispatch, classify_smtp_error(exc))
        except Exception as exc:  # unexpected: where the transaction stands is unknown
            logger.warning("smtp: dispatch %s: unexpected %s", dispatch.pk, redact(repr(exc)))
            self._discard()
            self.mark_error(dispatch, exc)
        else:
            self._in_transaction = False
            self.mark_sent(dispatch)


def pipelined(connection: smtplib.SMTP, outgoing: Outgoing, options: list[str]) -> None:
    """One transaction with RFC 2920 PIPELINING: ``MAIL``, ``RCPT`` and ``DATA``
    in one write, their three replies read after it, then the message and its
    reply. Errors are raised as ``smtplib.sendmail`` raises them (the caller
    resets the connection), so both ways share one classification."""
    sender, recipient, data = outgoing.sender.address, outgoing.recipient.address, outgoing.data
    mail_options = list(options)
    if connection.has_extn("size"):
        mail_options.append(f"SIZE={len(data)}")
    connection.command_encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    # The addresses are bare (checked by EMAIL_RE, or made by us): quoteaddr's
    # parsing would give back the same "<address>".
    mail = f"MAIL FROM:<{sender}>" + "".join(f" {o}" for o in mail_options)
    connection.send(f"{mail}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n")
    mail_code, mail_reply = connection.getreply()
    rcpt_code, rcpt_reply = connection.getreply()
    data_code, data_reply = connection.getreply()
    if data_code == 354 and (mail_code != 250 or rcpt_code not in (250, 251)):
        # A server should refuse DATA after a failed MAIL or RCPT; one that did
        # not gets an empty message, ended at once, before the reset.
        connection.send(b".\r\n")
        connection.getreply()
    if mail_code != 250:
        raise smtplib.SMTPSenderRefused(mail_code, mail_reply, sender)
    if rcpt_code not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({recipient: (rcpt_code, rcpt_reply)})
    if data_code != 354:
        raise smtplib.SMTPDataError(data_code, data_reply)
    body = smtplib._quote_periods(data)  # type: ignore[attr-defined]
    if body[-2:] != b"\r\n":
        body += b"\r\n"
    connection.send(body + b".\r\n")
    code, reply = connection.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)
