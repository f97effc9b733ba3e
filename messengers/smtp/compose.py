"""Turning a rendered dispatch into the bytes and envelope an SMTP server accepts.

Everything that can make one mail unsendable is decided here, per dispatch and
before a transaction starts, so that it fails that dispatch alone and never
leaves a connection in the middle of MAIL/RCPT/DATA.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email._policybase import Compat32
from email.charset import QP, Charset
from email.encoders import encode_base64
from email.header import Header
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, getaddresses, parseaddr
from typing import Any

import dkim
import idna
from dkim.crypto import parse_pem_private_key

from ..base import Attachment
from ..exceptions import InvalidAddress, MessengerConfigurationError, PermanentError


class _WirePolicy(Compat32):
    """compat32, with the common header written directly: an ASCII value whose
    line fits is exactly ``name: value`` (compat32 would build a ``Header``
    and fold it to the same bytes, at a quarter of a mail's CPU); anything
    else goes the usual way."""

    def fold_binary(self, name: str, value: Any) -> bytes:
        if (isinstance(value, str) and value.isascii() and "\r" not in value and "\n" not in value
                and len(name) + len(value) + 2 <= (self.max_line_length or 0)):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


#: compat32 (six times faster than ``EmailMessage``'s header registry, which
#: shows at thousands of mails a second), writing CRLF as RFC 5321 requires
#: (smtplib sends bytes as they are), and folding no header short of SMTP's
#: limit: a long List-Unsubscribe URL stays on one line, as clients read it best.
POLICY = _WirePolicy(max_line_length=998, linesep="\r\n")

#: UTF-8 bodies as quoted-printable: readable where they are mostly ASCII.
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP

#: A bare address (no display name): one "@", no spaces or header punctuation.
#: A regular expression, as a fan-out validates 100,000 addresses at a time.
EMAIL_RE = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+$")

#: C0 and C1 control characters and DEL; TAB is ordinary white space in a header.
CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

#: A MIME type as RFC 2045 spells it (type "/" subtype, token characters only).
MIMETYPE_RE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")

#: Headers whose value is a list of addresses: a non-ASCII display name is
#: encoded per address (RFC 2047 applies to the phrase, never to the address).
ADDRESS_HEADERS = frozenset({"from", "sender", "to", "cc", "reply-to"})


@dataclass(frozen=True)
class WireAddress:
    """An address as it goes in MAIL FROM / RCPT TO and in the address headers."""

    address: str
    #: True when the local part is not ASCII: only a server offering SMTPUTF8 takes it.
    utf8: bool


def idna_domain(domain: str) -> str:
    """The ASCII (A-label) form of a domain; ASCII domains are returned as they are."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidAddress(f"smtp: the domain {domain!r} cannot be IDNA-encoded: {exc}") from None


def wire_address(address: str) -> WireAddress:
    local, _, domain = address.rpartition("@")
    return WireAddress(f"{local}@{idna_domain(domain)}", not local.isascii())


def header_address(address: WireAddress) -> str:
    """An address for a header. A non-ASCII local part goes as raw UTF-8 (the
    mail is sent with SMTPUTF8): compat32 writes surrogate-escaped text back
    as the bytes it came from instead of making an encoded-word of it, which no
    parser would read as an address."""
    if address.utf8:
        return address.address.encode("utf-8").decode("ascii", "surrogateescape")
    return address.address


class Sender:
    """The parsed ``from_email``: the From header, and the envelope sender."""

    def __init__(self, from_email: str) -> None:
        if CONTROL_RE.search(from_email):
            raise MessengerConfigurationError("smtp: from_email contains a control character")
        name, address = parseaddr(from_email)
        if not EMAIL_RE.match(address or ""):
            raise MessengerConfigurationError(f"smtp: from_email {from_email!r} has no e-mail address")
        try:
            self.wire = wire_address(address)
        except InvalidAddress as exc:
            raise MessengerConfigurationError(f"smtp: from_email: {exc}") from None
        self.domain = self.wire.address.rpartition("@")[2]
        # formataddr encodes a non-ASCII display name alone (RFC 2047 applies
        # to the phrase only), quotes one with specials, and leaves the address.
        self.header = formataddr((name, header_address(self.wire)), charset="utf-8")


class BounceAddress:
    """``bounces+{id}@example.org``: an envelope sender per dispatch (VERP), so
    that a bounce, whichever address it is sent to, names its dispatch."""

    def __init__(self, template: str) -> None:
        self.template = template
        prefix, marker, suffix = template.partition("{id}")
        if (not marker or "{" in prefix + suffix or "}" in prefix + suffix
                or not EMAIL_RE.match(template.replace("{id}", "0")) or "@" not in suffix):
            raise MessengerConfigurationError(
                f"smtp: bounce_address {template!r} must be an address with one {{id}} before the @, "
                "like bounces+{id}@example.org"
            )
        try:
            wire_address(template.replace("{id}", "0"))
        except InvalidAddress as exc:
            raise MessengerConfigurationError(f"smtp: bounce_address: {exc}") from None
        local_suffix, _, domain = suffix.rpartition("@")
        self._pattern = re.compile(
            re.escape(prefix) + r"(\d+)" + re.escape(local_suffix) + "@" + re.escape(idna_domain(domain)),
            re.IGNORECASE,
        )

    def for_dispatch(self, dispatch_id: int | None) -> WireAddress:
        # A test message has no dispatch: its bounce still goes to the bounce mailbox.
        return wire_address(self.template.replace("{id}", str(dispatch_id) if dispatch_id else "test"))

    def dispatch_id(self, address: str) -> int | None:
        """The dispatch id in a bounce address, or None if it is not one of ours."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        try:
            address = f"{local}@{idna_domain(domain)}"
        except InvalidAddress:
            return None
        match = self._pattern.fullmatch(address)
        return int(match.group(1)) if match else None


class DKIMSigner:
    """DKIM signatures with dkimpy, relaxed/relaxed (robust to the header
    re-folding and trailing white space changes MTAs make on the way).

    dkimpy's RSA is pure Python: a 2048-bit signature costs some 8 ms of CPU.
    """

    #: RFC 8058: a one-click unsubscribe counts only if DKIM covers both
    #: headers; dkimpy's default list has the first one only.
    EXTRA_HEADERS = (b"list-unsubscribe-post",)

    def __init__(self, selector: str, domain: str, key: str | bytes | None, key_file: str | None) -> None:
        if key_file:
            try:
                with open(key_file, "rb") as f:
                    key = f.read()
            except OSError as exc:
                raise MessengerConfigurationError(
                    f"smtp: dkim_key_file {key_file!r} cannot be read: {exc.strerror}"
                ) from None
        if not key:
            raise MessengerConfigurationError("smtp: dkim_selector needs dkim_key or dkim_key_file")
        self.key = key.encode("ascii") if isinstance(key, str) else key
        try:
            parse_pem_private_key(self.key)
        except Exception:  # whatever the parser trips on: say nothing of the key's content
            raise MessengerConfigurationError(
                "smtp: the dkim key is not an RSA private key in PEM form"
            ) from None
        self.selector = selector.encode("ascii")
        self.domain = idna_domain(domain).encode("ascii")

    def sign(self, data: bytes) -> bytes:
        """``data`` with a DKIM-Signature header in front."""
        signer = dkim.DKIM(data, linesep=b"\r\n")
        signer.should_sign.update(self.EXTRA_HEADERS)
        return signer.sign(self.selector, self.domain, self.key, canonicalize=(b"relaxed", b"relaxed")) + data


def check_header(name: str, value: str) -> None:
    """CR/LF would end the header early (header injection); other control
    characters are not allowed in a header either. Such a mail will never be
    right, so its dispatch fails at once."""
    if CONTROL_RE.search(value):
        raise PermanentError(f"SMTP: the {name} contains a control character (CR, LF or another); not sent")


def _mime_text(content: str, subtype: str) -> MIMEText:
    """A text part: plain 7-bit when it can be, else UTF-8 quoted-printable."""
    if content.isascii() and all(len(line) < 998 for line in content.splitlines()):
        return MIMEText(content, subtype, "us-ascii", policy=POLICY)
    return MIMEText(content, subtype, UTF8_QP, policy=POLICY)  # type: ignore[arg-type]


def _header_value(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def _address_header_value(value: str) -> str:
    """An address list for a header, each non-ASCII display name encoded on its own."""
    if value.isascii():
        return value
    written = []
    for name, address in getaddresses([value]):
        if not address:
            continue
        try:
            wire = wire_address(address) if "@" in address else WireAddress(address, not address.isascii())
        except InvalidAddress as exc:
            raise PermanentError(str(exc)) from None
        written.append(formataddr((name, header_address(wire)), charset="utf-8"))
    return ", ".join(written)


def _attachment_part(attachment: Attachment) -> Message:
    """One attachment as a MIME part, written as Django's mail writes it: a text
    as text (base64 when it is not UTF-8), a mail as message/rfc822, anything
    else base64-encoded."""
    mimetype = attachment.mimetype or "application/octet-stream"
    if not MIMETYPE_RE.match(mimetype):
        raise PermanentError(f"SMTP: {mimetype!r} is not a MIME type; not sent")
    for what, value in (("attachment name", attachment.filename), ("content id", attachment.content_id)):
        if value:
            check_header(what, value)
    if attachment.disposition not in (None, "attachment", "inline"):
        raise PermanentError(f"SMTP: disposition {attachment.disposition!r} is not attachment or inline")
    maintype, subtype = mimetype.lower().split("/", 1)
    part: Message
    text = None
    if maintype == "text":
        try:
            text = attachment.content.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if text is not None:
        part = _mime_text(text, subtype)
    elif (maintype, subtype) == ("message", "rfc822"):
        part = MIMEMessage(message_from_bytes(attachment.content, policy=POLICY), policy=POLICY)
    else:
        part = MIMEBase(maintype, subtype, policy=POLICY)
        part.set_payload(attachment.content)
        encode_base64(part)
    if attachment.disposition:
        filename = attachment.filename
        if filename:
            # RFC 2231 for a name outside ASCII, as Django writes it.
            param: str | tuple[str, str, str] = filename if filename.isascii() else ("utf-8", "", filename)
            part.add_header("Content-Disposition", attachment.disposition, filename=param)
        else:
            part.add_header("Content-Disposition", attachment.disposition)
    if attachment.content_id:
        part["Content-ID"] = attachment.content_id
    return part


def _body(text: str, html: str) -> Message:
    if text and html:
        body: Message = MIMEMultipart("alternative", policy=POLICY)
        body.attach(_mime_text(text, "plain"))
        body.attach(_mime_text(html, "html"))
        return body
    if html:
        return _mime_text(html, "html")
    return _mime_text(text, "plain")


_DATE: tuple[int, str] = (0, "")


def mail_date() -> str:
    """The Date header for now: RFC 5322 dates count whole seconds, so one
    formatting a second serves every mail of that second (it was a tenth
    of a mail's CPU)."""
    global _DATE
    second = int(time.time())
    cached = _DATE
    if cached[0] != second:
        cached = _DATE = (second, formatdate(second, localtime=False))
    return cached[1]


def mail_headers(sender: Sender, recipient: WireAddress, subject: str, headers: Mapping[str, str],
                 message_id: str) -> list[tuple[str, str | Header]]:
    """The top-level headers of one dispatch's mail, in the order they are written.

    ``headers`` come after the standard ones; a From, To, Subject, Date or
    Message-ID among them replaces the one the messenger would write (the
    envelope sender and recipient stay what they are). A Bcc header is never
    written: a blind copy is a dispatch of its own.
    """
    check_header("subject", subject)
    standard: dict[str, str | Header] = {
        "From": sender.header, "To": header_address(recipient), "Subject": _header_value(subject),
        "Date": mail_date(), "Message-ID": message_id,
    }
    by_lower = {name.lower(): name for name in standard}
    extra: list[tuple[str, str | Header]] = []
    for name, value in headers.items():
        check_header(f"header {name}", value)
        if CONTROL_RE.search(name) or ":" in name or " " in name or not name:
            raise PermanentError(f"SMTP: {name!r} is not a header name; not sent")
        lower = name.lower()
        if lower == "bcc":
            continue
        written = _address_header_value(value) if lower in ADDRESS_HEADERS else _header_value(value)
        if lower in by_lower:
            standard[by_lower[lower]] = written
        else:
            extra.append((name, written))
    return [*standard.items(), *extra]


def build_message(sender: Sender, recipient: WireAddress, subject: str, text: str, html: str,
                  headers: Mapping[str, str], message_id: str,
                  attachments: Sequence[Attachment] = ()) -> Message:
    """The mail of one dispatch (its headers: :func:`mail_headers`)."""
    written = mail_headers(sender, recipient, subject, headers, message_id)
    mail = _body(text, html)
    if attachments:
        body = mail
        mail = MIMEMultipart("mixed", policy=POLICY)
        if text or html:
            mail.attach(body)
        for attachment in attachments:
            mail.attach(_attachment_part(attachment))
    for name, value in written:
        mail[name] = value  # type: ignore[assignment]
    return mail


class BodyCache:
    """The bytes of a mail without its own headers, kept for the next
    dispatch of the same message: a batch's mails differ only in their
    headers, and writing the MIME body again for each was most of what
    building a mail cost. Only for mails without attachments; a few bodies
    at most (one batch, a few messages)."""

    SIZE = 8

    def __init__(self) -> None:
        self.bodies: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def parts(self, text: str, html: str) -> tuple[bytes, bytes]:
        """``(MIME headers, blank line and body)`` of the body part, as the
        generator writes them at the top of a mail."""
        key = (text, html)
        found = self.bodies.get(key)
        if found is None:
            data = _body(text, html).as_bytes()
            head, sep, rest = data.partition(b"\r\n\r\n")
            found = (head + b"\r\n", b"\r\n" + rest)
            if len(self.bodies) >= self.SIZE:
                self.bodies.clear()
            self.bodies[key] = found
        return found


def plain_header_lines(written: Sequence[tuple[str, str | Header]]) -> bytes | None:
    """The headers as ``name: value`` lines when every one is an ASCII string
    that fits a line (what :class:`_WirePolicy` writes for them too); None
    when one needs encoding or folding, for the generator to write."""
    lines = []
    limit = POLICY.max_line_length or 0
    for name, value in written:
        if (not isinstance(value, str) or not value.isascii() or "\r" in value or "\n" in value
                or len(name) + len(value) + 2 > limit):
            return None
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("ascii")
