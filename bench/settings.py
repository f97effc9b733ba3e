"""Settings for benchmark runs: production settings plus two bench messengers."""

import json
import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dispatcher_bench")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/9")
os.environ.setdefault("DISPATCHER_LOG_LEVEL", "WARNING")
# Production settings refuse to start without a key; the bench signs nothing that leaves it.
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-" + "b3nchK3yNotSecret" * 3)
os.environ.setdefault("DJANGO_HTTPS", "0")

from config.settings import *  # noqa: E402,F403
from config.settings import DISPATCHER_MESSENGERS  # noqa: E402

DISPATCHER_MESSENGERS = {
    **DISPATCHER_MESSENGERS,
    # 20 ms of simulated network latency per send (the scale-out bench)
    "slow": {"class": "bench.messengers.SleepMessenger", "options": {"delay": 0.02}},
    # marks everything sent at once (the memory bench drains a backlog)
    "null": {"class": "bench.messengers.SleepMessenger", "options": {"delay": 0}},
}

# The flow benchmarks configure their messengers per run, through the worker's
# environment: a signed webhook to the bench's receiver (bench/receiver.py),
# and flow settings (rate, concurrency...) added to "hook" and "smtp".
DISPATCHER_MESSENGERS["hook"] = {
    "class": "messengers.webhook.WebhookMessenger",
    "options": {"secret": "bench-webhook-secret", "read_timeout": 10},
    **json.loads(os.environ.get("BENCH_HOOK_FLOW", "{}")),
}
DISPATCHER_MESSENGERS["smtp"] = {**DISPATCHER_MESSENGERS["smtp"],
                                 **json.loads(os.environ.get("BENCH_SMTP_FLOW", "{}"))}
