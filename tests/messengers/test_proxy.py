"""Proxies: a real proxy process on loopback (HTTP and SOCKS5, with credentials)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dispatcher.api import register_messenger_objects
from messengers import http
from messengers import proxy as proxies
from messengers.exceptions import MessengerConfigurationError, TemporaryError
from messengers.redact import redact
from messengers.telegram import TelegramMessenger
from tests.fakes.processes import ProxyProcess, ca_bundle, server_tls
from tests.fakes.telegram import FakeTelegram
from tests.services import free_port

from .conftest import deliver, errors

pytestmark = pytest.mark.django_db

TOKEN = "7012345678:AAH-proxied-telegram-token"
USER, PASSWORD = "proxyuser", "proxy-pass-secret-77"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    process = ProxyProcess(tmp_path_factory.mktemp("proxy"), USER, PASSWORD)
    yield process
    process.stop()


@pytest.fixture
def plain(serve):
    app = FakeTelegram(TOKEN)
    app.server = serve(app)
    return app


@pytest.fixture
def tls(serve, tmp_path):
    """A fake Telegram on HTTPS, with a CA bundle the messenger trusts."""
    app = FakeTelegram(TOKEN)
    app.server = serve(app, tls=server_tls())
    app.ca = ca_bundle(tmp_path)
    return app


def seen_since(proxy, count):
    return proxy.seen()[count:]


def use(api, **options):
    register_messenger_objects(TelegramMessenger(TOKEN, api_base=api.server.url, **options))


def test_http_proxy_forwards_absolute_uri_requests(proxy, plain):
    before = len(proxy.seen())
    use(plain, proxy={"http": proxy.url("http")})
    [dispatch] = deliver("telegram", "Hi via proxy", "42")
    assert dispatch.status == "sent" and plain.sent[0]["text"] == "Hi via proxy"
    [entry] = seen_since(proxy, before)
    assert entry["kind"] == "http" and entry["user"] == USER and entry["ok"]
    assert entry["target"].startswith(f"{plain.server.url}/bot")


def test_https_through_an_http_proxy_uses_connect(proxy, tls):
    before = len(proxy.seen())
    use(tls, proxy={"https": proxy.url("http")}, verify=tls.ca)
    assert deliver("telegram", "Hi", "42")[0].status == "sent"
    [entry] = seen_since(proxy, before)
    assert (entry["kind"], entry["user"]) == ("connect", USER)
    assert entry["target"] == f"127.0.0.1:{tls.server.port}"


@pytest.mark.parametrize("scheme", ["socks5", "socks5h"])
def test_socks5_with_credentials_as_the_seed_configures_it(proxy, tls, scheme):
    before = len(proxy.seen())
    use(tls, proxy={"https": proxy.url(scheme)}, verify=tls.ca)
    assert deliver("telegram", "Hi", "42")[0].status == "sent"
    [entry] = seen_since(proxy, before)
    assert entry == {"kind": "socks5", "target": f"127.0.0.1:{tls.server.port}", "user": USER, "ok": True}


def test_a_callable_proxy_is_asked_once_per_batch(proxy, plain):
    calls = []

    def rotate():
        calls.append(1)
        return proxy.url("socks5")  # one URL: every scheme

    before = len(proxy.seen())
    use(plain, proxy=rotate)
    sent = deliver("telegram", "Hi", ["1", "2", "3"])
    assert [d.status for d in sent] == ["sent"] * 3
    assert len(calls) == 1
    assert {e["kind"] for e in seen_since(proxy, before)} == {"socks5"}


@pytest.mark.parametrize("scheme", ["http", "socks5"])
def test_a_dead_proxy_is_a_temporary_error(plain, scheme):
    dead = f"{scheme}://{USER}:{PASSWORD}@127.0.0.1:{free_port()}"
    use(plain, proxy={"http": dead, "https": dead}, connect_timeout=2)
    [dispatch] = deliver("telegram", "Hi", "42")
    assert dispatch.status == "error" and dispatch.next_attempt_at > dispatch.created
    [error] = errors(dispatch)
    assert not error.permanent
    assert f"through proxy {scheme}://127.0.0.1:" in error.text
    assert PASSWORD not in error.text and TOKEN not in error.text
    assert plain.server.received == []


@pytest.mark.parametrize("scheme", ["http", "socks5"])
def test_wrong_proxy_credentials_are_temporary(proxy, plain, scheme):
    use(plain, proxy=proxy.url(scheme, credentials=(USER, "wrong-pass-0")))
    [dispatch] = deliver("telegram", "Hi", "42")
    assert dispatch.status == "error"
    assert plain.server.received == []
    assert "wrong-pass-0" not in errors(dispatch)[0].text
    assert not proxy.seen()[-1]["ok"]


def test_the_proxy_helpers_are_one_module_still_importable_from_http():
    for name in ("normalize_proxies", "describe_proxies", "PROXY_SCHEMES", "ProxyValue", "ProxySpec"):
        assert getattr(http, name) is getattr(proxies, name)


def test_a_stream_tunnel_takes_one_url_by_key_and_registers_its_password():
    keys = ("xmpp", *proxies.TUNNEL_KEYS)
    chosen = proxies.tunnel_url({"http": "http://a:1", "https": "socks5://u:tunnel-pass-3@b:2"}, keys)
    assert chosen == "socks5://u:tunnel-pass-3@b:2"
    assert proxies.tunnel_url({"https": "http://a:1", "xmpp": "socks5h://b:2"}, keys) == "socks5h://b:2"
    assert redact("via tunnel-pass-3") == "via ***"
    assert proxies.tunnel_url(None) is None and proxies.tunnel_url({}) is None
    assert proxies.describe_tunnel("socks5://u:tunnel-pass-3@b") == "proxy socks5://b:1080"
    for bad in ("https://b:3", "socks4://b:3", "ftp://b", "http://", "http://b:port"):
        with pytest.raises(MessengerConfigurationError):
            proxies.tunnel_url(bad)


def test_tunnels_open_through_the_proxy_process_and_say_why_not(proxy):
    """What a stream transport (XMPP) gets from open_tunnel, against the real proxy."""
    bare = f"127.0.0.1:{proxy.port}"

    async def tunnel(url: str, port: int) -> socket.socket:
        return await proxies.open_tunnel(url, "127.0.0.1", port, timeout=5)

    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        for scheme in ("socks5", "socks5h", "http"):
            asyncio.run(tunnel(proxy.url(scheme), port)).close()
        assert proxy.targets[-3:] == [("127.0.0.1", port)] * 3

    closed = free_port()
    cases = [
        (f"socks5://{bare}", "no acceptable authentication method (credentials needed?)"),
        (proxy.url("socks5", credentials=(USER, "wrong-pass-1")), "the proxy refused our credentials"),
        (proxy.url("http", credentials=(USER, "wrong-pass-1")), "the proxy refused our credentials"),
        (proxy.url("socks5"), f"cannot reach 127.0.0.1:{closed}"),
        (proxy.url("http"), f"CONNECT 127.0.0.1:{closed} refused: 502"),
        (f"socks5://{USER}:{PASSWORD}@127.0.0.1:{free_port()}", "cannot connect"),
    ]
    for url, reason in cases:
        with pytest.raises(TemporaryError) as caught:
            asyncio.run(tunnel(url, closed))
        text = str(caught.value)
        assert reason in text and text.startswith("proxy "), text
        assert PASSWORD not in text and "wrong-pass-1" not in text
