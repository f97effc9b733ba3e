"""Delivery receipts: Postmark's webhooks, Twilio's status callbacks, SMTP bounces.

Messages are sent by real workers through loopback fakes of the providers'
APIs (which answer with their ids, kept in ``Dispatch.result``); the
providers' documented webhook payloads are then posted to our endpoints by
real HTTP requests (Django's test client), authenticated as each provider
does. SMTP bounces are real DSNs, written by a real Postfix into a Maildir.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from celery import current_app
from django.conf import settings
from django.test import Client, override_settings

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.models import DeliveryReceipt, Dispatch, Suppression
from dispatcher.receipts import dsn, twilio
from messengers.postmark import PostmarkMessenger
from messengers.sms import TwilioSMSMessenger
from messengers.smtp import SMTPMessenger
from tests import readme
from tests.fakes import postfix
from tests.fakes import receipts as documented
from tests.fakes.postfix import GONE
from tests.fakes.postmark import FakePostmark
from tests.fakes.server import FakeServer
from tests.fakes.twilio import FakeTwilio
from tests.services import BASE, wait_for, worker_env
from tests.testapp.message_types import HelloMessage

pytestmark = pytest.mark.django_db

POSTMARK_TOKEN = "postmark-receipts-server-token-7c1e"
HOOK_USER, HOOK_PASSWORD, HOOK_TOKEN = "postmark-hooks", "hook-password-9f2d", "path-secret-5b8a41"
POSTMARK_HOOK = {"username": HOOK_USER, "password": HOOK_PASSWORD, "token": HOOK_TOKEN}
SID, TWILIO_TOKEN = "AC0123456789abcdef0123456789abcdef", "twilio-receipts-auth-token-e3a9"
CALLBACK = "http://testserver/dispatcher/receipts/twilio/"


@pytest.fixture
def servers() -> Iterator[list[FakeServer]]:
    started: list[FakeServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def postmark_api(servers):
    app = FakePostmark(POSTMARK_TOKEN)
    server = FakeServer(app)
    servers.append(server)
    app.options = {"server_token": POSTMARK_TOKEN, "from_email": "noreply@example.org",
                   "api_base": server.url}
    register_messenger_objects(PostmarkMessenger(**app.options))
    return app


@pytest.fixture
def twilio_api(servers):
    app = FakeTwilio(SID, TWILIO_TOKEN)
    server = FakeServer(app)
    servers.append(server)
    app.options = {"account_sid": SID, "auth_token": TWILIO_TOKEN, "from_number": "+15005550006",
                   "status_callback": CALLBACK, "api_base": server.url}
    register_messenger_objects(TwilioSMSMessenger(**app.options))
    return app


def send_now(alias: str, address: str) -> Dispatch:
    [(_, [dispatch])] = schedule_messages(HelloMessage({"subject": "Hi"}), recipients(alias, address))
    deliver_batch(alias, [dispatch.pk])
    dispatch.refresh_from_db()
    return dispatch


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post_postmark(payload, auth: str | None = basic(HOOK_USER, HOOK_PASSWORD), path: str | None = None,
                  raw: bytes | None = None):
    headers = {"HTTP_AUTHORIZATION": auth} if auth else {}
    body = raw if raw is not None else json.dumps(payload)
    return Client().post(path or "/dispatcher/receipts/postmark/", body, content_type="application/json",
                         **headers)


def post_twilio(form: dict[str, str], signature: str | None = None, url: str = CALLBACK, token=TWILIO_TOKEN):
    headers = {}
    if signature is None:
        signature = documented.twilio_signature(url, form, token)
    if signature:
        headers["HTTP_X_TWILIO_SIGNATURE"] = signature
    # As Twilio posts: application/x-www-form-urlencoded.
    return Client().post("/dispatcher/receipts/twilio/", urlencode(form),
                         content_type="application/x-www-form-urlencoded", **headers)


# -- Postmark -------------------------------------------------------------------------------------------

@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
@override_settings(DISPATCHER_POSTMARK_WEBHOOK=POSTMARK_HOOK)
def test_postmark_delivery_and_a_hard_bounce_after_a_worker_sent(workers, postmark_api):
    workers("postmark", TEST_EXTRA_MESSENGERS=json.dumps(
        {"postmark": {"class": "messengers.postmark.PostmarkMessenger", "options": postmark_api.options}}))
    [(_, sent)] = schedule_messages(HelloMessage({"subject": "Hi"}),
                                    recipients("postmark", ["ann@example.org", "gone@example.org"]))
    wait_for(lambda: set(Dispatch.objects.values_list("status", flat=True)) == {"sent"}, 60, 0.2,
             "both sent by the worker")
    ann, gone = Dispatch.objects.order_by("id")
    assert ann.result["message_id"] and gone.result["message_id"]

    response = post_postmark(documented.postmark(documented.POSTMARK_DELIVERY, ann.result["message_id"],
                                                 ann.address))
    assert (response.status_code, response.content) == (200, b"recorded")
    [receipt] = ann.receipts.all()
    assert (receipt.event, receipt.provider, receipt.permanent) == ("delivered", "postmark", False)
    assert receipt.occurred_at == datetime(2019, 11, 5, 16, 33, 54, 907025, tzinfo=UTC)
    assert receipt.reason == "Test delivery webhook details"

    response = post_postmark(documented.postmark(documented.POSTMARK_BOUNCE, gone.result["message_id"],
                                                 gone.address))
    assert response.status_code == 200
    [bounce] = gone.receipts.all()
    assert (bounce.event, bounce.permanent) == ("bounced", True)
    assert bounce.reason.startswith("HardBounce - The server was unable to deliver your message")
    assert "Content" not in bounce.payload  # the raw dump is not kept
    entry = Suppression.objects.get()
    assert (entry.kind, entry.address, entry.reason, entry.dispatch_id) == (
        "email", "gone@example.org", "bounce", gone.pk)

    # The next mail to the bounced address is not sent at all.
    mails_before = len(postmark_api.emails)
    [(_, [again])] = schedule_messages(HelloMessage({"subject": "Again"}),
                                       recipients("postmark", gone.address))
    wait_for(lambda: Dispatch.objects.get(pk=again.pk).status == "failed", 60, 0.2, "the worker to refuse it")
    assert Dispatch.objects.get(pk=again.pk).errors.get().text.startswith("suppressed:")
    assert len(postmark_api.emails) == mails_before


@override_settings(DISPATCHER_POSTMARK_WEBHOOK=POSTMARK_HOOK)
def test_postmark_soft_bounce_is_recorded_not_suppressed_and_a_complaint_is(postmark_api):
    soft = send_now("postmark", "full@example.org")
    spam = send_now("postmark", "angry@example.org")
    assert post_postmark(documented.postmark(documented.POSTMARK_SOFT_BOUNCE, soft.result["message_id"],
                                             soft.address)).status_code == 200
    assert post_postmark(documented.postmark(documented.POSTMARK_SPAM_COMPLAINT, spam.result["message_id"],
                                             spam.address)).status_code == 200
    [bounce] = soft.receipts.all()
    assert (bounce.event, bounce.permanent) == ("bounced", False)
    [complaint] = spam.receipts.all()
    assert (complaint.event, complaint.permanent) == ("complained", True)
    assert list(Suppression.objects.values_list("address", "reason")) == [("angry@example.org", "complaint")]


@override_settings(DISPATCHER_POSTMARK_WEBHOOK=POSTMARK_HOOK)
def test_postmark_calls_without_the_credentials_record_nothing(postmark_api):
    dispatch = send_now("postmark", "ann@example.org")
    payload = documented.postmark(documented.POSTMARK_BOUNCE, dispatch.result["message_id"], dispatch.address)
    refused = [
        post_postmark(payload, auth=None),
        post_postmark(payload, auth=basic(HOOK_USER, "wrong-password")),
        post_postmark(payload, auth="Bearer " + HOOK_PASSWORD),
        post_postmark(payload, auth="Basic not-base64!"),
        post_postmark(payload, auth=None, path="/dispatcher/receipts/postmark/wrong-token/"),
    ]
    assert [r.status_code for r in refused] == [401, 401, 401, 401, 403]
    assert refused[0]["WWW-Authenticate"].startswith("Basic")
    assert not DeliveryReceipt.objects.exists() and not Suppression.objects.exists()
    # The secret path is the other way Postmark authenticates.
    ok = post_postmark(payload, auth=None, path=f"/dispatcher/receipts/postmark/{HOOK_TOKEN}/")
    assert (ok.status_code, ok.content) == (200, b"recorded")
    assert Client().get("/dispatcher/receipts/postmark/").status_code == 405


@override_settings(DISPATCHER_POSTMARK_WEBHOOK=POSTMARK_HOOK)
def test_receipts_are_shown_on_the_dispatch_and_filter_the_admins_list(postmark_api, admin_client):
    """Recorded with time and reason on the dispatch: what an operator sees."""
    delivered = send_now("postmark", "ann@example.org")
    bounced = send_now("postmark", "gone@example.org")
    post_postmark(documented.postmark(documented.POSTMARK_DELIVERY, delivered.result["message_id"],
                                      delivered.address))
    post_postmark(documented.postmark(documented.POSTMARK_BOUNCE, bounced.result["message_id"],
                                      bounced.address))
    page = admin_client.get(f"/admin/dispatcher/dispatch/{bounced.pk}/change/").content.decode()
    assert "The server was unable to deliver your message" in page and "postmark" in page
    assert "Nov. 5, 2019" in page  # Postmark's BouncedAt, not the time we heard of it
    listed = admin_client.get("/admin/dispatcher/dispatch/?receipt=bounced").content.decode()
    assert f"/admin/dispatcher/dispatch/{bounced.pk}/change/" in listed
    assert f"/admin/dispatcher/dispatch/{delivered.pk}/change/" not in listed


def test_postmark_webhooks_are_refused_until_configured(postmark_api):
    dispatch = send_now("postmark", "ann@example.org")
    payload = documented.postmark(documented.POSTMARK_DELIVERY, dispatch.result["message_id"],
                                  dispatch.address)
    assert post_postmark(payload).status_code == 401
    assert post_postmark(payload, auth=None,
                         path="/dispatcher/receipts/postmark/anything/").status_code == 403
    assert not DeliveryReceipt.objects.exists()


@override_settings(DISPATCHER_POSTMARK_WEBHOOK=POSTMARK_HOOK)
def test_postmark_malformed_calls_are_400_and_record_nothing(postmark_api):
    dispatch = send_now("postmark", "ann@example.org")
    message_id = dispatch.result["message_id"]
    bad = [
        post_postmark(None, raw=b"{not json"),
        post_postmark(["a", "list"]),
        post_postmark({"MessageID": message_id}),  # no RecordType
        post_postmark({k: v for k, v in documented.POSTMARK_BOUNCE.items() if k != "MessageID"}),
        post_postmark({**documented.POSTMARK_DELIVERY, "MessageID": message_id, "DeliveredAt": None}),
        post_postmark({**documented.POSTMARK_BOUNCE, "MessageID": message_id, "Type": None}),
        post_postmark(None, raw=b"[" * 50_000 + b"]" * 50_000),  # nested too deep for the parser
    ]
    assert [r.status_code for r in bad] == [400] * 7
    assert not DeliveryReceipt.objects.exists()


@override_settings(DISPATCHER_POSTMARK_WEBHOOK=POSTMARK_HOOK)
def test_postmark_repeats_unknown_messages_and_other_events_are_taken_without_a_record(postmark_api):
    dispatch = send_now("postmark", "ann@example.org")
    delivery = documented.postmark(documented.POSTMARK_DELIVERY, dispatch.result["message_id"],
                                   dispatch.address)
    assert post_postmark(delivery).content == b"recorded"
    assert post_postmark(delivery).content == b"already recorded"  # Postmark retried
    assert dispatch.receipts.count() == 1
    unknown = post_postmark(documented.postmark(documented.POSTMARK_DELIVERY, "not-ours", "x@example.org"))
    assert (unknown.status_code, unknown.content) == (200, b"unknown message")
    opened = post_postmark(documented.postmark(documented.POSTMARK_OPEN, dispatch.result["message_id"],
                                               dispatch.address))
    assert (opened.status_code, opened.content) == (200, b"ignored: not a delivery receipt")
    assert DeliveryReceipt.objects.count() == 1


def test_a_provider_id_of_another_messenger_matches_nothing(postmark_api, twilio_api):
    # The same id string in an SMS dispatch's result is not a Postmark message.
    sms = send_now("sms", "+15551230000")
    Dispatch.objects.filter(pk=sms.pk).update(result={"message_id": "shared-id", "sid": sms.result["sid"]})
    with override_settings(DISPATCHER_POSTMARK_WEBHOOK=POSTMARK_HOOK):
        response = post_postmark(documented.postmark(documented.POSTMARK_DELIVERY, "shared-id", sms.address))
    assert response.content == b"unknown message" and not DeliveryReceipt.objects.exists()


# -- Twilio ---------------------------------------------------------------------------------------------

def test_the_signature_is_twilios_documented_example():
    """The example of Twilio's webhook security page: this URL, these
    parameters and the auth token 12345 sign as 0/KCTR6DLpKmkAf8muzZqo1nDgQ=."""
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio.signature(url, list(params.items()), "12345") == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert documented.twilio_signature(url, params, "12345") == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_twilio_status_callbacks_after_a_worker_sent(workers, twilio_api):
    workers("twilio", TEST_EXTRA_MESSENGERS=json.dumps(
        {"sms": {"class": "messengers.sms.TwilioSMSMessenger", "options": twilio_api.options}}))
    numbers = ["+15551230001", "+15551230002", "+15551230003"]
    schedule_messages("Your code is 1234", recipients("sms", numbers))
    wait_for(lambda: list(Dispatch.objects.values_list("status", flat=True)) == ["sent"] * 3, 60, 0.2,
             "three SMS sent by the worker")
    assert all(m["StatusCallback"] == CALLBACK for m in twilio_api.messages)
    delivered, unknown_number, unreachable = Dispatch.objects.order_by("id")

    # Intermediate statuses are acknowledged, not receipts.
    sent = post_twilio(documented.twilio_status(delivered.result["sid"], "sent", delivered.address, SID))
    assert (sent.status_code, sent.content) == (200, b"ignored: not a delivery receipt")
    ok = post_twilio(documented.twilio_status(delivered.result["sid"], "delivered", delivered.address, SID))
    assert (ok.status_code, ok.content) == (200, b"recorded")
    # 30005: unknown destination handset (the number will never receive); 30003: unreachable for now.
    post_twilio(documented.twilio_status(unknown_number.result["sid"], "undelivered", unknown_number.address,
                                         SID, "30005"))
    post_twilio(documented.twilio_status(unreachable.result["sid"], "undelivered", unreachable.address,
                                         SID, "30003"))
    got = {r.dispatch_id: (r.event, r.permanent, r.reason) for r in DeliveryReceipt.objects.all()}
    assert got == {
        delivered.pk: ("delivered", False, "delivered"),
        unknown_number.pk: ("bounced", True, "undelivered error 30005"),
        unreachable.pk: ("bounced", False, "undelivered error 30003"),
    }
    assert list(Suppression.objects.values_list("kind", "address", "reason")) == [
        ("sms", unknown_number.address, "bounce")]

    before = len(twilio_api.messages)
    [(_, [again])] = schedule_messages("Hello again", recipients("sms", unknown_number.address))
    wait_for(lambda: Dispatch.objects.get(pk=again.pk).status == "failed", 60, 0.2, "the worker to refuse it")
    assert len(twilio_api.messages) == before


def test_twilio_callbacks_without_a_valid_signature_record_nothing(twilio_api):
    dispatch = send_now("sms", "+15551230000")
    form = documented.twilio_status(dispatch.result["sid"], "undelivered", dispatch.address, SID, "30005")
    refused = [
        post_twilio(form, signature=""),  # no header
        post_twilio(form, signature="0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        post_twilio(form, token="not-the-auth-token"),
        post_twilio(form, url="http://testserver/elsewhere/"),  # signed for another URL
        post_twilio({**form, "AccountSid": "AC" + "f" * 32},  # an account we do not have
                    signature=documented.twilio_signature(CALLBACK, {**form, "AccountSid": "AC" + "f" * 32},
                                                          TWILIO_TOKEN)),
    ]
    tampered = dict(form, ErrorCode="30003")  # signed with 30005, sent with 30003
    refused.append(post_twilio(tampered, signature=documented.twilio_signature(CALLBACK, form, TWILIO_TOKEN)))
    assert [r.status_code for r in refused] == [403] * 6
    assert not DeliveryReceipt.objects.exists() and not Suppression.objects.exists()
    # A callback signed but not a status callback is malformed.
    odd = {"AccountSid": SID, "Body": "hello"}
    assert post_twilio(odd).status_code == 400
    assert Client().post("/dispatcher/receipts/twilio/", json.dumps(form),
                         content_type="application/json").status_code == 400
    assert not DeliveryReceipt.objects.exists()


def test_twilio_signed_for_the_public_url_behind_a_proxy(twilio_api, settings):
    """Twilio signs the URL it called; behind a proxy Django may see another
    host, so SITE_URL plus the path is accepted as well."""
    settings.SITE_URL = "https://notify.example.org"
    dispatch = send_now("sms", "+15551230000")
    form = documented.twilio_status(dispatch.result["sid"], "delivered", dispatch.address, SID)
    public = "https://notify.example.org/dispatcher/receipts/twilio/"
    assert post_twilio(form, url=public).content == b"recorded"
    # With the default port written out, as some consoles keep it.
    other = send_now("sms", "+15551230009")
    form = documented.twilio_status(other.result["sid"], "delivered", other.address, SID)
    with_port = "https://notify.example.org:443/dispatcher/receipts/twilio/"
    assert post_twilio(form, url=with_port).content == b"recorded"


# -- SMTP bounces (DSN) ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postfix_server():
    reason = postfix.missing()
    if reason:
        if settings.REQUIRE_SERVICES:
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    server = postfix.PostfixServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def mta(postfix_server):
    postfix_server.clear()
    return postfix_server


def smtp_options(mta) -> dict:
    return {"from_email": "Dispatcher <noreply@example.org>", "host": "127.0.0.1", "port": mta.port,
            "use_tls": True, "ca_file": str(mta.ca_file), "bounce_address": "bounces+{id}@dispatcher.test"}


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_real_bounce_from_postfix_is_recorded_by_the_workers_task_and_suppresses(workers, mta):
    options = smtp_options(mta)
    register_messenger_objects(SMTPMessenger(**options))
    maildir = mta.root / "mail" / "bounces"
    workers("bounces", DISPATCHER_BOUNCE_MAILBOX=str(maildir), TEST_EXTRA_MESSENGERS=json.dumps(
        {"smtp": {"class": "messengers.smtp.SMTPMessenger", "options": options}}))
    schedule_messages(HelloMessage({"subject": "Hi"}), recipients("smtp", [GONE, "alice@dispatcher.test"]))
    wait_for(lambda: list(Dispatch.objects.values_list("status", flat=True)) == ["sent", "sent"], 60, 0.2,
             "both accepted by Postfix")
    gone, alice = Dispatch.objects.order_by("id")
    mta.mails("bounces")  # Postfix bounced the first to bounces+<id>@dispatcher.test

    current_app.send_task("dispatcher.process_bounces", queue="dispatcher")  # what beat runs
    wait_for(lambda: DeliveryReceipt.objects.exists(), 60, 0.2, "the worker to record the bounce")
    [receipt] = DeliveryReceipt.objects.all()
    assert (receipt.dispatch_id, receipt.event, receipt.provider, receipt.permanent) == (
        gone.pk, "bounced", "dsn", True)
    assert receipt.reason.startswith("5.")
    # Postfix expanded the alias: the original recipient is the dispatch's address.
    assert (receipt.payload["original_recipient"], receipt.payload["final_recipient"]) == (
        GONE, "gone@nowhere.invalid")
    assert Suppression.objects.get().address == GONE
    # The bounce is filed as seen: a second run records nothing more.
    assert dsn.process_mailbox(maildir) == 0
    assert not list((maildir / "new").iterdir())

    [(_, [again])] = schedule_messages(HelloMessage({"subject": "Again"}), recipients("smtp", GONE))
    wait_for(lambda: Dispatch.objects.get(pk=again.pk).status == "failed", 60, 0.2, "the worker to refuse it")


@pytest.mark.django_db(transaction=True)
def test_a_piped_bounce_needs_a_real_dsn_for_the_dispatch_own_address(mta):
    """``manage.py dispatcher_bounces -`` takes one mail from the MTA's pipe:
    only a DSN naming the dispatch's own address records anything."""
    options = smtp_options(mta)
    register_messenger_objects(SMTPMessenger(**options))
    gone = send_now("smtp", GONE)
    mta.mails("bounces")
    [raw] = mta.raw_mails("bounces")
    # The bounce, moved to another dispatch's bounce address: not about that dispatch.
    other = send_now("smtp", "alice@dispatcher.test")
    forged = raw.replace(f"bounces+{gone.pk}@".encode(), f"bounces+{other.pk}@".encode())
    assert not dsn.process_message(forged)
    # Not a DSN at all, to a real bounce address.
    plain = f"To: bounces+{gone.pk}@dispatcher.test\r\nSubject: hello\r\n\r\nnot a report\r\n".encode()
    assert not dsn.process_message(plain)
    assert not DeliveryReceipt.objects.exists()

    env = worker_env(TEST_EXTRA_MESSENGERS=json.dumps(
        {"smtp": {"class": "messengers.smtp.SMTPMessenger", "options": options}}))
    done = subprocess.run(
        [sys.executable, "manage.py", "dispatcher_bounces", "-",
         f"--recipient=bounces+{gone.pk}@dispatcher.test"],
        input=raw, cwd=BASE, env=env, capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert done.stdout.decode().strip() == "recorded 1 receipt"
    assert DeliveryReceipt.objects.get().dispatch_id == gone.pk


@override_settings(DISPATCHER_POSTMARK_WEBHOOK={"username": "postmark", "password": "hook-password"})
def test_the_readme_example_runs_as_written(postmark_api, capsys):
    """README, "Delivery receipts": its two blocks, with the worker's send between them."""
    schedule, bounce = readme.code_blocks(readme.section("Delivery receipts"))
    namespace: dict = {}
    exec(schedule, namespace)
    dispatch = namespace["dispatch"]
    deliver_batch("postmark", [dispatch.pk])  # what the worker does
    exec(bounce, namespace)
    assert capsys.readouterr().out.splitlines() == [f"dispatch {dispatch.pk} bounced (postmark)", "True"]
    receipt = dispatch.receipts.get()
    assert (receipt.permanent, receipt.reason) == (True, "HardBounce - Unknown user - 550 5.1.1")


# -- Over the network: a live server, as the providers reach it --------------------------------------------

def http_post(url: str, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A real HTTP request (urllib, through a socket to the live server):
    the status and body, 4xx included."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_providers_calls_over_http_to_a_live_server_after_a_worker_sent(workers, live_server, postmark_api,
                                                                        twilio_api, settings):
    """The whole path as in production: a worker sends through Postmark and
    Twilio (their loopback fakes), the providers then call our webhook URLs
    over HTTP on a running server, with their own authentication (basic
    auth, the secret path, a signature of the URL they called, host and port
    included). Unverified or malformed calls are 4xx and record nothing."""
    settings.DISPATCHER_POSTMARK_WEBHOOK = POSTMARK_HOOK
    twilio_url = f"{live_server.url}/dispatcher/receipts/twilio/"
    sms_options = {**twilio_api.options, "status_callback": twilio_url}
    register_messenger_objects(TwilioSMSMessenger(**sms_options))
    workers("http", TEST_EXTRA_MESSENGERS=json.dumps({
        "postmark": {"class": "messengers.postmark.PostmarkMessenger", "options": postmark_api.options},
        "sms": {"class": "messengers.sms.TwilioSMSMessenger", "options": sms_options}}))
    schedule_messages(HelloMessage({"subject": "Hi"}), recipients("postmark", ["ann@example.org",
                                                                               "gone@example.org"]))
    schedule_messages("Your code is 1234", recipients("sms", ["+15551230001", "+15551230002"]))
    wait_for(lambda: list(Dispatch.objects.values_list("status", flat=True)) == ["sent"] * 4, 60, 0.2,
             "four messages sent by the worker")
    assert [m["StatusCallback"] for m in twilio_api.messages] == [twilio_url] * 2  # where Twilio will call
    ann, gone, phone, unknown_number = Dispatch.objects.order_by("id")

    postmark_url = f"{live_server.url}/dispatcher/receipts/postmark/"
    delivery = json.dumps(documented.postmark(documented.POSTMARK_DELIVERY, ann.result["message_id"],
                                              ann.address)).encode()
    bounce = json.dumps(documented.postmark(documented.POSTMARK_BOUNCE, gone.result["message_id"],
                                            gone.address)).encode()
    status_ok = documented.twilio_status(phone.result["sid"], "delivered", phone.address, SID)
    status_gone = documented.twilio_status(unknown_number.result["sid"], "undelivered",
                                           unknown_number.address, SID, "30005")

    # Unverified or malformed: refused, nothing recorded.
    refused = [
        http_post(postmark_url, bounce, "application/json"),
        http_post(postmark_url, bounce, "application/json", {"Authorization": basic(HOOK_USER, "guess")}),
        http_post(f"{postmark_url}not-the-token/", bounce, "application/json"),
        http_post(postmark_url, b"{not json", "application/json",
                  {"Authorization": basic(HOOK_USER, HOOK_PASSWORD)}),
        http_post(twilio_url, urlencode(status_gone).encode(), "application/x-www-form-urlencoded"),
        # Signed for the URL without the live server's port: not the URL that was called.
        http_post(twilio_url, urlencode(status_gone).encode(), "application/x-www-form-urlencoded",
                  {"X-Twilio-Signature": documented.twilio_signature(
                      twilio_url.replace(f":{live_server.url.rsplit(':', 1)[1]}", ""), status_gone,
                      TWILIO_TOKEN)}),
    ]
    assert [status for status, _ in refused] == [401, 401, 403, 400, 403, 403]
    assert not DeliveryReceipt.objects.exists() and not Suppression.objects.exists()

    # As the providers call: each recorded on its dispatch.
    assert http_post(postmark_url, delivery, "application/json",
                     {"Authorization": basic(HOOK_USER, HOOK_PASSWORD)}) == (200, b"recorded")
    assert http_post(f"{postmark_url}{HOOK_TOKEN}/", bounce, "application/json") == (200, b"recorded")
    for form in (status_ok, status_gone):
        assert http_post(twilio_url, urlencode(form).encode(), "application/x-www-form-urlencoded",
                         {"X-Twilio-Signature": documented.twilio_signature(twilio_url, form, TWILIO_TOKEN)}
                         ) == (200, b"recorded")
    got = {r.dispatch_id: (r.event, r.provider, r.permanent) for r in DeliveryReceipt.objects.all()}
    assert got == {ann.pk: ("delivered", "postmark", False), gone.pk: ("bounced", "postmark", True),
                   phone.pk: ("delivered", "twilio", False), unknown_number.pk: ("bounced", "twilio", True)}
    assert sorted(Suppression.objects.values_list("kind", "address")) == [
        ("email", "gone@example.org"), ("sms", unknown_number.address)]

    # The worker sends nothing more to the two addresses that bounced for good.
    emails, texts = len(postmark_api.emails), len(twilio_api.messages)
    schedule_messages(HelloMessage({"subject": "Again"}), recipients("postmark", gone.address))
    schedule_messages("Again", recipients("sms", unknown_number.address))
    wait_for(lambda: Dispatch.objects.filter(status="failed").count() == 2, 60, 0.2,
             "the worker to refuse both")
    assert (len(postmark_api.emails), len(twilio_api.messages)) == (emails, texts)
