"""Producer processes for the concurrency tests (throttle keys, digests).

``python -m tests.producers <job> '<json args>'`` in an environment from
``tests.services.worker_env`` (the test's database). Every producer prints
``ready`` once Django is set up, waits for ``go_file`` to exist (so they all
begin together), then prints a JSON summary on its last line.
:func:`run` starts them from a test.

Jobs:

- ``throttle``: ``rounds`` calls of ``schedule_messages`` to ``addresses``
  with ``throttle_key`` and an hour's throttle;
- ``digest``: ``rounds`` comment notices to ``addresses`` (a digest type),
  each with a unique ``event`` id in its context;
- ``close``: closes digest windows (as if they were all due) in a loop until
  ``stop_file`` exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.worker_settings")
    import django

    django.setup()
    from django.db import OperationalError
    from django.utils import timezone

    from dispatcher.api import recipients, schedule_messages
    from dispatcher.digests import close_due
    from tests.testapp.message_types import CommentDigestMessage, HelloMessage

    job, args = sys.argv[1], json.loads(sys.argv[2])
    print("ready", flush=True)
    while not os.path.exists(args["go_file"]):
        time.sleep(0.002)
    name = args.get("name", str(os.getpid()))
    summary: dict[str, int] = {"calls": 0, "closed": 0, "retried": 0}

    def retrying(call):  # SQLite: a writer may find the database busy for longer than its timeout
        for _ in range(50):
            try:
                return call()
            except OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                summary["retried"] += 1
                time.sleep(0.05)
        raise RuntimeError("the database stayed locked")

    if job == "throttle":
        for i in range(args["rounds"]):
            retrying(lambda i=i: schedule_messages(
                HelloMessage({"subject": f"{name} #{i}"}), recipients("smtp", args["addresses"]),
                throttle_key=args["key"], throttle=timedelta(hours=1)))
            summary["calls"] += 1
    elif job == "digest":
        for i in range(args["rounds"]):
            retrying(lambda i=i: schedule_messages(
                CommentDigestMessage({"text": f"comment {i}", "author": name, "event": f"{name}-{i}"}),
                recipients("smtp", args["addresses"])))
            summary["calls"] += 1
    elif job == "close":
        while not os.path.exists(args["stop_file"]):
            summary["closed"] += retrying(lambda: close_due(now=timezone.now() + timedelta(days=1)))
            time.sleep(0.01)
    else:
        raise SystemExit(f"unknown job {job!r}")
    print(json.dumps(summary))


def run(jobs: list[tuple[str, dict[str, Any]]], env: dict[str, str], workdir: Path,
        while_running: Any = None, timeout: float = 300) -> list[dict[str, int]]:
    """Start one process per ``(job, args)``, let them go at once, wait for
    all; their summaries. ``while_running()`` is called once they are going."""
    go = workdir / f"go-{time.monotonic_ns()}"
    base = Path(__file__).resolve().parent.parent
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.producers", job,
                          json.dumps({**args, "go_file": str(go), "name": f"p{i}"})],
                         cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, (job, args) in enumerate(jobs)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                error = proc.stderr.read() if proc.stderr else ""
                raise AssertionError(f"a producer did not start: {line!r} {error[-3000:]}")
        go.write_text("go")
        if while_running is not None:
            while_running()
        results: dict[int, dict[str, int]] = {}
        # The producers first; then the closers are told to stop.
        order = sorted(range(len(procs)), key=lambda i: jobs[i][0] == "close")
        for i in order:
            if jobs[i][0] == "close":
                Path(jobs[i][1]["stop_file"]).write_text("stop")
            out, err = procs[i].communicate(timeout=timeout)
            assert procs[i].returncode == 0, err[-3000:]
            results[i] = json.loads(out.strip().splitlines()[-1])
        return [results[i] for i in range(len(procs))]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
