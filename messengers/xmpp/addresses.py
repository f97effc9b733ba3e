"""JIDs of recipients and of the sending account.

Both must name an account (``user@domain``): a bare domain is a server, and
a message to it would be answered by the server, not read by anyone.
slixmpp's parser does the stringprep and IDNA work, so a stored address is
the normalised JID and one recipient is one address.
"""

from __future__ import annotations

from typing import Any

from slixmpp.jid import JID, InvalidJID

from ..exceptions import InvalidAddress, MessengerConfigurationError


def parse_jid(address: Any) -> JID:
    """The JID of a recipient address, or :class:`InvalidAddress` saying why.

    A recipient must be an account: ``user@domain`` or ``user@domain/resource``.
    """
    if not isinstance(address, str) or not address.strip():
        raise InvalidAddress(f"xmpp: {address!r} is not a JID (expected user@domain)")
    text = address.strip()
    try:
        jid = JID(text)
    except InvalidJID as exc:
        raise InvalidAddress(f"xmpp: {text!r} is not a valid JID: {exc}") from None
    if not jid.user or not jid.domain:
        raise InvalidAddress(f"xmpp: {text!r} is not a valid JID: expected user@domain")
    return jid


def sender_jid(from_jid: str) -> JID:
    """The sending account's JID; a bad one is a configuration error, raised at registration."""
    try:
        jid = JID(from_jid or "")
    except InvalidJID as exc:
        raise MessengerConfigurationError(f"xmpp: from_jid {from_jid!r} is not a valid JID: {exc}") from None
    if not jid.user or not jid.domain:
        raise MessengerConfigurationError(f"xmpp: from_jid {from_jid!r} must be user@domain")
    return jid
