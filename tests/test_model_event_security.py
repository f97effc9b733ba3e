"""Model-event subscriptions show only what a model allows, to whom it allows,
and one bad subscriber never silences an event for everyone else."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError

from dispatcher.model_events import (
    _publish,
    handle_event,
    subscribe_to_model_event,
    unwatch_model,
    watch_model,
    watched,
)
from dispatcher.models import Dispatch, ModelEventSubscription
from tests.services import SMTPServer, wait_for
from tests.testapp.models import Event, Profile, Unwatched
from tests.testapp.watching import PROFILE_FIELDS, may_watch_profile


@pytest.fixture
def users(django_user_model):
    make = django_user_model.objects.create_user
    return {name: make(name, f"{name}@example.org", "pw") for name in ("ann", "bob")}


@pytest.fixture
def event_watched() -> Iterator[None]:
    """testapp.event watched with the defaults: no fields shown, the view permission needed."""
    watch_model(Event)
    yield
    unwatch_model(Event)


def bypassing_validation(**fields) -> ModelEventSubscription:
    """A row written without save(): a bulk import, a raw UPDATE, an old row."""
    fields.setdefault("content_type", ContentType.objects.get_for_model(Profile))
    fields.setdefault("action", "create")
    [row] = ModelEventSubscription.objects.bulk_create([ModelEventSubscription(**fields)])
    return row


def texts() -> list[str]:
    return [d.message.context["subject"] + "\n" + d.message.context["text"]
            for d in Dispatch.objects.select_related("message")]


# -- 9. who may subscribe, and what a notification shows ------------------------------------
@pytest.mark.django_db
def test_a_private_field_cannot_be_asked_for(users):
    for template in ("{{ bio }}", "{{ full_name|default:bio }}", "{{ user_id }}", "{{ user.email }}"):
        with pytest.raises(ValidationError, match="may not show"):
            subscribe_to_model_event(Profile, "edit", users["ann"], body_template=template)
    with pytest.raises(ValidationError, match="may not show: bio"):
        subscribe_to_model_event(Profile, "edit", users["ann"], filters={"bio": "secret"})
    assert ModelEventSubscription.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize("template", [
    '{% include "admin/base.html" %}', "{% debug %}", "{% load static %}{% static 'x' %}",
    '{% url "admin:index" %}', "{% csrf_token %}", '{% extends "admin/base.html" %}',
])
def test_tags_that_reach_beyond_the_object_are_refused(users, template):
    with pytest.raises(ValidationError, match="Invalid block tag"):
        subscribe_to_model_event(Profile, "create", users["ann"], body_template=template)


@pytest.mark.django_db
def test_ordinary_tags_and_filters_still_work(users):
    subscribe_to_model_event(
        Profile, "create", users["ann"], subject_template="{{ full_name|upper }}",
        body_template="{% if location %}from {{ location }}{% else %}nowhere{% endif %}",
    )
    profile = Profile.objects.create(full_name="Ana", location="Ljubljana", bio="secret")
    assert handle_event("testapp.profile", str(profile.pk), "create") == 1
    assert texts() == ["ANA\nfrom Ljubljana"]


@pytest.mark.django_db
def test_a_user_cannot_subscribe_to_another_users_object(users):
    bobs = Profile.objects.create(full_name="Bob", user=users["bob"], bio="bob's secret")
    with pytest.raises(ValidationError, match="may not subscribe"):
        subscribe_to_model_event(Profile, "edit", users["ann"], object_id=bobs.pk)
    subscribe_to_model_event(Profile, "edit", users["bob"], object_id=bobs.pk)  # his own


@pytest.mark.django_db
def test_permission_is_asked_again_when_the_event_is_sent(users):
    anns = Profile.objects.create(full_name="Ann", user=users["ann"])
    subscribe_to_model_event(Profile, "edit", users["ann"], object_id=anns.pk)
    subscribe_to_model_event(Profile, "edit", users["ann"])  # every profile: each event is checked
    anns.user = users["bob"]  # the profile changes hands
    anns.save()
    assert handle_event("testapp.profile", str(anns.pk), "edit") == 0
    # And the same event on a profile she may see reaches her, once per subscription that matches.
    mine = Profile.objects.create(full_name="Mine", user=users["ann"])
    assert handle_event("testapp.profile", str(mine.pk), "edit") == 1


@pytest.mark.django_db
def test_rows_that_bypassed_validation_never_show_private_fields_or_run_tags(users, caplog):
    profile = Profile.objects.create(full_name="Ana", bio="the secret bio")
    bypassing_validation(recipient=users["ann"], body_template="bio={{ bio }} user={{ user_id }}")
    bypassing_validation(address="debug@example.org", body_template="{% debug %}")
    bypassing_validation(address="include@example.org", body_template='{% include "admin/base.html" %}')
    bypassing_validation(address="probe@example.org", filters={"bio": "the secret bio"})
    with caplog.at_level(logging.WARNING, logger="dispatcher.model_events"):
        assert handle_event("testapp.profile", str(profile.pk), "create") == 1
    assert texts() == ["profile create: Ana\nbio= user="]
    assert "the secret bio" not in "".join(texts())
    assert caplog.text.count("Invalid block tag") == 2  # {% debug %} and {% include %}: skipped


@pytest.mark.django_db
def test_the_default_policy_needs_the_view_permission(users, event_watched, django_user_model):
    with pytest.raises(ValidationError, match="may not subscribe"):
        subscribe_to_model_event(Event, "create", users["ann"])
    users["ann"].user_permissions.add(Permission.objects.get(codename="view_event"))
    ann = django_user_model.objects.get(pk=users["ann"].pk)  # a fresh permission cache
    subscribe_to_model_event(Event, "create", ann)
    # No field is shown unless the model says so.
    with pytest.raises(ValidationError, match="may not show"):
        subscribe_to_model_event(Event, "create", ann, body_template="{{ title }}")
    root = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    subscribe_to_model_event(Event, "create", root)
    # Losing the permission stops the notifications.
    ann.user_permissions.clear()
    event = Event.objects.create(type="concert", title="Secret title")
    assert handle_event("testapp.event", str(event.pk), "create") == 1
    assert Dispatch.objects.get().address == "root@example.org"
    assert "Secret title" in Dispatch.objects.get().message.context["subject"]  # object: str(event)


def test_watch_model_refuses_unknown_fields():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="no such fields: colour"):
        watch_model(Profile, fields=["full_name", "colour"])
    assert watched(Profile).fields == frozenset(PROFILE_FIELDS)
    assert watched(Profile).permission is may_watch_profile


# -- 10. one bad subscriber, unwatched models ------------------------------------------------
@pytest.mark.django_db
def test_addresses_are_validated_when_subscribing(users, django_user_model):
    for bad in ("not an address", "a@b.org\r\nBcc: c@d.org", "x" * 600 + "@example.org"):
        with pytest.raises(ValidationError, match="no usable address"):
            subscribe_to_model_event(Profile, "create", bad)
    nomail = django_user_model.objects.create_user("nomail", "", "pw")
    with pytest.raises(ValidationError, match="no usable address"):
        subscribe_to_model_event(Profile, "create", nomail)
    assert ModelEventSubscription.objects.count() == 0


@pytest.mark.django_db
def test_one_unusable_subscriber_does_not_silence_the_event(users, django_user_model, caplog):
    subscribe_to_model_event(Profile, "create", users["ann"])
    subscribe_to_model_event(Profile, "create", "visitor@example.org")
    bypassing_validation(address="not an address")
    bypassing_validation(address="bad@example.org\r\nBcc: victim@example.org")
    bypassing_validation(address="x@example.org", messenger="no-such-messenger")
    lost = django_user_model.objects.create_user("lost", "lost@example.org", "pw")
    subscribe_to_model_event(Profile, "create", lost)
    django_user_model.objects.filter(pk=lost.pk).update(email="")  # the address went away later
    profile = Profile.objects.create(full_name="Ana")
    with caplog.at_level(logging.WARNING, logger="dispatcher.model_events"):
        assert handle_event("testapp.profile", str(profile.pk), "create") == 2
    assert sorted(Dispatch.objects.values_list("address", flat=True)) == [
        "ann@example.org", "visitor@example.org"
    ]
    assert caplog.text.count("skipping subscription") == 4


@pytest.mark.django_db
def test_an_unwatched_model_sends_nothing_even_for_rows_that_bypassed_validation(users, event_watched):
    bypassing_validation(content_type=ContentType.objects.get_for_model(Unwatched), address="u@example.org")
    thing = Unwatched.objects.create(name="x")
    assert handle_event("testapp.unwatched", str(thing.pk), "create") == 0
    # A model watched once, subscribed to, then no longer watched.
    root = users["ann"].__class__.objects.create_superuser("root", "root@example.org", "pw")
    subscribe_to_model_event(Event, "create", root)
    event = Event.objects.create(type="t", title="x")
    unwatch_model(Event)
    assert handle_event("testapp.event", str(event.pk), "create") == 0
    assert Dispatch.objects.count() == 0


# -- the same through a real worker ---------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_through_a_worker_private_fields_stay_private_and_bad_subscribers_are_skipped(workers, users):
    sink = SMTPServer()
    try:
        workers("events", smtp_port=sink.port)
        subscribe_to_model_event(Profile, "create", users["ann"],
                                 subject_template="New: {{ full_name }}", body_template="{{ location }}")
        bypassing_validation(address="broken address", body_template="{{ bio }}")
        bypassing_validation(address="leak@example.org", body_template="bio: {{ bio }}")
        bypassing_validation(address="debug@example.org", body_template="{% debug %}")
        bypassing_validation(content_type=ContentType.objects.get_for_model(Unwatched),
                             address="unwatched@example.org")
        Profile.objects.create(full_name="Ana", location="Ljubljana", bio="private bio")
        Profile.objects.create(full_name="Bob's", user=users["bob"], bio="bob's bio")  # not ann's to see
        thing = Unwatched.objects.create(name="x")
        _publish("testapp.unwatched", thing.pk, "create", None)  # as a stale or forged task would
        wait_for(lambda: len(sink.messages) >= 3, 60, 0.2, "the notifications")
        wait_for(lambda: Dispatch.objects.filter(status="sent").count() >= 3, 30, 0.2, "all sent")
        received = sorted((m["To"], m["Subject"]) for m in sink.messages)
        assert received == [
            ("ann@example.org", "New: Ana"),
            ("leak@example.org", "profile create: Ana"),
            ("leak@example.org", "profile create: Bob's"),
        ]
        for mail in sink.messages:
            body = mail.get_content()
            assert "private bio" not in body and "bob's bio" not in body
        leak = next(m for m in sink.messages if m["To"] == "leak@example.org")
        assert leak.get_content().strip().startswith("bio:")
    finally:
        sink.stop()
