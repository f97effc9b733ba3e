from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dispatcher/", include("dispatcher.urls")),
    path("messages/", include("dispatcher.inbox.urls")),
    path("notifications/", include("dispatcher.feed.urls")),
    # The demo site's own pages: a login for its users (the admin's is for staff
    # only), and the home page, which is the inbox.
    path("accounts/login/", auth_views.LoginView.as_view(template_name="dispatcher/login.html",
                                                         redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", RedirectView.as_view(pattern_name="inbox:inbox"), name="home"),
]
