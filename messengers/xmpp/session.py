"""A batch's XMPP session: log in, send and get each group confirmed, close.

"Written to a socket" is not "sent": a group of messages counts only once
the server has taken it (an XEP-0198 ack, or without XEP-0198 the answer to
a ping sent after it on the same stream). These coroutines run on the
batch's own event loop; the messenger records outcomes outside it.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, TypeVar

from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.jid import JID

from ..exceptions import MessengerError, PermanentError, TemporaryError
from .client import Client
from .connection import PLAINTEXT, Connection

logger = logging.getLogger("messengers.xmpp")

T = TypeVar("T")

#: What a group confirmation reports: each confirmed stanza id with the error
#: the server bounced it with (or None), and why the others were not confirmed.
Confirmed = tuple[dict[str, MessengerError | None], MessengerError | None]


async def start_session(client: Client, connection: Connection) -> None:
    """Connect and log in within ``connection.timeout``, or raise why not.

    Bad credentials, an untrusted certificate or a server without STARTTLS
    raise :class:`PermanentError`; refused connections, DNS failures and
    timeouts :class:`TemporaryError`.
    """
    negotiated = client.loop.create_future()

    def on_negotiated(_: Any) -> None:
        if not negotiated.done():
            negotiated.set_result(True)

    client.add_event_handler("stream_negotiated", on_negotiated)
    where = connection.where
    stage = "connecting"
    try:
        async with asyncio.timeout(connection.timeout):
            retry = await client.connect(connection.host, connection.port)
            if retry is not None:  # every address failed; slixmpp would retry forever
                client.cancel_connection_attempt()
                errors = "; ".join(dict.fromkeys(client.connection_errors)) or "unknown error"
                raise client.failure or TemporaryError(f"cannot connect to XMPP server {where}: {errors}")
            stage = "logging in"
            lost = client.disconnected
            await asyncio.wait({negotiated, lost}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        client.cancel_connection_attempt()
        raise client.failure or TemporaryError(
            f"XMPP server {where}: no session within {connection.timeout:g}s ({stage})"
        ) from None
    if not negotiated.done() or client.closed:
        raise client.failure or TemporaryError(
            f"XMPP server {where} closed the stream before the session started"
        )
    if connection.mode != PLAINTEXT and not client.encrypted:  # never without TLS unless asked
        raise PermanentError(f"XMPP session with {where} is not encrypted")
    client.ready = True
    logger.debug(
        "xmpp: session %s on %s (%s, stream management: %s)",
        client.boundjid, where, connection.mode, client.stream_management,
    )


async def send_and_confirm(
    client: Client, items: list[tuple[str, JID, str]], message_type: str, timeout: float
) -> Confirmed:
    """Send ``(stanza id, to, body)`` items, then wait until the server has taken every stanza.

    Returns the confirmed stanza ids (each with the error the server bounced
    it with, if any), and the reason the rest were not confirmed.
    """
    if client.closed or client.failure:
        return {}, client.failure or TemporaryError("xmpp: the XMPP stream was closed during the batch")
    for sid, to, body in items:
        message = client.make_message(mto=to, mbody=body, mtype=message_type)  # type: ignore[arg-type]
        message["id"] = sid
        message.send()
    ids = [sid for sid, _, _ in items]
    failure: MessengerError | None = None
    try:
        async with asyncio.timeout(timeout):
            if client.stream_management:
                # Every queued stanza written (and counted by XEP-0198) before asking.
                await _wait_or_lost(client, asyncio.ensure_future(client.waiting_queue.join()))
                client.plugin["xep_0198"].request_ack()
                await _until(client, lambda: all(sid in client.acked for sid in ids))
            else:
                await _ping(client, timeout)
    except TimeoutError:
        failure = TemporaryError(f"xmpp: the server did not confirm the messages within {timeout:g}s")
        client.fail(failure)
        client.abort()
    except MessengerError as exc:
        failure = exc
    if failure is None:
        return {sid: client.bounces.get(sid) for sid in ids}, None
    # Acknowledged before the stream was lost: those were sent all the same.
    return {sid: client.bounces.get(sid) for sid in ids if sid in client.acked}, failure


async def _until(client: Client, predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate()``; raise if the stream closes first."""
    while not predicate():
        if client.closed or client.failure:
            raise client.failure or TemporaryError(
                "xmpp: the XMPP stream closed before the server confirmed the messages"
            )
        client.changed.clear()
        await client.changed.wait()


async def _wait_or_lost(client: Client, awaitable: asyncio.Future[T]) -> T:
    """``awaitable``'s result, unless the stream closes first."""
    lost = client.disconnected
    if not client.closed:
        await asyncio.wait({awaitable, lost}, return_when=asyncio.FIRST_COMPLETED)
    if not awaitable.done():
        awaitable.cancel()
        raise client.failure or TemporaryError(
            "xmpp: the XMPP stream closed before the server confirmed the messages"
        )
    return awaitable.result()


async def _ping(client: Client, timeout: float) -> None:
    """Without XEP-0198: a ping answered means every earlier stanza was handled."""
    iq = client.Iq(stype="get", sto=client.boundjid.domain)
    iq.xml.append(ET.Element("{urn:xmpp:ping}ping"))
    try:
        await _wait_or_lost(client, iq.send(timeout=timeout))
    except IqError:
        pass  # an error reply is a reply: the stanzas before it were handled
    except IqTimeout:
        raise TemporaryError("xmpp: the server did not answer the ping after the messages") from None


def close_session(loop: asyncio.AbstractEventLoop, client: Client | None, timeout: float) -> None:
    """Close the stream (waiting briefly for the server's goodbye), then everything on the loop.

    Runs even after errors, and leaves nothing behind (task, socket, resolver
    thread, loop): a Celery prefork child runs any number of batches in a row.
    """
    if loop.is_closed():
        return
    try:
        if client is not None:
            try:
                loop.run_until_complete(asyncio.wait_for(_disconnect(client), min(timeout, 5)))
            except Exception as exc:  # a failed goodbye is not a failed send
                logger.debug("xmpp: disconnect: %r", exc)
                client.abort()
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


async def _disconnect(client: Client) -> None:
    client.cancel_connection_attempt()
    if client.transport is not None and client.ready and not client.failure:
        await client.disconnect(wait=2)  # close the stream; the server answers in kind
    if client.transport is not None:
        client.abort()
    for _ in range(3):  # let connection_lost() run
        await asyncio.sleep(0)
