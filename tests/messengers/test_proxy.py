"""Proxies: a real proxy process on loopback (HTTP and SOCKS5, with credentials)."""

from __future__ import annotations

import pytest

from dispatcher.api import register_messenger_objects
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
