from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dispatcher/", include("dispatcher.urls")),
    path("messages/", include("dispatcher.inbox.urls")),
]
