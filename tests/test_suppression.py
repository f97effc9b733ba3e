"""The suppression list: a suppressed address is FAILED at once ("suppressed"),
never sent; per messenger kind; editable in the admin and by the API; fed by
unsubscribes of marketing types. Real SMTP servers, real workers."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from django.test import Client

from dispatcher.api import (
    is_suppressed,
    recipients,
    register_messenger_objects,
    retry_now,
    schedule_messages,
    suppress,
    unsuppress,
)
from dispatcher.delivery import deliver_batch
from dispatcher.models import Dispatch, Suppression
from dispatcher.suppression import kind_of
from messengers.postmark import PostmarkMessenger
from tests.services import wait_for
from tests.testapp.message_types import HelloMessage, PromoMessage

pytestmark = pytest.mark.django_db


def one_click_path(mail) -> str:
    """The path of a mail's RFC 8058 one-click link (List-Unsubscribe)."""
    url = mail["List-Unsubscribe"].strip("<>")
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def send(alias: str, addresses: list[str], message=None) -> list[Dispatch]:
    [(_, dispatches)] = schedule_messages(message or HelloMessage({"subject": "Hi"}),
                                          recipients(alias, addresses))
    deliver_batch(alias, [d.pk for d in dispatches])
    return list(Dispatch.objects.filter(pk__in=[d.pk for d in dispatches]).order_by("id"))


def test_a_suppressed_address_fails_at_once_and_the_rest_of_the_batch_is_sent(smtp_server):
    suppress("smtp", "gone@example.org", Suppression.Reason.BOUNCE, detail="550 no such user")
    rows = send("smtp", ["ok@example.org", "gone@example.org", "also@example.org"])
    assert [d.status for d in rows] == ["sent", "failed", "sent"]
    [error] = rows[1].errors.all()
    assert error.error_class == "Suppressed" and error.permanent
    assert error.text.startswith("suppressed: gone@example.org is on the email suppression list (bounce")
    assert sorted(m["To"] for m in smtp_server.messages) == ["also@example.org", "ok@example.org"]


def test_e_mail_messengers_share_one_list_and_case_does_not_matter(smtp_server):
    register_messenger_objects(PostmarkMessenger("server-token", "noreply@example.org"))
    assert kind_of("postmark") == kind_of("smtp") == "email"
    suppress("postmark", "Bounced@Example.org", Suppression.Reason.BOUNCE)
    assert is_suppressed("smtp", "bounced@example.org")
    [row] = send("smtp", ["BOUNCED@example.ORG"])
    assert row.status == "failed" and smtp_server.messages == []
    # Another kind has a list of its own.
    assert not is_suppressed("mymessenger", "bounced@example.org")


def test_a_suppression_for_one_type_leaves_the_others(smtp_server):
    suppress("smtp", "reader@example.org", Suppression.Reason.UNSUBSCRIBE, message_type="promo")
    [promo] = send("smtp", ["reader@example.org"], PromoMessage({"text": "Sale!"}))
    [hello] = send("smtp", ["reader@example.org"])
    assert (promo.status, hello.status) == ("failed", "sent")
    assert is_suppressed("smtp", "reader@example.org", "promo")
    assert not is_suppressed("smtp", "reader@example.org", "hello")


def test_removed_from_the_list_the_address_receives_again(smtp_server):
    suppress("smtp", "fixed@example.org")
    [row] = send("smtp", ["fixed@example.org"])
    assert row.status == "failed"
    assert unsuppress("smtp", "fixed@example.org") == 1  # the user fixed their mailbox
    assert retry_now(Dispatch.objects.filter(pk=row.pk)) == 1
    deliver_batch("smtp", [row.pk])
    row.refresh_from_db()
    assert row.status == "sent" and [m["To"] for m in smtp_server.messages] == ["fixed@example.org"]


def test_suppressing_twice_keeps_the_first_entry():
    first = suppress("smtp", "x@example.org", Suppression.Reason.COMPLAINT)
    again = suppress("smtp", "X@example.org", Suppression.Reason.MANUAL)
    assert again.pk == first.pk and again.reason == "complaint"
    assert Suppression.objects.count() == 1


def test_the_admin_adds_and_removes_an_address(admin_client, smtp_server):
    response = admin_client.post("/admin/dispatcher/suppression/add/", {
        "kind": "email", "address": " Someone@Example.org ", "message_type": "", "reason": "manual",
        "detail": "asked by phone",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = Suppression.objects.get()
    assert entry.address == "someone@example.org"
    [row] = send("smtp", ["someone@example.org"])
    assert row.status == "failed"
    listing = admin_client.get("/admin/dispatcher/suppression/?q=someone@example.org")
    assert b"someone@example.org" in listing.content
    response = admin_client.post(f"/admin/dispatcher/suppression/{entry.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not is_suppressed("smtp", "someone@example.org")
    # The failed dispatch shows why, in the dispatch admin.
    page = admin_client.get(f"/admin/dispatcher/dispatch/{row.pk}/change/")
    assert b"Suppressed" in page.content


def test_a_one_click_unsubscribe_from_a_marketing_type_suppresses_it(smtp_server):
    # A list of the site's own (no subscriptions), sent as marketing.
    [(_, [dispatch])] = schedule_messages(PromoMessage({"text": "Sale!", "_unsubscribe": True}),
                                          recipients("smtp", "buyer@example.org"))
    deliver_batch("smtp", [dispatch.pk])
    [mail] = smtp_server.messages
    response = Client(enforce_csrf_checks=True).post(one_click_path(mail), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    entry = Suppression.objects.get()
    assert (entry.kind, entry.address, entry.message_type, entry.reason) == (
        "email", "buyer@example.org", "promo", "unsubscribe")
    assert entry.dispatch_id == dispatch.pk
    [again] = send("smtp", ["buyer@example.org"], PromoMessage({"text": "Another sale!"}))
    [hello] = send("smtp", ["buyer@example.org"])
    assert (again.status, hello.status) == ("failed", "sent")


def test_a_type_without_the_flag_is_not_suppressed_by_its_unsubscribe_link(smtp_server):
    [(_, [dispatch])] = schedule_messages(HelloMessage({"subject": "Hi", "_unsubscribe": True}),
                                          recipients("smtp", "reader@example.org"))
    deliver_batch("smtp", [dispatch.pk])
    [mail] = smtp_server.messages
    assert Client().post(one_click_path(mail), {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert not Suppression.objects.exists()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_worker_fails_suppressed_dispatches_without_sending_them(workers, sink):
    suppress("smtp", "bounced@example.org", Suppression.Reason.BOUNCE)
    suppress("smtp", "complained@example.org", Suppression.Reason.COMPLAINT)
    workers("suppress", smtp_port=sink.port)
    addresses = [f"user{i}@example.org" for i in range(20)]
    addresses += ["bounced@example.org", "complained@example.org"]
    schedule_messages(HelloMessage({"subject": "Hi"}), recipients("smtp", addresses))

    def statuses() -> Counter:
        return Counter(Dispatch.objects.values_list("status", flat=True))

    wait_for(lambda: statuses() == {"sent": 20, "failed": 2}, 60, 0.2, "20 sent, 2 suppressed")
    wait_for(lambda: len(sink.messages) >= 20, 10)
    assert sorted(m["To"] for m in sink.messages) == sorted(addresses[:20])
    for row in Dispatch.objects.filter(status="failed"):
        [error] = row.errors.all()
        assert error.text.startswith(f"suppressed: {row.address}")


def test_staff_edit_the_list_over_http_with_csrf_and_permissions(users_for_api):
    admin, viewer = users_for_api
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    page = client.get("/admin/")  # any page: the CSRF cookie
    token = page.cookies["csrftoken"].value
    created = client.post("/dispatcher/suppressions/", json.dumps(
        {"messenger": "smtp", "address": "Gone@Example.org", "reason": "bounce", "detail": "550 no user"}),
        content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201, created.content
    assert created.json()["address"] == "gone@example.org" and created.json()["kind"] == "email"
    again = client.post("/dispatcher/suppressions/", {"kind": "email", "address": "gone@example.org",
                                                      "csrfmiddlewaretoken": token})
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]
    listed = client.get("/dispatcher/suppressions/", {"address": "gone@example.org"}).json()
    assert [e["reason"] for e in listed["suppressions"]] == ["bounce"]
    # Without the CSRF token, nothing changes.
    no_token = client.post("/dispatcher/suppressions/remove/", json.dumps(
        {"messenger": "smtp", "address": "gone@example.org"}), content_type="application/json")
    assert no_token.status_code == 403
    assert is_suppressed("smtp", "gone@example.org")
    bad = client.post("/dispatcher/suppressions/", json.dumps({"messenger": "smtp", "address": "a\nb"}),
                      content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert bad.status_code == 400
    removed = client.post("/dispatcher/suppressions/remove/", json.dumps(
        {"messenger": "smtp", "address": "GONE@example.org"}), content_type="application/json",
        HTTP_X_CSRFTOKEN=token)
    assert removed.json() == {"removed": 1} and not is_suppressed("smtp", "gone@example.org")

    # Staff who may only view: can read, cannot add.
    viewing = Client()
    viewing.force_login(viewer)
    assert viewing.get("/dispatcher/suppressions/", {"address": "x@example.org"}).status_code == 200
    adding = viewing.post("/dispatcher/suppressions/", {"kind": "email", "address": "x@example.org"})
    assert adding.status_code == 403
    assert not Suppression.objects.exists()
    assert Client().get("/dispatcher/suppressions/", {"address": "x@example.org"}).status_code == 302  # login


@pytest.fixture
def users_for_api(django_user_model):
    from django.contrib.auth.models import Permission

    admin = django_user_model.objects.create_superuser("boss", "boss@example.org", "pw")
    viewer = django_user_model.objects.create_user("look", "look@example.org", "pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_suppression"))
    return admin, viewer
