"""Settings for benchmark runs: production settings plus two bench messengers."""

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
