from django.urls import path

from . import views

urlpatterns = [
    path("postmark/", views.postmark_webhook, name="receipts-postmark"),
    path("postmark/<str:token>/", views.postmark_webhook, name="receipts-postmark-token"),
    path("twilio/", views.twilio_callback, name="receipts-twilio"),
]
