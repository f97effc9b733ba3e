# The two commands a fresh clone needs: `make run` and `make test`.
SHELL := /bin/bash
# uv from PATH, else the one pip installs as a module (wherever pip puts its scripts).
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PY := $(UV) run --frozen

.PHONY: install run test test-services test-embedded lint bench bench-scale migrate clean

install:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen

# Development: DEBUG on (and its public secret key) unless the environment says otherwise.
run migrate: export DJANGO_DEBUG ?= 1

migrate: install
	$(PY) python manage.py migrate --noinput

# ADDR: where the web server listens (make run ADDR=127.0.0.1:8001).
ADDR ?= 127.0.0.1:8000

run: migrate
	$(PY) python manage.py dispatcher_devrun --addr $(ADDR)

lint: install
	$(PY) ruff check .
	$(PY) mypy .
	$(PY) pytest -q -p no:cacheprovider tests/test_architecture.py

# The suite runs twice: on PostgreSQL + Redis (when reachable; required with
# REQUIRE_SERVICES=1), and on the embedded defaults (SQLite + file broker).
test: install lint test-services test-embedded

test-services:
	$(PY) pytest

test-embedded:
	DISPATCHER_TEST_PROFILE=embedded $(PY) pytest -m "not redis_broker and not postgresql and not partitioning and not rabbitmq"

# ONLY: some benchmarks (make bench ONLY=digest,throttle); QUICK=1: small sizes, a smoke test;
# SCALE=1: the scale benchmark, as `make bench-scale` (QUICK=1 works with it too).
# (make itself would take `make bench --only x` or `--scale` as an option of its own and refuse it.)
ONLY ?=
QUICK ?=
SCALE ?=
bench: install
	$(PY) python -m bench $(if $(SCALE),--scale) $(if $(ONLY),--only $(ONLY)) $(if $(QUICK),--quick)

# How cost grows with the history (10k, 100k, 1M, 10M dispatch rows): scheduling, draining,
# the readers (dashboard, metrics, status, admin) and the sweeps at each size, then a 1M fan-out
bench-scale: install
	$(PY) python -m bench --scale

clean:
	rm -rf var .venv
