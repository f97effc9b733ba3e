from django.urls import include, path

app_name = "dispatcher"

urlpatterns = [
    path("api/", include("dispatcher.inbox.api_urls")),
]
