"""Telegram, through the Bot API's ``sendMessage``.

``TelegramMessenger('123:ABC', proxy={'https': 'socks5://user:pass@host:1080'})``.
An address is a chat id (an integer, negative for groups) or ``@channelname``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.dispatch import Signal

from .base import Envelope
from .exceptions import InvalidAddress, MessengerError, PermanentError, RateLimited, TemporaryError
from .http import HTTPMessenger, ProxySpec
from .redact import redact

logger = logging.getLogger("messengers.telegram")

#: Sent when Telegram says a group became a supergroup with a new id:
#: ``sender`` is the messenger class; ``old_chat_id``, ``new_chat_id``, ``dispatch``.
#: Connect to it to update the chat ids you store.
chat_migrated = Signal()

MAX_LENGTH = 4096
_CHANNEL = re.compile(r"^@[A-Za-z][A-Za-z0-9_]{3,}$")


def utf16_len(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_LENGTH) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units, at a
    paragraph, line or word boundary when there is one in the second half of
    the part, else mid-word."""
    parts: list[str] = []
    while utf16_len(text) > limit:
        units = cut = 0
        for cut, char in enumerate(text):  # noqa: B007 - cut is used after the loop
            units += 2 if ord(char) > 0xFFFF else 1
            if units > limit:
                break
        head = text[:cut]
        for separator in ("\n\n", "\n", " "):
            at = head.rfind(separator)
            if at > cut // 2:
                parts.append(head[:at])
                text = text[at + len(separator):]
                break
        else:
            parts.append(head)
            text = text[cut:]
    parts.append(text)
    return [part for part in parts if part.strip()]


def _message_id(sent: Any) -> Any:
    return sent.get("message_id") if isinstance(sent, dict) else None


class ChatMigrated(Exception):
    def __init__(self, new_chat_id: int):
        super().__init__(new_chat_id)
        self.new_chat_id = new_chat_id


class TelegramMessenger(HTTPMessenger):
    """Sends texts to Telegram chats, groups and channels as a bot.

    Texts longer than 4096 characters go as several messages; the dispatch is
    sent once all of them are, and a retry resumes with the first part not
    sent (the progress is kept in ``Dispatch.result``).
    """

    alias = "telegram"
    title = "Telegram"
    api_base = "https://api.telegram.org"
    #: ours, then django-sitemessage's
    address_attribute = ("telegram_chat_id", "telegram")
    requires_text = True
    secret_options = ("auth_token",)

    def __init__(
        self,
        auth_token: str,
        proxy: ProxySpec = None,
        *,
        parse_mode: str | None = None,
        link_preview_options: dict[str, Any] | None = None,
        disable_notification: bool | None = None,
        message_thread_id: int | None = None,
        **http_options: Any,
    ) -> None:
        super().__init__(proxy=proxy, **http_options)
        self.auth_token = auth_token
        self.parse_mode = parse_mode
        self.link_preview_options = link_preview_options
        self.disable_notification = disable_notification
        self.message_thread_id = message_thread_id
        #: Chats that moved (old id -> new id), learnt while sending; shared by
        #: the batches of this process so later sends go straight to the new id.
        self.migrated_chats: dict[int, int] = {}

    def validate_address(self, address: Any) -> str:
        address = super().validate_address(address)
        if not (re.fullmatch(r"-?\d+", address) or _CHANNEL.match(address)):
            raise InvalidAddress(f"telegram: {address!r} is neither a chat id nor an @channel name")
        return address

    # -- the Bot API ---------------------------------------------------------------
    def bot(self, method: str, payload: dict[str, Any] | None = None, *, what: str = "") -> Any:
        """Call a Bot API method; return its ``result`` or raise the mapped error."""
        body = self.call("POST", f"bot{self.auth_token}/{method}", what=what or method, json=payload or {})
        return body.get("result")

    def error_for(self, response: Any, body: Any, what: str) -> Exception | None:  # type: ignore[override]
        if isinstance(body, dict) and body.get("ok") is True:
            return None
        if not isinstance(body, dict):
            error = self.http_error(response, what)
            return error or TemporaryError(f"telegram {what}: HTTP {response.status_code}, not JSON")
        code = body.get("error_code", response.status_code)
        description = redact(str(body.get("description", "")))
        parameters = body.get("parameters") or {}
        text = f"telegram {what}: {code} {description}".strip()
        if parameters.get("migrate_to_chat_id"):
            return ChatMigrated(int(parameters["migrate_to_chat_id"]))
        if code == 429 or parameters.get("retry_after"):
            return RateLimited(text, retry_after=parameters.get("retry_after"))
        if code == 401:
            return PermanentError(text + " (the bot token was rejected)")
        if isinstance(code, int) and (code >= 500 or code in (408, 409)):
            return TemporaryError(text)
        # 403 (blocked by the user, kicked from the group), 400 (chat not
        # found, bad markup, ...) and 404 never succeed when retried.
        return PermanentError(text)

    # -- sending -------------------------------------------------------------------
    def message_options(self) -> dict[str, Any]:
        options = {
            "parse_mode": self.parse_mode,
            "link_preview_options": self.link_preview_options,
            "disable_notification": self.disable_notification,
            "message_thread_id": self.message_thread_id,
        }
        return {key: value for key, value in options.items() if value is not None}

    def send_envelope(self, envelope: Envelope) -> dict[str, Any] | None:
        parts = split_text(envelope.rendered.text or "")
        address = str(envelope.address)
        chat_id: int | str = int(address) if address.lstrip("-").isdigit() else address
        chat_id = self.migrated_chats.get(chat_id, chat_id) if isinstance(chat_id, int) else chat_id
        state = envelope.state
        resumable = len(parts) > 1 and state.get("parts_total") == len(parts)
        message_ids: list[int] = list(state.get("message_ids") or []) if resumable else []
        for index in range(len(message_ids), len(parts)):
            try:
                chat_id, message_id = self.send_part(envelope, chat_id, parts[index])
            except MessengerError as exc:
                if message_ids:  # keep the progress, so a retry does not repeat parts
                    exc.result = {"parts_total": len(parts), "message_ids": message_ids}
                    exc.args = (f"{exc.args[0]} (after {len(message_ids)} of {len(parts)} parts)",)
                raise
            message_ids.append(message_id)
        result: dict[str, Any] = {"message_ids": message_ids, "chat_id": chat_id}
        if len(parts) > 1:
            result["parts_total"] = len(parts)
        if str(chat_id) != address:
            result["migrated_from"] = address
        return result

    def send_part(self, envelope: Envelope, chat_id: int | str, text: str) -> tuple[int | str, Any]:
        """Send one message; follow a group's migration once. Returns the chat
        id used and Telegram's id of the message."""
        payload = {"chat_id": chat_id, "text": text, **self.message_options()}
        try:
            sent = self.bot("sendMessage", payload, what=f"sendMessage to {chat_id}")
            return chat_id, _message_id(sent)
        except ChatMigrated as migrated:
            new_id = migrated.new_chat_id
        self.record_migration(envelope, chat_id, new_id)
        try:
            sent = self.bot("sendMessage", {**payload, "chat_id": new_id}, what=f"sendMessage to {new_id}")
        except ChatMigrated:
            raise PermanentError(f"telegram: chat {chat_id} migrated twice (to {new_id})") from None
        return new_id, _message_id(sent)

    def record_migration(self, dispatch: Any, old_id: int | str, new_id: int) -> None:
        logger.warning(
            "telegram: chat %s became supergroup %s; dispatch %s is sent there. Update the stored chat id.",
            old_id, new_id, getattr(dispatch, "pk", None),
            extra={"dispatch_id": getattr(dispatch, "pk", None), "messenger": self.alias,
                   "old_chat_id": old_id, "new_chat_id": new_id},
        )
        if isinstance(old_id, int):
            self.migrated_chats[old_id] = new_id
        chat_migrated.send(sender=type(self), old_chat_id=old_id, new_chat_id=new_id, dispatch=dispatch)

    # -- helpers -------------------------------------------------------------------
    def get_chat_ids(self) -> list[int]:
        """Ids of the chats that sent ``/start`` to the bot, from ``getUpdates``.

        Updates of other kinds (edited messages, membership changes, callback
        queries) are skipped. Telegram keeps updates for 24 hours, and
        ``getUpdates`` fails while a webhook is set (409, raised as a TemporaryError).
        """
        updates = self.bot("getUpdates", {"allowed_updates": ["message"]}) or []
        chat_ids: list[int] = []
        for update in updates:
            message = update.get("message") if isinstance(update, dict) else None
            if not isinstance(message, dict):
                continue
            text = message.get("text")
            chat = message.get("chat")
            if not isinstance(text, str) or not isinstance(chat, dict) or "id" not in chat:
                continue
            command = text.split(maxsplit=1)[0] if text.strip() else ""
            if command.split("@", 1)[0] == "/start" and chat["id"] not in chat_ids:
                chat_ids.append(chat["id"])
        return chat_ids
