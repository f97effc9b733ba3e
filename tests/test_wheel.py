"""The wheel, installed into a new site: README "Use it in your own project", verbatim.

Builds the wheel, installs it in a new virtualenv, makes a site with
``django-admin startproject mysite``, adds the README's blocks to the files
they name, and checks that a ``celery -A mysite worker`` of that site
delivers a scheduled message to a real SMTP server; then runs the README's
"Testing" example in that site with pytest (the plugin comes through the
wheel's entry point), and the dev runner. The site uses SQLite and a file
broker of its own, and nothing of this repository but the wheel.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import readme
from tests.services import BASE, SMTPServer, free_port, wait_for

pytestmark = pytest.mark.e2e

#: A site's own tasks.py beside manage.py, as many sites have: never shadowed.
SITE_TASKS = '"""The site\'s own tasks module."""\nSITE_TASKS = True\n'

#: The test's environment, added after the README's blocks: a file broker
#: under the site's var/ (the README leaves the broker to the environment).
TEST_SETTINGS = '''
# -- the test's environment, not from the README -----------------------------------------
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(BASE_DIR / "var" / "broker" / "queue"),
    "data_folder_out": str(BASE_DIR / "var" / "broker" / "queue"),
    "processed_folder": str(BASE_DIR / "var" / "broker" / "processed"),
    "control_folder": str(BASE_DIR / "var" / "broker" / "control"),
    "store_processed": False,
    "polling_interval": 0.2,
}
'''


def uv() -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    # `make install` may have put uv in as a module only (see the Makefile).
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "uv"]
    raise AssertionError("uv is needed to build the wheel (`make install` installs it)")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass
class Site:
    root: Path
    venv: Path
    wheel: Path
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def manage(self, *args: str) -> str:
        return run([self.python, "manage.py", *args], cwd=self.root, env=self.env).stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "--verbosity", "0", "-c", code)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    tmp = tmp_path_factory.mktemp("wheel")
    run([*uv(), "build", "--wheel", "--out-dir", str(tmp / "dist")], cwd=BASE)
    [wheel] = (tmp / "dist").glob("dispatcher-*.whl")

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    # The locked versions, so the site runs what the suite tested (and uv's cache has them).
    constraints = tmp / "constraints.txt"
    run([*uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--format", "requirements-txt",
         "-o", str(constraints)], cwd=BASE)
    run([*uv(), "pip", "install", "--python", str(venv / "bin" / "python"), "-c", str(constraints),
         str(wheel), "pytest", "pytest-django"])

    root = tmp / "site"
    root.mkdir()
    # Nothing of this repository's environment: no settings module, database,
    # broker or PYTHONPATH of its own leaks into the site.
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", str(tmp)),
           "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", "CELERY_BROKER_URL": "filesystem://",
           "SMTP_HOST": "127.0.0.1", "SMTP_PORT": "1"}
    run([str(venv / "bin" / "django-admin"), "startproject", "mysite", str(root)], env=env)
    run([str(venv / "bin" / "python"), "manage.py", "startapp", "myapp"], cwd=root, env=env)
    for path, code in readme.file_blocks("Use it in your own project"):
        target = root / path
        assert target.parent.is_dir(), f"the README names {path}, which startproject does not make"
        with target.open("a") as f:
            f.write("\n" + code)
    with (root / "mysite" / "settings.py").open("a") as f:
        f.write(TEST_SETTINGS)
    (root / "tasks.py").write_text(SITE_TASKS)
    for sub in ("queue", "processed", "control"):
        (root / "var" / "broker" / sub).mkdir(parents=True)
    site = Site(root, venv, wheel, env)
    site.manage("migrate", "--noinput")
    return site


def test_the_wheel_ships_dispatcher_and_messengers_with_tasks_inside_and_no_demo_site(site):
    names = zipfile.ZipFile(site.wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"dispatcher", "messengers"}
    for shipped in ("dispatcher/tasks/__init__.py", "dispatcher/tasks/delivery.py", "dispatcher/celery.py",
                    "dispatcher/migrations/0001_initial.py", "dispatcher/inbox/migrations/0001_initial.py",
                    "dispatcher/templates/dispatcher/dashboard/index.html",
                    "dispatcher/static/dispatcher/vendor/chartjs/chart.umd.js",
                    "dispatcher/testing.py", "dispatcher/pytest_plugin.py",
                    "messengers/smtp/__init__.py", "messengers/xmpp/__init__.py"):
        assert shipped in names, shipped
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "[pytest11]\ndispatcher = dispatcher.pytest_plugin" in zipfile.ZipFile(site.wheel).read(
        entry_points).decode()


def test_the_site_imports_the_installed_package_and_keeps_its_own_names(site):
    out = site.shell(
        "import dispatcher, dispatcher.tasks, messengers, tasks, importlib.util\n"
        "print(dispatcher.tasks.__file__); print(messengers.__file__); print(tasks.__file__)\n"
        "print(tasks.SITE_TASKS); print(importlib.util.find_spec('config'))"
    ).split("\n")
    site_packages = str(site.venv)
    assert out[0].startswith(site_packages) and out[1].startswith(site_packages)
    assert out[2] == str(site.root / "tasks.py") and out[3] == "True"
    assert out[4] == "None"  # no module named config anywhere
    assert "System check identified no issues" in site.manage("check")


def test_a_worker_of_the_site_delivers_a_scheduled_message(site):
    sink = SMTPServer()
    env = {**site.env, "SMTP_PORT": str(sink.port)}
    log_path = site.root / "worker.log"
    section = readme.section("Use it in your own project")
    assert "celery -A mysite worker" in section
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [str(site.venv / "bin" / "celery"), "-A", "mysite", "worker", "-l", "info", "-c", "1",
             "--without-mingle", "--without-gossip"],
            cwd=site.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(lambda: worker.poll() is not None or " ready." in log_path.read_text(), 60, 0.2,
                 "the site's worker to start")
        banner = log_path.read_text()
        assert worker.poll() is None, banner
        for queue in ("celery", "dispatcher", "dispatch.smtp"):
            assert re.search(rf"\.> {re.escape(queue)}\s", banner), (queue, banner)
        assert "dispatcher.deliver" in banner and "dispatcher.requeue_due" in banner

        # The README's own command, as written.
        [command] = re.findall(r'^python manage\.py shell -c ".*?"$', section, re.S | re.M)
        run(["bash", "-c", command], cwd=site.root, env=env)
        [mail] = wait_for(lambda: sink.messages, 60, 0.2, "the mail at the SMTP server")
        assert mail["To"] == "you@example.org" and "Hello there!" in mail.get_content()
        assert "sent" in site.shell("from dispatcher.models import Dispatch;"
                                    "print(list(Dispatch.objects.values_list('status', flat=True)))")
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # the leader only: a warm shutdown
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        sink.stop()


def test_the_readme_testing_example_passes_in_the_site_with_the_installed_plugin(site):
    [(path, code)] = readme.file_blocks("Testing")
    target = site.root / path
    assert target.exists(), f"the README's example goes in {path}, which startapp makes"
    with target.open("a") as f:
        f.write("\n" + code)
    result = subprocess.run([site.python, "-m", "pytest", "-p", "no:cacheprovider", "--ds=mysite.settings",
                             "-v", path], cwd=site.root, env=site.env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"plugins: .*dispatcher-\d", result.stdout), result.stdout  # the entry point
    assert re.search(r"\b3 passed\b", result.stdout), result.stdout
    # Django's own runner takes the TestCase (the mixin) from the same file.
    result = subprocess.run([site.python, "manage.py", "test", "myapp", "-v", "2"],
                            cwd=site.root, env=site.env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "InvitationTests" in result.stderr and "Ran 1 test" in result.stderr, result.stderr


def test_the_dev_runner_runs_the_sites_own_celery_app(site):
    sink = SMTPServer()
    env = {**site.env, "SMTP_PORT": str(sink.port)}
    web_port = free_port()
    log_path = site.root / "devrun.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([site.python, "manage.py", "dispatcher_devrun", "--addr",
                                 f"127.0.0.1:{web_port}", "--no-sink"],
                                cwd=site.root, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def admin_up() -> bool:
            assert proc.poll() is None, log_path.read_text()
            try:
                url = f"http://127.0.0.1:{web_port}/admin/login/"
                return urllib.request.urlopen(url, timeout=2).status == 200
            except OSError:
                return False

        wait_for(admin_up, 60, 0.5, "the site's admin to answer")
        wait_for(lambda: " ready." in log_path.read_text(), 60, 0.5, "the worker")
        site.shell("from dispatcher.api import schedule_messages, recipients;"
                   "schedule_messages('From the dev runner', recipients('smtp', 'dev@example.org'))")
        [mail] = wait_for(lambda: sink.messages, 60, 0.2, "the mail at the SMTP server")
        assert mail["To"] == "dev@example.org"
        output = log_path.read_text()
        assert re.search(r"app:\s+mysite:", output), output  # celery -A mysite, found by itself
        assert "beat: Starting" in output
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        sink.stop()
    assert proc.returncode == 0, log_path.read_text()
