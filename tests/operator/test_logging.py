"""JSON log lines carry dispatch id, messenger, attempt and outcome, for real deliveries."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from dispatcher.api import recipients, schedule_messages
from dispatcher.delivery import deliver_batch
from dispatcher.logging import JsonFormatter
from dispatcher.models import Dispatch
from tests.services import wait_for


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the ``dispatcher.delivery`` logger emits, formatted by JsonFormatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dispatcher.delivery")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_real_smtp_delivery_logs_its_fields(db, smtp_server, json_lines):
    [(_, [dispatch])] = schedule_messages("hello", recipients("smtp", "ann@example.org"))
    deliver_batch("smtp", [dispatch.pk])
    assert len(smtp_server.messages) == 1
    [line] = parsed(json_lines)
    assert line["logger"] == "dispatcher.delivery" and line["level"] == "INFO"
    assert (line["dispatch_id"], line["messenger"], line["attempt"], line["outcome"]) == (
        dispatch.pk, "smtp", 1, "sent")
    assert line["message"] == f"dispatch {dispatch.pk} sent via smtp (attempt 1)"
    assert line["ts"].endswith("+00:00")


def test_failures_log_their_outcome(db, json_lines):
    [(_, dispatches)] = schedule_messages("x", recipients("flaky", ["temp/1", "perm/2"]))
    deliver_batch("flaky", [d.pk for d in dispatches])
    by_id = {line["dispatch_id"]: line for line in parsed(json_lines)}
    temp, perm = dispatches
    assert by_id[temp.pk]["outcome"] == "error" and by_id[temp.pk]["level"] == "WARNING"
    assert by_id[perm.pk]["outcome"] == "failed"
    assert "scripted permanent failure" in by_id[perm.pk]["message"]
    assert {line["attempt"] for line in by_id.values()} == {1}


def test_formatter_handles_exceptions_and_odd_extras():
    formatter = JsonFormatter(static_fields={"service": "dispatcher"})
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("here",), sys.exc_info())
    record.obj = object()  # not JSON: written with str()
    line = json.loads(formatter.format(record))
    assert line["message"] == "failed here" and line["service"] == "dispatcher"
    assert "ValueError: boom" in line["exc_info"]
    assert line["obj"].startswith("<object object")
    assert "dispatch_id" not in line  # only fields that were given
    assert "\n" not in formatter.format(record)  # one line per record


@pytest.mark.e2e
def test_a_worker_logs_json_when_wired_as_documented(workers, smtp_server):
    worker = workers("json", smtp_port=smtp_server.port, concurrency=1,
                     DJANGO_SETTINGS_MODULE="tests.operator.json_log_settings")
    [(_, [dispatch])] = schedule_messages("hello", recipients("smtp", "bob@example.org"))
    wait_for(lambda: Dispatch.objects.get(pk=dispatch.pk).status == "sent", 60, what="the worker to send")

    def delivery_line():
        for text in worker.output().splitlines():
            if '"dispatch_id"' in text:
                return json.loads(text[text.index("{"):])
        return None

    line = wait_for(delivery_line, 10, what="a JSON delivery line in the worker's log")
    assert (line["dispatch_id"], line["messenger"], line["attempt"], line["outcome"]) == (
        dispatch.pk, "smtp", 1, "sent")
