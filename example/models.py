"""Models the docs' examples use: a profile (model events) and an event (private messages)."""

from django.conf import settings
from django.db import models


class Profile(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE)
    full_name = models.CharField(max_length=200)
    location = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return self.full_name


class Event(models.Model):
    """django-postman's example: announce each new event to the users who subscribed to it."""

    type = models.CharField(max_length=50)
    title = models.CharField(max_length=200)
    subscribers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="+")

    def __str__(self) -> str:
        return self.title
