"""Operator views: the dashboard and the Prometheus metrics endpoint.

Mounted at ``/dispatcher/ops/`` in the ``dispatcher`` namespace:
``dispatcher:dashboard``, ``dispatcher:dashboard-retry``, ``dispatcher:metrics``.
"""

from django.urls import path

from ..metrics import metrics_view
from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("retry/", views.retry, name="dashboard-retry"),
    path("metrics", metrics_view, name="metrics"),
]
