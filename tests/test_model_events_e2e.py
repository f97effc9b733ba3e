"""django_notifications' Profile example, end to end: model events through a
real worker to a real SMTP server."""

from __future__ import annotations

from collections import Counter

import pytest

from dispatcher.model_events import subscribe_to_model_event
from dispatcher.models import ModelEventSubscription
from tests.services import SMTPServer, wait_for
from tests.testapp.models import Profile

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_profile_create_edit_delete_subscriptions(workers, django_user_model):
    sink = SMTPServer()

    def received() -> Counter:
        return Counter((m["To"], m["Subject"]) for m in sink.messages)

    def wait_received(expected: Counter, what: str) -> None:
        wait_for(lambda: received() == expected, 90, 0.2, what)

    try:
        workers("events", smtp_port=sink.port)
        watcher = django_user_model.objects.create(username="watcher", email="watcher@example.org")
        subscribe_to_model_event(Profile, "create", watcher, subject_template="New profile: {{ full_name }}")
        subscribe_to_model_event(Profile, "edit", "editor@example.org", object_id=500,
                                 subject_template="Profile {{ pk }} edited: {{ full_name }}")

        # create: fires for every new Profile
        doomed = Profile.objects.create(full_name="Doomed")
        p500 = Profile.objects.create(id=500, full_name="Five Hundred")
        other = Profile.objects.create(full_name="Other")
        expected = Counter({("watcher@example.org", f"New profile: {n}"): 1
                            for n in ("Doomed", "Five Hundred", "Other")})
        wait_received(expected, "a create notification per new profile")

        # edit of object 500: fires for that object only
        other.full_name = "Other, edited"
        other.save()
        p500.full_name = "Five Hundred, edited"
        p500.save()
        expected[("editor@example.org", "Profile 500 edited: Five Hundred, edited")] = 1
        wait_received(expected, "the edit notification of profile 500 only")

        # delete of one object: fires once, then the subscription is inactive
        subscribe_to_model_event(Profile, "delete", "undertaker@example.org", object_id=doomed.pk,
                                 subject_template="Gone: {{ full_name }}")
        doomed_pk = doomed.pk
        doomed.delete()
        expected[("undertaker@example.org", "Gone: Doomed")] = 1
        wait_received(expected, "the delete notification")
        delete_sub = ModelEventSubscription.objects.get(action="delete")
        wait_for(lambda: not ModelEventSubscription.objects.get(pk=delete_sub.pk).active, 10)
        assert ModelEventSubscription.objects.get(pk=delete_sub.pk).fired_count == 1

        again = Profile.objects.create(id=doomed_pk, full_name="Doomed again")
        expected[("watcher@example.org", "New profile: Doomed again")] = 1
        wait_received(expected, "the create notification of the new object")
        again.delete()  # its delete event is published before the next create's
        Profile.objects.create(full_name="Last")
        expected[("watcher@example.org", "New profile: Last")] = 1
        wait_received(expected, "no second delete notification, and the last create")
    finally:
        sink.stop()
