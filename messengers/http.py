"""The shared base of the HTTP messengers, on ``requests``.

It does the work every HTTP provider needs, so that a provider module only
says how to build its request and how to read its answer (the shape of
django-anymail's provider layer):

- one ``requests.Session`` per batch, opened in ``before_send`` and closed in
  ``after_send`` (connections are reused within a batch, never shared between
  concurrent batches);
- ``proxy=``: a dict like requests' ``proxies`` (``{"https": "socks5://user:pass@host:1080"}``),
  one URL for every scheme, or a callable returning either (called once per
  batch, so proxies can rotate); ``http``/``https`` proxies, and
  ``socks5``/``socks5h`` through PySocks (``socks5h`` resolves names on the proxy);
- connect and read timeouts; an ``api_base`` override (a local Telegram Bot API
  server, ``api.vk.ru``, a test server);
- mapping of transport failures and HTTP answers to ``TemporaryError``
  (with ``retry_after``) and ``PermanentError``; a rate-limit answer defers the
  rest of the batch too, instead of hammering a provider that asked us to wait;
- secrets kept out of texts: a messenger names its secret attributes in
  ``secret_options`` (registered with :mod:`messengers.redact` when set), error texts name an endpoint, never
  a full URL, and log records of urllib3/oauthlib (which print URLs and
  Authorization headers at DEBUG) are redacted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import requests

from .base import Envelope, MessengerBase
from .exceptions import (
    MessengerConfigurationError,
    MessengerError,
    PermanentError,
    RateLimited,
    TemporaryError,
)

# The proxy helpers live in .proxy (shared with XMPP); imported from here too.
from .proxy import PROXY_SCHEMES as PROXY_SCHEMES
from .proxy import ProxySpec as ProxySpec
from .proxy import ProxyValue as ProxyValue
from .proxy import describe_proxies as describe_proxies
from .proxy import normalize_proxies as normalize_proxies
from .redact import redact, redact_loggers

logger = logging.getLogger("messengers.http")


redact_loggers(
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.util.retry",
    "urllib3.contrib.socks",
    "requests_oauthlib.oauth1_auth",
    "requests_oauthlib.oauth1_session",
    "oauthlib.oauth1.rfc5849",
    "oauthlib.oauth1.rfc5849.signature",
)


def retry_after_header(response: requests.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def json_body(response: requests.Response) -> Any:
    """The decoded JSON body, or None when there is none."""
    try:
        return response.json()
    except ValueError:
        return None


def _cause(exc: BaseException) -> str:
    """The innermost useful reason of a requests error, without the request URL."""
    reason: Any = exc
    seen = 0
    while seen < 5 and reason.args and isinstance(reason.args[0], BaseException):
        reason = reason.args[0]
        seen += 1
    inner = getattr(reason, "reason", None)
    if isinstance(inner, BaseException):
        reason = inner
    text = re.sub(r"with url: \S+", "", str(reason))
    text = re.sub(r"<[\w.]+ object at 0x[0-9a-f]+>: ", "", text)
    return f"{type(reason).__name__}: {text}".strip()


class Call(NamedTuple):
    """One request to a provider: ``path`` is joined to ``api_base`` unless it
    is a full URL; ``what`` names it in error texts (never the URL, which may
    hold a token)."""

    method: str
    path: str
    what: str
    options: dict[str, Any] = {}


class HTTPMessenger(MessengerBase):
    """Base of the messengers that speak HTTP.

    A provider says only what is particular to it, with three hooks:

    - :meth:`build_request`: the :class:`Call` that sends one envelope;
    - :meth:`error_for`: the error a response stands for (``None`` when it is
      a success), as ``TemporaryError``, ``RateLimited`` or ``PermanentError``;
    - :meth:`read_result`: what of a successful answer is kept on the
      dispatch (the provider's message id).

    A provider whose send takes several requests (Telegram's split texts, X's
    direct messages) overrides :meth:`send_envelope` and makes each request
    with :meth:`call`, which applies ``error_for`` the same way.
    """

    #: Default root of the provider's API; ``api_base=`` overrides it.
    api_base: str = ""
    #: Attribute of a user object holding its address for this messenger, or
    #: several tried in order (ours, then django-sitemessage's name).
    address_attribute: str | tuple[str, ...] | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    user_agent: str = "dispatcher-messenger/1.0"

    session: requests.Session | None = None
    _proxies: dict[str, str] | None = None
    _throttled: dict[Any, float] | None = None

    def __init__(
        self,
        *,
        proxy: ProxySpec = None,
        api_base: str | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        verify: bool | str = True,
    ) -> None:
        self.proxy = proxy
        if not callable(proxy):
            normalize_proxies(proxy)  # fail on a bad proxy now, not at the first batch
        if api_base:
            self.api_base = api_base
        if connect_timeout is not None:
            self.connect_timeout = connect_timeout
        if read_timeout is not None:
            self.read_timeout = read_timeout
        self.verify = verify

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias} {self.api_base}>"

    @classmethod
    def get_address(cls, recipient: Any) -> Any:
        if recipient is None or isinstance(recipient, (str, int)) or not cls.address_attribute:
            return recipient
        names = cls.address_attribute
        for name in (names,) if isinstance(names, str) else names:
            value = getattr(recipient, name, None)
            if value not in (None, ""):
                return value
        return None

    # -- batch lifecycle ---------------------------------------------------------
    def before_send(self) -> None:
        self.open()

    def after_send(self) -> None:
        self.close()

    def open(self) -> None:
        """Open this batch's session and resolve the proxy (a callable is called here)."""
        proxy = self.proxy
        if callable(proxy):
            try:
                proxy = proxy()
            except Exception as exc:
                raise TemporaryError(
                    f"{self.alias}: the proxy callable failed: {type(exc).__name__}"
                ) from None
        try:
            self._proxies = normalize_proxies(proxy)
        except MessengerConfigurationError as exc:
            raise TemporaryError(f"{self.alias}: {exc}") from None
        session = requests.Session()
        session.headers["User-Agent"] = self.user_agent
        self.session = session
        self._throttled = {}

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close()

    # -- requests ----------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.api_base.rstrip("/") + "/" + path.lstrip("/")

    def request(self, method: str, path: str, *, what: str, **kwargs: Any) -> requests.Response:
        """Send one request; transport failures become ``TemporaryError``.

        ``path`` is joined to ``api_base`` unless it is a full URL. ``what``
        names the call in error texts (never the URL, which may hold a token).
        Outside a batch (helpers like ``get_chat_ids``) a one-off session is used.
        """
        one_off = self.session is None
        if one_off:
            self.open()
        assert self.session is not None
        url = path if "://" in path else self.url(path)
        kwargs.setdefault("timeout", (self.connect_timeout, self.read_timeout))
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE and
        # HTTP(S)_PROXY from the environment override a session's own settings.
        kwargs.setdefault("verify", self.verify)
        if self._proxies:
            kwargs.setdefault("proxies", self._proxies)
        try:
            return self.session.request(method, url, **kwargs)
        except requests.Timeout as exc:
            kind = "connecting" if isinstance(exc, requests.ConnectTimeout) else "waiting for the answer"
            raise TemporaryError(f"{self.alias} {what}: timed out {kind}{self._via()}") from None
        except requests.RequestException as exc:
            raise TemporaryError(
                redact(f"{self.alias} {what}: {type(exc).__name__}{self._via()}: {_cause(exc)}")
            ) from None
        finally:
            if one_off:
                self.close()

    def _via(self) -> str:
        return f" (through proxy {describe_proxies(self._proxies)})" if self._proxies else ""

    def http_error(self, response: requests.Response, what: str, detail: str = "") -> MessengerError | None:
        """The error an HTTP status means, or None for a 2xx answer.

        429 is a rate limit (``Retry-After`` honoured); 408, 425 and 5xx are
        temporary; 407 is the proxy refusing our credentials (temporary: fixing
        the proxy must not lose messages); any other status is permanent.
        """
        status = response.status_code
        if 200 <= status < 300:
            return None
        text = f"{self.alias} {what}: HTTP {status}"
        if detail:
            text += f": {detail}"
        if status == 429:
            return RateLimited(text, retry_after=retry_after_header(response))
        if status in (408, 425) or status >= 500:
            return TemporaryError(text, retry_after=retry_after_header(response))
        if status == 407:
            proxy = describe_proxies(self._proxies) or "proxy"
            return TemporaryError(f"{text} (the proxy {proxy} refused our credentials)")
        return PermanentError(text)

    # -- the provider's hooks -----------------------------------------------------
    def build_request(self, envelope: Envelope) -> Call:
        """The request that sends ``envelope``."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_request()")

    def error_for(self, response: requests.Response, body: Any, what: str) -> MessengerError | None:
        """The error ``response`` (its JSON ``body`` decoded, or None) stands
        for, or None when it is a success. By default, by HTTP status alone."""
        return self.http_error(response, what)

    def read_result(self, body: Any) -> dict[str, Any] | None:
        """What of a successful answer to keep on the dispatch (``Dispatch.result``)."""
        return None

    # -- sending -----------------------------------------------------------------
    def call(self, method: str, path: str, *, what: str, **options: Any) -> Any:
        """Make one request; return its decoded JSON body (None if it has none),
        or raise the error :meth:`error_for` finds in the answer."""
        response = self.request(method, path, what=what, **options)
        body = json_body(response)
        error = self.error_for(response, body, what)
        if error is not None:
            raise error
        return body

    def send_envelope(self, envelope: Envelope) -> dict[str, Any] | None:
        """Send one envelope; return the result to keep, raise a MessengerError when not sent."""
        request = self.build_request(envelope)
        return self.read_result(self.call(request.method, request.path, what=request.what, **request.options))

    def throttle_key(self, envelope: Envelope) -> Any:
        """What a rate limit applies to: the whole provider account by default."""
        return None

    def send(self, message_cls: Any, message_model: Any, dispatch_models: Sequence[Envelope]) -> None:
        if self._throttled is None:
            self._throttled = {}
        for dispatch in dispatch_models:
            key = self.throttle_key(dispatch)
            wait = self._throttled.get(key, 0.0) - time.monotonic()
            if wait > 0:
                self.mark_exception(dispatch, RateLimited(
                    f"{self.alias}: not tried, the provider asked to wait {wait:.0f}s", retry_after=wait
                ))
                continue
            try:
                result = self.send_envelope(dispatch)
            except RateLimited as exc:
                self._throttled[key] = time.monotonic() + (exc.retry_after or 0.0)
                self.mark_exception(dispatch, exc)
            except MessengerError as exc:
                self.mark_exception(dispatch, exc)
            except Exception as exc:  # a bug or an unexpected answer: retried, text kept
                logger.warning("%s: unexpected %s: %s", self.alias, type(exc).__name__, redact(str(exc)))
                self.mark_exception(dispatch, exc)
            else:
                self.mark_sent(dispatch, result)
