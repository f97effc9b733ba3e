"""XMPP (Jabber) chat messages, on slixmpp; one stream per batch.

slixmpp is asyncio based and the delivery engine is synchronous (a Celery
prefork child runs one batch at a time on its main thread). So each batch
gets its own event loop: ``before_send`` creates it and opens one XMPP
session, ``send`` runs the sends on it, ``after_send`` closes the stream, the
loop and its resolver threads. Nothing outlives the batch, and the loop is
never installed as the thread's current loop.

A dispatch is SENT only once the server has taken responsibility for the
stanza: with XEP-0198 (stream management) when the server acknowledges it,
without XEP-0198 when the server answers a ping sent after it on the same
stream (a server handles a stream's stanzas in order). See docs/xmpp.md.

One job per module: ``addresses`` (JIDs), ``connection`` (where to connect,
TLS, proxy), ``errors`` (what an XMPP error means for a dispatch),
``client`` (the slixmpp stream), ``session`` (a batch's session: log in,
send and confirm, close) and ``messenger`` (the messenger contract).
"""

from .addresses import parse_jid
from .errors import xmpp_error_to_exception
from .messenger import XMPPMessenger

__all__ = ["XMPPMessenger", "parse_jid", "xmpp_error_to_exception"]
