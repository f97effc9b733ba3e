"""django-sitemessage's published release against the bench's sink: its
``schedule_messages`` (timed apart) then ``send_scheduled_messages``.

Run by the bench with the Python of a throwaway virtualenv that has
django-sitemessage, Django and psycopg installed from the package index
(never a dependency of this project): ``python bench/sitemessage_run.py
SMTP_PORT COUNT DATABASE_URL``. Prints one JSON line with its timings. It
uses PostgreSQL, as the dispatcher does in the bench.
"""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlsplit

import django
from django.conf import settings


def main() -> None:
    port, count, url = int(sys.argv[1]), int(sys.argv[2]), urlsplit(sys.argv[3])
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "sitemessage"],
        DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
                               "USER": url.username or "postgres", "PASSWORD": url.password or "",
                               "HOST": url.hostname or "127.0.0.1", "PORT": url.port or 5432}},
        EMAIL_HOST="127.0.0.1", EMAIL_PORT=port, SERVER_EMAIL="bench@example.org",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        LOGGING_CONFIG=None,
        # Its messages carry unsubscribe links (reversed from its URLs) and are
        # rendered from its templates, as on a real site.
        ROOT_URLCONF=__name__,
        SITEMESSAGE_SITE_URL="http://127.0.0.1:8000",
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from sitemessage.toolbox import get_sitemessage_urls

    sys.modules[__name__].urlpatterns = get_sitemessage_urls()  # type: ignore[attr-defined]
    from sitemessage.messages.email import EmailTextMessage
    from sitemessage.messengers.smtp import SMTPMessenger
    from sitemessage.models import Dispatch, Message
    from sitemessage.toolbox import (
        recipients,
        register_messenger_objects,
        schedule_messages,
        send_scheduled_messages,
    )

    Dispatch.objects.all().delete()
    Message.objects.all().delete()
    register_messenger_objects(SMTPMessenger("bench@example.org", host="127.0.0.1", port=port))
    subject = "Benchmark"
    body = "Hello,\n\nthis is the benchmark's message, the same for every recipient and every run.\n" * 3
    t0 = time.perf_counter()
    schedule_messages(EmailTextMessage(subject, body),
                      recipients("smtp", [f"user{i}@example.org" for i in range(count)]))
    t1 = time.perf_counter()
    send_scheduled_messages()
    t2 = time.perf_counter()
    sent = Dispatch.objects.filter(dispatch_status=Dispatch.DISPATCH_STATUS_SENT).count()
    print(json.dumps({"schedule_s": t1 - t0, "send_s": t2 - t1, "sent": sent}))


if __name__ == "__main__":
    main()
