from django.urls import include, path

from . import views

app_name = "dispatcher"

urlpatterns = [
    path("api/", include("dispatcher.inbox.api_urls")),
    path("ops/", include("dispatcher.dashboard.urls")),
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("unsubscribe/<str:token>/one-click/", views.unsubscribe_one_click, name="unsubscribe-one-click"),
    path("read/<str:token>.gif", views.read_pixel, name="read-pixel"),
    path("preferences/", views.preferences, name="preferences"),
]
