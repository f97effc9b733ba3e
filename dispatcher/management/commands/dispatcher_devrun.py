import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.urls import NoReverseMatch, reverse


def default_celery_app() -> str:
    """``DISPATCHER_CELERY_APP``, else the package of the settings module:
    ``mysite`` for ``mysite.settings``, where Celery's Django guide puts the
    app (``mysite/celery.py``, imported by ``mysite/__init__.py``)."""
    configured = getattr(settings, "DISPATCHER_CELERY_APP", None)
    if configured:
        return configured
    return settings.SETTINGS_MODULE.rpartition(".")[0] or settings.SETTINGS_MODULE


def default_var_dir() -> Path:
    """Where beat and the sink keep their files: ``VAR_DIR`` (the repository's
    setting), else ``var/`` beside the site's ``BASE_DIR``, else the current directory."""
    if getattr(settings, "VAR_DIR", None):
        return Path(settings.VAR_DIR)
    return Path(getattr(settings, "BASE_DIR", None) or Path.cwd()) / "var"


def manage_command(python: str) -> list[str]:
    """How this command was started (``manage.py``, or ``django-admin``), to start the web server alike."""
    script = Path(sys.argv[0])
    if script.name == "manage.py" and script.is_file():
        return [python, str(script)]
    return [python, "-m", "django"]


class Command(BaseCommand):
    help = "Run web server, Celery worker, beat and a local SMTP sink together (development)."

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000")
        parser.add_argument("--celery-app", default=None,
                            help="the site's Celery app, as for celery -A (default: DISPATCHER_CELERY_APP, "
                                 "else the package of the settings module)")
        parser.add_argument("--no-sink", action="store_true",
                            help="do not start the local SMTP sink (the messengers send elsewhere)")

    def handle(self, *args, **options):
        python = sys.executable
        celery = [python, "-m", "celery", "-A", options["celery_app"] or default_celery_app()]
        manage = manage_command(python)
        var_dir = default_var_dir()
        var_dir.mkdir(parents=True, exist_ok=True)
        commands: dict[str, list[str]] = {}
        if not options["no_sink"]:  # first: up before the worker sends to it
            commands["smtp-sink"] = [*manage, "dispatcher_smtp_sink", "--dir", str(var_dir / "mail")]
        commands |= {
            "web": [*manage, "runserver", options["addr"], "--noreload"],
            "worker": celery + ["worker", "-l", "info", "--concurrency", "2"],
            "beat": celery + ["beat", "-l", "info", "--pidfile", str(var_dir / "beat.pid"),
                              "--schedule", str(var_dir / "beat-schedule")],
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
        sink = "" if options["no_sink"] else (
            f"  mail sink  {settings.EMAIL_HOST}:{settings.EMAIL_PORT}, "
            f"messages saved in {var_dir / 'mail'}/\n"
        )
        try:
            dashboard = f"  dashboard  http://{options['addr']}{reverse('dispatcher:dashboard')}\n"
        except NoReverseMatch:  # a site that does not mount dispatcher.urls
            dashboard = ""
        self.stdout.write(
            f"\nDispatcher is running:\n"
            f"  admin      http://{options['addr']}/admin/  (create a login with: "
            f"python {' '.join(manage[1:])} createsuperuser)\n"
            f"{dashboard}"
            f"{sink}"
            f"  status     python {' '.join(manage[1:])} dispatcher_status\n"
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
