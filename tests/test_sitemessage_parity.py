"""django-sitemessage's calls, tried as a migrating user would write them.

Each test is one thing a sitemessage user does that used to fail (TypeError,
silently nothing, or not there at all); docs/coming-from.md shows each side
by side.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory
from django.urls import reverse

import dispatcher.api as api
from dispatcher import links, model_events, subscriptions
from dispatcher.api import (
    get_sitemessage_urls,
    get_user_preferences_for_ui,
    recipients,
    register_messenger_objects,
    schedule_messages,
    set_user_preferences_from_request,
    subscribe_to_model_event,
)
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch, Subscription
from dispatcher.registry import get_registered_message_type
from dispatcher.signals import (
    sig_mark_read_failed,
    sig_mark_read_success,
    sig_unsubscribe_failed,
    sig_unsubscribe_success,
)
from dispatcher.subscriptions import subscribe
from messengers.fb import FacebookMessenger
from messengers.telegram import TelegramMessenger
from messengers.twitter import TwitterMessenger
from messengers.vk import VKontakteMessenger
from messengers.xmpp import XMPPMessenger
from tests.fakes.facebook import FakeGraph
from tests.fakes.processes import ProxyProcess
from tests.fakes.server import FakeServer
from tests.fakes.vk import FakeVK
from tests.services import wait_for
from tests.testapp.message_types import NewsletterMessage

# The site's URLconf, as a sitemessage user writes it: one line for the app's URLs.
urlpatterns = [*get_sitemessage_urls()]


@pytest.fixture
def ann(django_user_model):
    return django_user_model.objects.create_user("ann", "ann@example.org", "pw")


def subscribed(user) -> set[tuple[str, str]]:
    return set(Subscription.objects.filter(recipient=user).values_list("message_type", "messenger"))


# -- the toolbox in one module ---------------------------------------------------------------
def test_the_sites_calls_are_in_dispatcher_api():
    assert api.subscribe_to_model_event is model_events.subscribe_to_model_event
    assert api.unsubscribe_from_model_event is model_events.unsubscribe_from_model_event
    assert api.get_user_preferences_for_ui is subscriptions.get_user_preferences_for_ui
    assert api.set_user_preferences_from_request is subscriptions.set_user_preferences_from_request
    assert subscribe_to_model_event is model_events.subscribe_to_model_event
    for name in ("subscribe_to_model_event", "get_user_preferences_for_ui",
                 "set_user_preferences_from_request", "get_sitemessage_urls", "schedule_email"):
        assert name in api.__all__ and callable(getattr(api, name))
    with pytest.raises(AttributeError):
        api.no_such_name  # noqa: B018


# -- preferences -------------------------------------------------------------------------------
@pytest.mark.django_db
def test_preferences_for_ui_with_callable_filters_in_sitemessages_shape(ann):
    subscribe("newsletter", "smtp", ann)
    titles, prefs = get_user_preferences_for_ui(
        ann,
        message_filter=lambda message_cls: message_cls.alias in ("newsletter", "hello"),
        messenger_filter=lambda messenger: messenger.alias in ("smtp", "flaky"),
        new_messengers_titles={"smtp": "Mail"},
    )
    flaky = str(api.get_registered_messenger_object("flaky"))  # its title
    assert list(titles) == sorted(["Mail", flaky])
    columns = list(titles)
    mail, other = columns.index("Mail"), columns.index(flaky)
    assert set(prefs) == {"Hello", "Newsletter"}
    # (alias, supported, subscribed) per column; "" where the type cannot go.
    assert prefs["Newsletter"][mail] == ("newsletter|smtp", True, True)
    assert prefs["Newsletter"][other] == ("", False, False)
    assert prefs["Hello"][mail] == ("hello|smtp", True, False)
    assert prefs["Hello"][other] == ("hello|flaky", True, False)
    # Our own form of the filters (aliases) still works.
    assert list(get_user_preferences_for_ui(ann, ["newsletter"], ["smtp"])[1]) == ["Newsletter"]


@pytest.mark.django_db
def test_sitemessages_form_field_sets_preferences(ann):
    subscribe("hello", "smtp", ann)
    Subscription.objects.create(message_type="security_alert", messenger="smtp", recipient=ann)  # staff-made
    request = RequestFactory().post("/prefs/", {"sm_user_pref": ["newsletter|smtp", "hello|flaky"]})
    request.user = ann
    assert set_user_preferences_from_request(request)  # true: preferences were found
    # sitemessage's form replaces the user's choice: hello|smtp was not ticked. What the
    # user could not have chosen (security_alert) stays.
    assert subscribed(ann) == {("newsletter", "smtp"), ("hello", "flaky"), ("security_alert", "smtp")}
    request = RequestFactory().post("/prefs/", {"sm_user_pref": ["hello|flaky"]})
    request.user = ann
    assert set_user_preferences_from_request(request) == (0, 1)
    assert subscribed(ann) == {("hello", "flaky"), ("security_alert", "smtp")}


@pytest.mark.django_db
def test_sitemessage_prefs_table_tag_round_trip(client, ann):
    subscribe("newsletter", "smtp", ann)
    html = Template("{% load sitemessage %}<form>{% sitemessage_prefs_table from prefs %}</form>").render(
        Context({"prefs": get_user_preferences_for_ui(ann)}))
    assert re.search(r'value="newsletter\|smtp"[^>]*checked', html)
    assert 'value="hello|smtp"' in html and not re.search(r'value="hello\|smtp"[^>]*checked', html)
    # What a browser sends for that form with Hello ticked and Newsletter unticked.
    form = FormReader(html)
    data = {"pref_shown": form.hidden, "pref": [v for v in form.checkboxes if v != "newsletter|smtp"]
            + ["hello|smtp"]}
    client.force_login(ann)
    assert client.post("/dispatcher/preferences/", data).status_code == 302
    assert ("hello", "smtp") in subscribed(ann) and ("newsletter", "smtp") not in subscribed(ann)
    # {% load dispatcher %} and no "from": the current user's table.
    request = RequestFactory().get("/")
    request.user = ann
    own = Template("{% load dispatcher %}{% dispatcher_prefs_table %}").render(Context({"request": request}))
    assert re.search(r'value="hello\|smtp"[^>]*checked', own)
    with pytest.raises(TemplateSyntaxError):
        Template("{% load sitemessage %}{% sitemessage_prefs_table prefs %}")


class FormReader(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.hidden: list[str] = []
        self.checkboxes: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden":
            self.hidden.append(attrs["value"])
        elif tag == "input" and attrs.get("type") == "checkbox" and "checked" in attrs:
            self.checkboxes.append(attrs["value"])


# -- URLs in one line ----------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_urls_in_one_line(client, ann):
    assert reverse("dispatcher:preferences") == "/dispatcher/preferences/"
    client.force_login(ann)
    assert client.get("/dispatcher/preferences/").status_code == 200


# -- signals --------------------------------------------------------------------------------------
@pytest.fixture
def caught():
    seen: list[tuple[str, dict]] = []
    receivers = {}
    for name, signal in (("unsubscribe_success", sig_unsubscribe_success),
                         ("unsubscribe_failed", sig_unsubscribe_failed),
                         ("mark_read_success", sig_mark_read_success),
                         ("mark_read_failed", sig_mark_read_failed)):
        def receiver(sender, _name=name, **kwargs):
            seen.append((_name, {"sender": sender, **kwargs}))
        receivers[name] = receiver
        signal.connect(receiver)
    yield seen
    for name, signal in (("unsubscribe_success", sig_unsubscribe_success),
                         ("unsubscribe_failed", sig_unsubscribe_failed),
                         ("mark_read_success", sig_mark_read_success),
                         ("mark_read_failed", sig_mark_read_failed)):
        signal.disconnect(receivers[name])


def _path(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1].join(["/", ""])


@pytest.mark.django_db
def test_unsubscribe_and_read_pixel_send_sitemessages_signals(client, ann, caught):
    subscribe("newsletter", "smtp", ann)
    [(message, [dispatch])] = schedule_messages(NewsletterMessage({"text": "Issue 1"}))

    client.get(_path(links.read_pixel_url(dispatch)))
    client.get(_path(links.read_pixel_url(dispatch)))
    [(name, first), (_, second)] = caught
    assert name == "mark_read_success"
    assert first["sender"] is NewsletterMessage and first["dispatch"] == dispatch
    assert first["message"] == message and first["request"].path.startswith("/dispatcher/read/")
    assert (first["first"], second["first"]) == (True, False)

    caught.clear()
    assert client.post(_path(links.unsubscribe_url(dispatch))).status_code == 200
    [(name, kwargs)] = caught
    assert name == "unsubscribe_success" and kwargs["dispatch"] == dispatch and kwargs["removed"] == 1
    assert kwargs["message"] == message and kwargs["sender"] is NewsletterMessage
    assert not Subscription.objects.exists()

    caught.clear()
    client.get("/dispatcher/read/not-a-token.gif")
    client.post("/dispatcher/unsubscribe/not-a-token/")
    client.post("/dispatcher/unsubscribe/not-a-token/one-click/", {"List-Unsubscribe": "One-Click"})
    assert [name for name, _ in caught] == ["mark_read_failed", "unsubscribe_failed", "unsubscribe_failed"]
    assert all(k["dispatch"] is None and k["reason"] for _, k in caught)


@pytest.mark.django_db
def test_one_click_unsubscribe_sends_the_signal(client, ann, caught):
    subscribe("newsletter", "smtp", ann)
    [(_, [dispatch])] = schedule_messages(NewsletterMessage({"text": "Issue 1"}))
    url = _path(links.one_click_unsubscribe_url(dispatch))
    response = client.post(url, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert [(name, k["dispatch"]) for name, k in caught] == [("unsubscribe_success", dispatch)]


# -- per-app modules -------------------------------------------------------------------------------
def test_sitemessages_and_dispatchers_modules_are_imported_at_startup():
    assert get_registered_message_type("seed_style").__module__ == "tests.testapp.sitemessages"
    assert get_registered_message_type("discovered").__module__ == "tests.testapp.dispatchers"


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_type_registered_in_sitemessages_py_is_known_to_workers(workers, sink):
    workers("seed", smtp_port=sink.port)
    message_cls = get_registered_message_type("seed_style")
    [(_, [dispatch])] = schedule_messages(message_cls({"subject": "Seed", "text": "from sitemessages.py"}),
                                          recipients("smtp", "ann@example.org"))
    wait_for(lambda: Dispatch.objects.get(pk=dispatch.pk).status == "sent", 60, 0.2, "the dispatch")
    assert sink.messages[0]["Subject"] == "Seed"


# -- messengers as sitemessage configures them -------------------------------------------------------
@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    process = ProxyProcess(tmp_path_factory.mktemp("proxy"))
    yield process
    process.stop()


def _through(messenger, address: str):
    register_messenger_objects(messenger)
    [(_, [dispatch])] = schedule_messages("Hi via proxy", recipients(messenger.alias, address))
    deliver_batch(messenger.alias, [dispatch.pk])
    return Dispatch.objects.get(pk=dispatch.pk)


@pytest.mark.django_db
def test_facebook_proxy_given_positionally(proxy):
    app = FakeGraph("v21.0", "1122334455", "EAAB-page-token")
    server = FakeServer(app)
    try:
        before = len(proxy.seen())
        messenger = FacebookMessenger("EAAB-page-token", {"http": proxy.url("http")}, api_base=server.url)
        assert messenger.page_id == "me"
        assert _through(messenger, "").status == "sent"
        [entry] = proxy.seen()[before:]
        assert entry["kind"] == "http" and entry["target"].startswith(f"{server.url}/v21.0/me/feed")
    finally:
        server.stop()


@pytest.mark.django_db
def test_vkontakte_proxy_given_positionally(proxy):
    app = FakeVK("vk-token")
    server = FakeServer(app)
    try:
        before = len(proxy.seen())
        messenger = VKontakteMessenger("vk-token", proxy.url("http"), api_base=server.url + "/method/")
        assert messenger.owner_id == ""
        assert _through(messenger, "-12345").status == "sent"
        [entry] = proxy.seen()[before:]
        assert entry["kind"] == "http" and "/method/wall.post" in entry["target"]
        assert app.posts[0]["owner_id"] == "-12345"
    finally:
        server.stop()
    with pytest.raises(Exception, match="proxy given twice"):
        VKontakteMessenger("vk-token", {"https": proxy.url("http")}, proxy=proxy.url("http"))
    assert VKontakteMessenger("vk-token", -42).owner_id == "-42"  # an owner id stays one


@pytest.mark.django_db
def test_user_attributes_named_as_in_sitemessage(ann):
    register_messenger_objects(
        TelegramMessenger("123:tok"), TwitterMessenger("k", "s", "t", "ts"),
        VKontakteMessenger("vk-token", -1), XMPPMessenger("bot@example.org", "pw"),
    )
    ann.telegram, ann.twitter, ann.vkontakte = "4242", "ann_tweets", "-777"
    ann.jabber = "ann@jabber.example.org"
    assert [r.address for r in recipients("telegram", ann)] == ["4242"]
    assert [r.address for r in recipients("twitter", ann)] == ["ann_tweets"]
    assert [r.address for r in recipients("vk", ann)] == ["-777"]
    assert [r.address for r in recipients("xmpp", ann)] == ["ann@jabber.example.org"]
    assert all(r.user == ann for r in recipients("telegram", ann))
    # Our own names come first when both are set.
    ann.telegram_chat_id = "1111"
    assert [r.address for r in recipients("telegram", ann)] == ["1111"]
    both = SimpleNamespace(twitter_username="ours", twitter="seeds")
    assert recipients("twitter", both)[0].address == "ours"
