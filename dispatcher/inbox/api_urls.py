"""JSON API, mounted as the ``dispatcher:api`` namespace."""

app_name = "api"

urlpatterns: list = []
