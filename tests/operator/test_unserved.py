"""Dispatches through a messenger no running worker serves are shown, not left to loop silently.

A messenger registered only where the message was scheduled (a shell, a web
process) or added after the workers started has no worker reading its
queue: its dispatches stay due and the requeue sweep publishes them again
and again. ``dispatcher_status`` and the dashboard ask the running workers
(real ``celery -A config worker`` processes here) which queues they consume.
"""

from __future__ import annotations

import json

import pytest

from dispatcher.api import recipients, register_messenger_objects, schedule_messages
from dispatcher.dashboard import workers as worker_queues
from tests.operator.test_commands import run
from tests.seed_messenger import MyMessenger

pytestmark = pytest.mark.e2e


class GhostMessenger(MyMessenger):
    """Known to this process only: no worker has it."""

    alias = "ghost"


@pytest.fixture(autouse=True)
def _fresh_answers():
    worker_queues.clear_cache()
    yield
    worker_queues.clear_cache()


def schedule_for_a_messenger_no_worker_knows() -> None:
    register_messenger_objects(GhostMessenger())
    schedule_messages("boo", recipients("ghost", ["a", "b"]))


def test_status_and_dashboard_name_the_messenger_no_worker_serves(workers, admin_client):
    worker = workers()
    schedule_for_a_messenger_no_worker_knows()
    schedule_messages("hi", recipients("mymessenger", ["c"]))  # the worker has this one

    out, err = run("dispatcher_status")
    assert ("warning: 2 dispatches due for 'ghost', but no running worker consumes dispatch.ghost"
            in err), err
    assert "mymessenger" not in err

    data = json.loads(run("dispatcher_status", "--format", "json")[0])
    assert data["unserved"] == {"ghost": {"queue": "dispatch.ghost", "due": 2}}
    assert data["workers"] == 1

    page = admin_client.get("/dispatcher/ops/").content.decode()
    assert 'id="unserved"' in page
    assert "no running worker consumes dispatch.ghost" in page
    assert 'data-messenger="mymessenger"' not in page.split('id="unserved"')[1].split("</ul>")[0]
    worker.stop()


def test_a_worker_that_consumes_the_queue_serves_it(workers):
    workers(queues="dispatcher,dispatch.ghost")
    schedule_for_a_messenger_no_worker_knows()
    data = json.loads(run("dispatcher_status", "--format", "json")[0])
    assert data["unserved"] == {}


def test_with_no_worker_running_every_due_messenger_is_unserved(transactional_db, clean_broker):
    schedule_messages("hi", recipients("mymessenger", ["c"]))
    out, err = run("dispatcher_status", "--format", "json")
    data = json.loads(out)
    assert data["workers"] == 0
    assert data["unserved"] == {"mymessenger": {"queue": "dispatch.mymessenger", "due": 1}}
    assert "no running worker consumes dispatch.mymessenger" in err


def test_nothing_due_asks_no_worker(db):
    data = json.loads(run("dispatcher_status", "--format", "json")[0])
    assert data["unserved"] == {} and data["workers"] is None
