import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run web server, Celery worker, beat and a local SMTP sink together (development)."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")

    def handle(self, *args, **options):
        python = sys.executable
        celery = [python, "-m", "celery", "-A", "config"]
        commands = {
            "smtp-sink": [python, "manage.py", "dispatcher_smtp_sink"],
            "web": [python, "manage.py", "runserver", options["addr"], "--noreload"],
            "worker": celery + ["worker", "-l", "info", "--concurrency", "2"],
            "beat": celery + ["beat", "-l", "info", "--pidfile", str(settings.VAR_DIR / "beat.pid"),
                              "--schedule", str(settings.VAR_DIR / "beat-schedule")],
        }
        procs: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        # A development run: DEBUG on in every process unless the environment
        # says otherwise (settings keep it off by default, for production).
        env = {**os.environ}
        env.setdefault("DJANGO_DEBUG", "1")
        for name, cmd in commands.items():
            # Own process group each, so Ctrl-C reaches them only through us
            # and we can stop every child of theirs too.
            procs[name] = subprocess.Popen(cmd, start_new_session=True, env=env)
        self.stdout.write(
            f"\nDispatcher is running:\n"
            f"  admin      http://{options['addr']}/admin/  (create a login with: "
            f"uv run python manage.py createsuperuser)\n"
            f"  mail sink  {settings.EMAIL_HOST}:{settings.EMAIL_PORT}, messages saved in "
            f"{settings.VAR_DIR / 'mail'}/\n"
            f"  Ctrl-C stops everything.\n"
        )
        exit_code = 0
        try:
            while not stopping:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        self.stderr.write(f"{name} exited with code {proc.returncode}; stopping all")
                        exit_code = 1
                        stopping = True
                time.sleep(0.5)
        finally:
            self._stop_all(procs)
        if exit_code:
            sys.exit(exit_code)

    def _stop_all(self, procs):
        for proc in procs.values():
            if proc.poll() is None:
                # The leader only: a Celery worker stops its own pool children
                # (a warm shutdown); signalling them too makes it log errors.
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for proc in procs.values():
            try:  # leftovers of a child's own children
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
