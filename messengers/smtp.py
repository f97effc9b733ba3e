"""E-mail over SMTP, on smtplib: one connection per batch, kept open between
batches of the same worker process for ``keepalive`` seconds."""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Sequence
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import formatdate, parseaddr
from typing import Any

from .base import MessengerBase
from .exceptions import InvalidAddress, MessengerConfigurationError, PermanentError, TemporaryError

ConnectionKey = tuple[str, int, str | None, bool, bool]


class IdleConnections:
    """SMTP connections a worker process keeps between batches.

    Opening a connection (TCP, greeting, EHLO, STARTTLS, AUTH) costs several
    round trips; a worker that sends batch after batch to one server reuses
    it. A connection idle for longer than ``keepalive``, or that does not
    answer NOOP, is closed instead. A forked child forgets (without closing)
    the connections of its parent, whose sockets are not its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[ConnectionKey, list[tuple[smtplib.SMTP, float]]] = {}

    def take(self, key: ConnectionKey, keepalive: float) -> smtplib.SMTP | None:
        while True:
            with self._lock:
                stack = self._idle.get(key)
                if not stack:
                    return None
                connection, since = stack.pop()
            if time.monotonic() - since <= keepalive:
                try:
                    if connection.noop()[0] == 250:
                        return connection
                except (smtplib.SMTPException, OSError):
                    pass
            _close(connection)

    def give(self, key: ConnectionKey, connection: smtplib.SMTP) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append((connection, time.monotonic()))

    def forget(self) -> None:
        self._idle = {}
        self._lock = threading.Lock()


IDLE = IdleConnections()
os.register_at_fork(after_in_child=IDLE.forget)


def _close(connection: smtplib.SMTP) -> None:
    try:
        connection.quit()
    except (smtplib.SMTPException, OSError):
        connection.close()


#: compat32 without folding header lines short of SMTP's limit: a long
#: List-Unsubscribe URL stays on one line, as mail clients read it best.
POLICY = compat32.clone(max_line_length=998)

#: UTF-8 bodies as quoted-printable: readable where they are mostly ASCII.
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP


def _mime_text(content: str, subtype: str) -> MIMEText:
    """A text part: plain 7-bit when it can be, else UTF-8 quoted-printable."""
    if content.isascii() and all(len(line) < 998 for line in content.splitlines()):
        return MIMEText(content, subtype, "us-ascii", policy=POLICY)
    return MIMEText(content, subtype, UTF8_QP, policy=POLICY)  # type: ignore[arg-type]


#: A bare address (no display name): one "@", no spaces or header punctuation.
#: A regular expression, as a fan-out validates 100,000 addresses at a time.
EMAIL_RE = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+$")


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


class SMTPMessenger(MessengerBase):
    """Sends e-mail through an SMTP server.

    ``SMTPMessenger('from@example.org', 'user1', 'user1password',
    host='smtp.example.org', use_tls=True)``. With ``use_tls`` the server must
    offer STARTTLS: if it does not, the batch fails and the login is never sent
    in plaintext.
    """

    alias = "smtp"
    title = "E-mail"
    capabilities = frozenset({"text", "email"})

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
    ) -> None:
        if use_tls and use_ssl:
            raise MessengerConfigurationError("smtp: use_tls and use_ssl are exclusive")
        self.from_email = from_email or "dispatcher@localhost"
        self.login = login
        self.password = password
        self.host = host or "localhost"
        self.port = port or (465 if use_ssl else 25)
        self.use_tls = use_tls
        self.use_ssl = use_ssl
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=ca_file)
        self.keepalive = keepalive
        #: the bare address of from_email ("Name <a@b>" -> "a@b"), for MAIL FROM
        self.envelope_from = parseaddr(self.from_email)[1] or self.from_email
        self.connection: smtplib.SMTP | None = None

    def __repr__(self) -> str:
        return f"<SMTPMessenger {self.host}:{self.port} from={self.from_email}>"

    @classmethod
    def get_address(cls, recipient: Any) -> Any:
        return getattr(recipient, "email", recipient)

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if not EMAIL_RE.match(address):
            raise InvalidAddress(f"smtp: {address!r} is not an e-mail address")
        return address

    # -- connection --------------------------------------------------------------
    @property
    def connection_key(self) -> ConnectionKey:
        return (self.host, self.port, self.login, self.use_tls, self.use_ssl)

    def before_send(self) -> None:
        reused = IDLE.take(self.connection_key, self.keepalive) if self.keepalive else None
        self.connection = reused or self._connect()

    def after_send(self) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if self.keepalive:
            IDLE.give(self.connection_key, connection)
        else:
            _close(connection)

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

    # -- sending -----------------------------------------------------------------
    def build_email(self, dispatch: Any) -> Message:
        """The e-mail for one dispatch.

        Built with the ``email.mime`` classes (the compat32 policy): six times
        faster than ``EmailMessage``'s header registry, which shows at
        thousands of mails a second.
        """
        rendered = dispatch.rendered
        text = _mime_text(rendered.text or "", "plain")
        if rendered.html:
            mail: Message = MIMEMultipart("alternative", policy=POLICY)
            mail.attach(text)
            mail.attach(_mime_text(rendered.html, "html"))
        else:
            mail = text
        mail["From"] = self.from_email
        mail["To"] = dispatch.address
        subject = rendered.subject
        mail["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = self.message_id(dispatch)
        for name, value in rendered.headers.items():
            mail[name] = value
        return mail

    def message_id(self, dispatch: Any) -> str:
        """Stable per dispatch, so a retried send is recognisable as the same mail."""
        domain = self.from_email.rpartition("@")[2] or "localhost"
        if dispatch.pk:
            return f"<dispatch-{dispatch.pk}.{dispatch.message_id}@{domain}>"
        return f"<test-{uuid.uuid4().hex}@{domain}>"

    def send(self, message_cls: Any, message_model: Any, dispatch_models: Sequence[Any]) -> None:
        for dispatch in dispatch_models:
            if self.connection is None:
                self.connection = self._connect()
            try:
                # sendmail, not send_message: the envelope is known, no need to
                # parse it back out of the headers.
                data = self.build_email(dispatch).as_bytes()
                self.connection.sendmail(self.envelope_from, [dispatch.address], data)
            except smtplib.SMTPServerDisconnected as exc:
                # The connection is gone: this dispatch is retried later, the
                # next one gets a fresh connection.
                self.connection = None
                self.mark_error(dispatch, classify_smtp_error(exc))
            except smtplib.SMTPException as exc:
                self.mark_exception(dispatch, classify_smtp_error(exc))
                self._reset()
            except OSError as exc:  # SMTPException is an OSError: keep this last
                self.connection = None
                self.mark_error(dispatch, classify_smtp_error(exc))
            else:
                self.mark_sent(dispatch)

    def _reset(self) -> None:
        try:
            if self.connection is not None:
                self.connection.rset()
        except (smtplib.SMTPException, OSError):
            self.connection = None
