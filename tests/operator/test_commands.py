"""The operator commands, run in-process with call_command and as real processes (exit codes)."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from dispatcher.models import Dispatch, Message
from tests.services import BASE, free_port, worker_env

from .conftest import make_traffic


def manage(*args: str, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``manage.py <args>`` as a separate process with this test's database and broker."""
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE, env=env or worker_env(),
        capture_output=True, text=True, timeout=timeout,
    )


def run(*args: str, **kwargs) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


# -- dispatcher_send_test --------------------------------------------------------------


def test_send_test_delivers_now(smtp_server):
    out, _ = run("dispatcher_send_test", "smtp", "you@example.org", "--text", "hello from ops")
    assert "SENT: smtp -> you@example.org" in out
    [mail] = smtp_server.messages
    assert "hello from ops" in mail.get_payload() and mail["To"] == "you@example.org"


def test_send_test_writes_nothing(smtp_server, db):
    run("dispatcher_send_test", "smtp", "you@example.org")
    assert Dispatch.objects.count() == 0 and Message.objects.count() == 0
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("address, reason", [
    ("perm/1", "scripted permanent failure (permanent error)"),
    ("temp/1", "scripted temporary failure (temporary error: may work later)"),
])
def test_send_test_reports_the_transport_error(address, reason):
    with pytest.raises(CommandError) as info:
        run("dispatcher_send_test", "flaky", address)
    assert f"FAILED: flaky -> {address}:" in str(info.value) and reason in str(info.value)


def test_send_test_unknown_messenger_and_bad_address():
    with pytest.raises(CommandError, match=r"unknown messenger 'nope' \(configured: .*smtp"):
        run("dispatcher_send_test", "nope", "x")
    with pytest.raises(CommandError, match="is not an e-mail address"):
        run("dispatcher_send_test", "smtp", "not-an-address")


def test_send_test_exit_codes_in_a_process(smtp_server, db):
    ok = manage("dispatcher_send_test", "smtp", "ops@example.org", "--text", "from a process",
                env=worker_env(smtp_server.port))
    assert ok.returncode == 0, ok.stderr
    assert "SENT: smtp -> ops@example.org" in ok.stdout
    assert "from a process" in smtp_server.messages[-1].get_payload()

    down = manage("dispatcher_send_test", "smtp", "ops@example.org", env=worker_env(free_port()))
    assert down.returncode == 1
    assert "FAILED: smtp -> ops@example.org" in down.stderr and "refused" in down.stderr.lower()

    unknown = manage("dispatcher_send_test", "nope", "x", env=worker_env())
    assert unknown.returncode == 1 and "unknown messenger 'nope'" in unknown.stderr


# -- dispatcher_status ---------------------------------------------------------------------


def test_status_table(traffic):
    out, _ = run("dispatcher_status")
    lines = out.splitlines()
    assert lines[0].split() == ["messenger", "pending", "processing", "sent", "error", "failed",
                                "cancelled", "skipped", "total", "due", "broker"]
    flaky = next(line.split() for line in lines if line.startswith("flaky "))
    assert flaky[1:10] == ["0", "0", "3", "1", "1", "0", "0", "5", "0"]
    smtp = next(line.split() for line in lines if line.startswith("smtp "))
    assert smtp[1:10] == ["3", "0", "0", "0", "0", "0", "0", "3", "2"]
    total = next(line.split() for line in lines if line.startswith("all "))
    assert total[1:10] == ["3", "0", "3", "1", "1", "0", "0", "8", "2"]
    assert any(line.startswith("oldest due pending: 5m") for line in lines)


def test_status_json(traffic):
    out, _ = run("dispatcher_status", "--format", "json", "--no-broker")
    data = json.loads(out)
    assert data["messengers"]["flaky"]["counts"]["sent"] == 3
    assert data["messengers"]["smtp"]["due"] == 2
    assert data["messengers"]["smtp"]["broker_queue"] is None  # --no-broker
    assert 299 <= data["oldest_due_pending_seconds"] < 400


def test_status_with_the_broker_down(db, monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    out, err = run("dispatcher_status")
    assert "broker queue depths unavailable" in err
    assert next(line.split() for line in out.splitlines() if line.startswith("smtp "))[-1] == "?"
    with pytest.raises(CommandError, match="broker could not be reached"):
        run("dispatcher_status", "--require-broker")


def test_status_exit_codes_in_a_process(transactional_db, clean_broker):
    make_traffic()
    ok = manage("dispatcher_status", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["messengers"]["flaky"]["counts"]["failed"] == 1
    assert data["messengers"]["smtp"]["broker_queue"] == 1  # one deliver task for the due smtp rows
    assert data["broker_error"] is None

    env = worker_env()
    env["DATABASE_URL"] = "sqlite:////nonexistent-directory/db.sqlite3"
    broken = manage("dispatcher_status", env=env)
    assert broken.returncode == 1
    assert "could not read dispatch counts" in broken.stderr


# -- dispatcher_broadcast ------------------------------------------------------------------


def write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = ("address",)) -> Path:
    lines = [",".join(header)] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def people(tmp_path) -> Path:
    return write_csv(tmp_path / "people.csv", [[f"person{i}@example.org"] for i in range(23)])


def test_broadcast_in_batches_with_progress(db, people):
    out, err = run("dispatcher_broadcast", str(people), "--text", "Maintenance at 22:00",
                   "--batch-size", "5", "--key", "maint")
    assert "scheduled 23 dispatches in 5 batches (0 batches were already scheduled); key maint" in out
    assert "100% 23/23 recipients, batch 5/5" in err
    messages = Message.objects.filter(idempotency_key__startswith="maint:")
    assert sorted(messages.values_list("idempotency_key", flat=True)) == [f"maint:{n}" for n in range(1, 6)]
    assert {m.context["text"] for m in messages} == {"Maintenance at 22:00"}
    assert Dispatch.objects.filter(messenger="smtp").count() == 23

    out, _ = run("dispatcher_broadcast", str(people), "--text", "Maintenance at 22:00",
                 "--batch-size", "5", "--key", "maint")
    assert "scheduled 0 dispatches in 0 batches (5 batches were already scheduled)" in out
    assert Dispatch.objects.count() == 23


def test_broadcast_resumes_after_a_crash(db, people, monkeypatch):
    from dispatcher.management.commands import dispatcher_broadcast as command

    real = command.schedule_messages
    calls = []

    def database_goes_away_on_the_third_batch(*args, **kwargs):
        calls.append(kwargs["idempotency_key"])
        if len(calls) == 3:
            raise ConnectionError("server closed the connection unexpectedly")
        return real(*args, **kwargs)

    monkeypatch.setattr(command, "schedule_messages", database_goes_away_on_the_third_batch)
    with pytest.raises(CommandError) as info:
        run("dispatcher_broadcast", str(people), "--text", "hi", "--batch-size", "5")
    assert "batch 3 failed: ConnectionError" in str(info.value)
    assert "run the same command again" in str(info.value)
    assert Dispatch.objects.count() == 10

    monkeypatch.setattr(command, "schedule_messages", real)
    out, err = run("dispatcher_broadcast", str(people), "--text", "hi", "--batch-size", "5")
    assert "resuming broadcast:" in err
    assert "scheduled 13 dispatches in 3 batches (2 batches were already scheduled)" in out
    addresses = list(Dispatch.objects.values_list("address", flat=True))
    assert sorted(addresses) == sorted(f"person{i}@example.org" for i in range(23))  # each exactly once


def test_broadcast_validates_every_row_first(db, tmp_path):
    csv_file = write_csv(tmp_path / "mixed.csv", [
        ["a@example.org", ""], ["ok/1", "flaky"], ["not-an-address", "smtp"], ["b@example.org", "nope"],
        ["", "smtp"],
    ], header=("address", "messenger"))
    with pytest.raises(CommandError) as info:
        run("dispatcher_broadcast", str(csv_file), "--text", "x")
    text = str(info.value)
    assert "3 invalid rows, nothing scheduled" in text
    assert "line 4: 'not-an-address'" in text and "unknown messenger 'nope'" in text
    assert "line 6: '' via 'smtp': empty address" in text
    assert Dispatch.objects.count() == 0

    out, err = run("dispatcher_broadcast", str(csv_file), "--text", "x", "--skip-invalid", "--no-progress")
    assert "skipping 3 invalid rows" in err and "%" not in err
    assert sorted(Dispatch.objects.values_list("messenger", "address")) == [
        ("flaky", "ok/1"), ("smtp", "a@example.org")]


def test_broadcast_a_message_type_with_context(db, tmp_path):
    csv_file = write_csv(tmp_path / "p.csv", [["a@example.org", "smtp"], ["ok/1", "flaky"]],
                         header=("address", "messenger"))
    with pytest.raises(CommandError, match="cannot be sent through 'flaky'"):
        run("dispatcher_broadcast", str(csv_file), "--message-type", "email_plain",
            "--context", '{"subject": "S", "text": "T"}')
    csv_file = write_csv(tmp_path / "p.csv", [["a@example.org"]])
    run("dispatcher_broadcast", str(csv_file), "--message-type", "email_plain",
        "--context", '{"subject": "S", "text": "T"}')
    [message] = Message.objects.all()
    assert message.message_type == "email_plain"
    assert message.context == {"subject": "S", "text": "T"}
    with pytest.raises(CommandError, match="unknown message type 'nope'"):
        run("dispatcher_broadcast", str(csv_file), "--message-type", "nope")
    with pytest.raises(CommandError, match="--context is not valid JSON"):
        run("dispatcher_broadcast", str(csv_file), "--message-type", "email_plain", "--context", "{")


def test_broadcast_refuses_a_key_from_another_run(db, people):
    run("dispatcher_broadcast", str(people), "--text", "x", "--batch-size", "5", "--key", "k")
    with pytest.raises(CommandError, match="was used for a different broadcast"):
        run("dispatcher_broadcast", str(people), "--text", "x", "--batch-size", "7", "--key", "k")
    assert Dispatch.objects.count() == 23


def test_broadcast_dry_run_and_bad_files(db, tmp_path, people):
    out, _ = run("dispatcher_broadcast", str(people), "--text", "x", "--batch-size", "10", "--dry-run")
    assert out.startswith("dry run: 23 recipients in 3 batches")
    assert Dispatch.objects.count() == 0
    with pytest.raises(CommandError, match="no such file"):
        run("dispatcher_broadcast", str(tmp_path / "missing.csv"), "--text", "x")
    no_column = write_csv(tmp_path / "bad.csv", [["a@example.org"]], header=("email",))
    with pytest.raises(CommandError, match=r"no 'address' column \(columns: email\)"):
        run("dispatcher_broadcast", str(no_column), "--text", "x")
    out, _ = run("dispatcher_broadcast", str(no_column), "--text", "x", "--address-column", "email")
    assert "scheduled 1 dispatches" in out


def test_broadcast_exit_codes_in_a_process(transactional_db, clean_broker, people, tmp_path):
    first = manage("dispatcher_broadcast", str(people), "--text", "hello", "--batch-size", "10")
    assert first.returncode == 0, first.stderr
    assert "scheduled 23 dispatches in 3 batches" in first.stdout
    assert "100% 23/23" in first.stderr
    again = manage("dispatcher_broadcast", str(people), "--text", "hello", "--batch-size", "10")
    assert again.returncode == 0 and "(3 batches were already scheduled)" in again.stdout
    assert Dispatch.objects.count() == 23

    bad = write_csv(tmp_path / "bad.csv", [["nobody"]])
    failed = manage("dispatcher_broadcast", str(bad), "--text", "hello")
    assert failed.returncode == 1 and "1 invalid rows, nothing scheduled" in failed.stderr
