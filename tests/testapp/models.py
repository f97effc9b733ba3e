"""Models the tests use to play an application (the seeds' examples)."""

from django.conf import settings
from django.db import models


class Event(models.Model):
    """django-postman's example: announce each new Event to subscribed users."""

    type = models.CharField(max_length=50)
    title = models.CharField(max_length=200)
    subscribers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")

    def __str__(self) -> str:
        return self.title


class Profile(models.Model):
    """django_notifications' example model."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    full_name = models.CharField(max_length=200)
    location = models.CharField(max_length=200, blank=True)
    bio = models.TextField(blank=True)
    date_created = models.DateTimeField(auto_now_add=True)
    date_updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.full_name


class Unwatched(models.Model):
    """A model nobody subscribes to."""

    name = models.CharField(max_length=50)

    def __str__(self) -> str:
        return self.name


class Follow(models.Model):
    """``follower`` follows ``followed``: the exchange-filter example of docs/inbox.md."""

    follower = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    followed = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")

    class Meta:
        unique_together = [("follower", "followed")]

    def __str__(self) -> str:
        return f"{self.follower} follows {self.followed}"
