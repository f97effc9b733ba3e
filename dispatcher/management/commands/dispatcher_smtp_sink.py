import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from dispatcher.smtp_sink import start_sink


class Command(BaseCommand):
    help = "Run a local SMTP server that saves every message it receives as an .eml file."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.EMAIL_PORT)
        parser.add_argument("--dir", default=None, help="default: VAR_DIR/mail, else ./var/mail")

    def handle(self, *args, **options):
        directory = Path(options["dir"] or Path(getattr(settings, "VAR_DIR", None) or "var") / "mail")
        controller, _ = start_sink(options["host"], options["port"], directory)
        self.stdout.write(f"SMTP sink on {options['host']}:{options['port']}, mail saved in {directory}/")
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        controller.stop()
