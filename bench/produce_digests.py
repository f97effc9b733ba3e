"""A producer process of the digest benchmark: ``python -m bench.produce_digests EVENTS RECIPIENTS FIRST``."""

import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from bench.beyond import produce  # noqa: E402

events, count, first = (int(a) for a in sys.argv[1:4])
produce(events, count, first)
