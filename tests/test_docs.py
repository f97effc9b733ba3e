"""Every Python and shell block of README.md and docs/*.md runs as written, in order.

What a newcomer does: ``make run`` in one terminal, then each block of the
README and of docs/*.md, top to bottom, in another: Python blocks typed into
one ``manage.py shell`` per document (a block sees what the blocks before it
in the same document defined), shell blocks run with ``bash -e``. This test
does exactly that against a real stack: ``make run`` itself (web server,
Celery worker, beat and the SMTP sink) on a database of its own, PostgreSQL
and Redis on the ``services`` profile, SQLite and the file broker on the
``embedded`` one.

The shell blocks run in a scratch copy of the repository root (its entries
are symlinks to the checkout's, beside a ``var/`` of its own), so
``ls var/mail/`` lists the stack's mail and the checkout's own ``var/`` is
never touched.

A block is not run only when the Markdown says so, on the line before it:

- ``<!-- no-run: settings fragment -->``: lines for a settings module or an
  environment file, not for a shell;
- ``<!-- no-run: needs credentials ... -->``: it talks to an outside service
  (a provider's API with real tokens, a production host);
- ``<!-- no-run: long-running ... -->``: it starts a server that does not
  exit (``make run`` itself, which this test runs as the stack; a worker,
  beat, Flower) or runs for many minutes (``make bench``);
- ``<!-- no-run: production host ... -->``: it is for a production host
  (a clone in ``/srv``, systemd, the site's public URL);
- ``<!-- no-run: run by tests/<file>.py -->``: another test runs it as
  written (it must exist and name the document);
- ``<!-- no-run: side by side ... -->``: two columns (another library's
  code beside ours), not one program.

A Python block whose first line names a file of this repository
(``# example/messages.py``) is the content of that file: it is checked to be
in the file, verbatim, and the stack runs the file itself.

Each kind is counted and reported; the e2e test fails on any block that
fails, and the document test on a marker it does not know.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from tests.doc_shell import ANSWER
from tests.services import BASE, free_port, wait_for

DOCUMENTS = [BASE / "README.md", *sorted((BASE / "docs").glob("*.md"))]
#: While writing docs: DISPATCHER_DOCS_ONLY=docs/inbox.md runs the blocks of that document alone.
ONLY = [BASE / name for name in os.environ.get("DISPATCHER_DOCS_ONLY", "").split(",") if name]
PYTHON = {"python", "py", "pycon"}
SHELL = {"sh", "bash", "shell", "console"}
FENCE = re.compile(r"^```(\S*)[ \t]*$")
MARKER = re.compile(r"^<!--\s*no-run:\s*(.*?)\s*-->$")
KINDS = {
    "settings fragment": "settings",
    "needs credentials": "credentials",
    "long-running": "long-running",
    "production host": "production host",
    "side by side": "side by side",
    "run by": "elsewhere",
}
FILE_LINE = re.compile(r"#\s*([\w./-]+\.\w+)\s*$")


@dataclass
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(BASE)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.language in PYTHON | SHELL

    @property
    def repository_file(self) -> Path | None:
        """The repository file a Python block is the content of (its first line names it)."""
        if self.language not in PYTHON:
            return None
        match = FILE_LINE.fullmatch(self.code.partition("\n")[0].strip())
        if match and (BASE / match.group(1)).is_file():
            return BASE / match.group(1)
        return None

    @property
    def kind(self) -> str:
        """python, shell, file, or the kind of the no-run marker."""
        if self.marker is not None:
            for prefix, kind in KINDS.items():
                if self.marker.startswith(prefix):
                    return kind
            return f"unknown marker {self.marker!r}"
        if self.repository_file:
            return "file"
        return "python" if self.language in PYTHON else "shell"


def blocks_of(document: Path) -> list[Block]:
    lines = document.read_text().split("\n")
    found = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(previous)
        found.append(Block(document, i + 1, match.group(1), "\n".join(lines[i + 1:end]) + "\n",
                           marker.group(1) if marker else None))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for document in DOCUMENTS for block in blocks_of(document) if block.runnable]


def report(counts: Counter, capsys: pytest.CaptureFixture | None = None) -> str:
    text = "doc blocks: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    if capsys is not None:
        with capsys.disabled():
            print("\n" + text)
    return text


def test_every_block_is_run_or_marked_with_a_known_reason(capsys):
    """No block is left out silently: markers are known, file blocks match their file."""
    blocks = all_blocks()
    counts = Counter(block.kind for block in blocks)
    report(counts, capsys)
    unknown = [f"{b.where}: {b.kind}" for b in blocks if b.kind.startswith("unknown")]
    assert not unknown, "\n".join(unknown)
    for block in blocks:
        if block.kind == "elsewhere":
            test_file = BASE / block.marker.removeprefix("run by").split()[0]
            assert test_file.is_file(), f"{block.where}: no such test {test_file}"
            name = block.document.stem if block.document.name != "README.md" else "README"
            assert name in test_file.read_text(), f"{block.where}: {test_file.name} does not use {name}"
        if block.kind == "file":
            body = block.code.partition("\n")[2]
            assert body.strip() and body in block.repository_file.read_text(), (
                f"{block.where} is not what {block.repository_file.relative_to(BASE)} says")
    # Most blocks are exercised: run here, checked against their file, or run by another test.
    exercised = counts["python"] + counts["shell"] + counts["file"] + counts["elsewhere"]
    not_run = {"settings", "credentials", "long-running", "production host", "side by side"}
    assert exercised > sum(n for kind, n in counts.items() if kind in not_run)


def test_every_picture_the_docs_show_exists_and_is_a_screenshot_the_browser_tests_take():
    """The README shows the pages with the browser tests' screenshots: each
    picture a document links to is in the repository, and each one in
    docs/images/ is the name of a screenshot a browser test saves, so a
    picture cannot outlive the page it shows without a test noticing."""
    picture = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
    shown = set()
    for document in DOCUMENTS:
        for target in picture.findall(document.read_text()):
            path = (document.parent / target).resolve()
            assert path.is_file(), f"{document.relative_to(BASE)} shows {target}, which does not exist"
            shown.add(path)
    images = sorted((BASE / "docs" / "images").glob("*.png"))
    assert images and set(images) <= shown, "a picture in docs/images/ that no document shows"
    tests = "\n".join(path.read_text() for path in (BASE / "tests").rglob("test_browser.py"))
    for image in images:
        assert f'screenshot(driver, "{image.name}")' in tests, f"no browser test saves {image.name}"


# -- the stack -------------------------------------------------------------------------------


def scratch_root(path: Path) -> Path:
    """A copy of the repository root made of symlinks, with a ``var/`` of its own."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for entry in BASE.iterdir():
        if entry.name not in {"var", "dist"}:
            (path / entry.name).symlink_to(entry)
    return path


def stack_database(var_dir: Path) -> str | None:
    """A database of the stack's own: a new PostgreSQL database on ``services``
    (``<test database>_docs``), else None (the default SQLite file under var/)."""
    url = settings.DATABASES["default"]
    if not url["ENGINE"].endswith("postgresql"):
        return None
    import psycopg

    name = f"{url['NAME']}_docs"
    admin = f"postgresql://{url['USER']}@{url['HOST']}:{url['PORT']}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://{url['USER']}@{url['HOST']}:{url['PORT']}/{name}"


def stack_env(root: Path, smtp_port: int) -> dict[str, str]:
    """A newcomer's environment: nothing of the tests' settings, only where things are."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "DISPATCHER_", "CELERY_", "DATABASE_", "TEST_"))}
    env.update(DISPATCHER_VAR_DIR=str(root / "var"), DISPATCHER_SMTP_PORT=str(smtp_port),
               PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
    database = stack_database(root / "var")
    if database:
        env["DATABASE_URL"] = database
    if settings.CELERY_BROKER_URL.startswith("redis"):
        env["CELERY_BROKER_URL"] = settings.CELERY_BROKER_URL
    # `uv` as the docs call it, also where pip put it off PATH (uv run says where it is).
    uv = shutil.which("uv") or os.environ.get("UV")
    if uv and not shutil.which("uv"):
        (root / ".bin").mkdir(exist_ok=True)
        (root / ".bin" / "uv").symlink_to(uv)
        env["PATH"] = f"{root / '.bin'}:{env['PATH']}"
    if uv:
        env["UV"] = uv
    return env


class Stack:
    """``make run`` in the scratch root, stopped as Ctrl-C stops it."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        self.web = f"127.0.0.1:{free_port()}"
        self.log_path = root / "var" / "make-run.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(["make", "run", f"ADDR={self.web}"], cwd=root, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._ready, 180, 0.5, f"make run (log: {self.log_path})")
        except BaseException:
            self.stop()
            raise

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"make run exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
        if " ready." not in self.output():
            return False
        try:
            return urllib.request.urlopen(f"http://{self.web}/admin/login/", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C in make run's terminal
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Shell:
    """One ``manage.py shell`` for one document."""

    def __init__(self, root: Path, env: dict[str, str], name: str):
        self.log_path = root / "var" / f"shell-{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", "from tests.doc_shell import serve; serve()"],
            cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)

    def run(self, block: Block) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"code": block.code, "name": block.where}) + "\n")
        self.proc.stdin.flush()
        while not (line := self.proc.stdout.readline()).startswith(ANSWER):
            if not line:
                raise AssertionError(f"{block.where}: the shell died:\n{self.log_path.read_text()[-3000:]}")
        answer = json.loads(line.removeprefix(ANSWER))
        assert answer["ok"], f"{block.where} failed:\n{block.code}\n{answer['error']}"

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def run_shell_block(block: Block, root: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["bash", "-e", "-c", block.code], cwd=root, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (f"{block.where} exited with {done.returncode}:\n{block.code}\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def dispatch_states(root: Path, env: dict[str, str]) -> dict:
    done = subprocess.run([sys.executable, "manage.py", "dispatcher_status", "--format", "json"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.mark.e2e
def test_the_docs_run_top_to_bottom_against_make_run(capsys):
    root = scratch_root(settings.VAR_DIR / "docs")
    smtp_port = free_port()
    env = stack_env(root, smtp_port)
    shell_env = {**env, "DJANGO_DEBUG": "1"}  # what the README asks a second terminal to export
    counts: Counter = Counter()
    stack = Stack(root, env)
    try:
        for document in ONLY or DOCUMENTS:
            shell = None
            try:
                for block in blocks_of(document):
                    if not block.runnable:
                        continue
                    counts[block.kind] += 1
                    if block.kind == "python":
                        shell = shell or Shell(root, shell_env, document.stem)
                        shell.run(block)
                    elif block.kind == "shell":
                        run_shell_block(block, root, shell_env)
            finally:
                if shell:
                    shell.close()
        # Everything the docs scheduled for now was handled by the stack's worker:
        # nothing waits for a messenger no worker serves, nothing is stuck.
        def settled() -> dict | None:
            status = dispatch_states(root, shell_env)
            busy = {alias: row for alias, row in status["messengers"].items()
                    if row["due"] or row["counts"].get("processing")}
            return None if busy else status

        status = wait_for(settled, 120, 2, "every due dispatch of the docs to be handled")
        # ... and delivered: no example fails in the worker (an unknown message type, say).
        gone_wrong = {alias: row["counts"] for alias, row in status["messengers"].items()
                      if row["counts"].get("failed") or row["counts"].get("error")}
        assert not gone_wrong, gone_wrong
        assert status["unserved"] == {}, status["unserved"]
        assert not re.findall(r"^\[[^]]*: (?:ERROR|CRITICAL)/.*$", stack.output(), re.M)
        assert ONLY or list((root / "var" / "mail").glob("*.eml")), "the sink received no mail"
    finally:
        stack.stop()
        report(counts, capsys)
    # Ctrl-C stopped everything make run started, cleanly.
    assert "stopping all" not in stack.output(), stack.output()[-3000:]
    marker = f"DISPATCHER_VAR_DIR={root / 'var'}\0".encode()
    wait_for(lambda: not processes_with(marker), 30, 0.5, "every process of make run to exit")
    assert "Traceback" not in stack.output(), stack.output()[-5000:]


def processes_with(marker: bytes) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids

