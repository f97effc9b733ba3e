"""Flow control shared by every worker process on every host: rate limits,
daily quotas, per-recipient rates, pauses a provider asked for (429,
``retry_after``) and a circuit breaker per messenger.

Configuration is per messenger alias, in ``DISPATCHER_MESSENGERS[alias]``
next to ``class`` and ``options`` (see docs/messengers.md, "Rate limits and
back-pressure")::

    "telegram": {"class": ..., "options": {...},
                 "rate": "30/s", "burst": 1, "recipient_rate": "1/s",
                 "daily_quota": None, "concurrency": 8,
                 "circuit_failures": 5, "circuit_cooldown": 30},

The state lives in one place all workers see: Redis when the broker (or
``DISPATCHER_RATE_LIMIT_URL``) is Redis, each decision one Lua script run
atomically on the server's clock; otherwise the database
(:class:`~dispatcher.models.FlowCounter` rows, read and written under a row
lock in one short transaction), which is what the embedded profile uses.

The rate limit is GCRA (the generic cell rate algorithm, a token bucket kept
as one number: the theoretical arrival time of the next send). A send may
reserve a slot up to ``DISPATCHER_FLOW_HORIZON`` seconds ahead and wait for
it; a later slot is not reserved, and the dispatch is postponed instead (the
delivery engine's gate step, :func:`dispatcher.delivery.run_batch`).

This module decides; it never sends and never touches a dispatch.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .models import FlowCounter

DAY_MS = 86_400_000.0

#: Keys of ``DISPATCHER_MESSENGERS[alias]`` read here.
FLOW_KEYS = ("rate", "burst", "daily_quota", "recipient_rate", "recipient_burst", "concurrency",
             "circuit_failures", "circuit_cooldown")

_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_RATE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")


class Rate(NamedTuple):
    """``amount`` sends per ``period`` seconds."""

    amount: float
    period: float

    @property
    def interval(self) -> float:
        """Seconds between two sends at this rate."""
        return self.period / self.amount

    @property
    def per_second(self) -> float:
        return self.amount / self.period

    def __str__(self) -> str:
        return f"{self.amount:g}/{self.period:g}s"


def parse_rate(value: Any, what: str = "rate") -> Rate | None:
    """``"14/s"``, ``"1000/h"``, ``"20/min"``, ``"10/5s"``, or a number (per second); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ImproperlyConfigured(f"{what} must be positive, not {value!r}")
        return Rate(float(value), 1.0)
    match = _RATE_RE.match(str(value).lower()) if isinstance(value, str) else None
    if not match or match.group(3) not in _UNITS:
        raise ImproperlyConfigured(
            f"{what} {value!r} is not a rate: write it like '14/s', '30/min', '1000/h' or '10/5s'"
        )
    count = float(match.group(1))
    period = float(match.group(2) or 1) * _UNITS[match.group(3)]
    if count <= 0 or period <= 0:
        raise ImproperlyConfigured(f"{what} {value!r} must be positive")
    return Rate(count, period)


@dataclass(frozen=True)
class FlowConfig:
    """The flow settings of one messenger alias."""

    alias: str
    rate: Rate | None = None
    burst: int = 1
    daily_quota: int | None = None
    recipient_rate: Rate | None = None
    recipient_burst: int = 1
    concurrency: int = 1
    circuit_failures: int = 0
    circuit_cooldown: float = 30.0

    @property
    def metered(self) -> bool:
        """Whether each send takes something from a shared budget."""
        return bool(self.rate or self.recipient_rate or self.daily_quota)

    @property
    def paced(self) -> bool:
        """Whether the engine hands envelopes one at a time, each let through
        by the gate, rather than a message's whole list in one ``send()`` call
        (the gate then asks before each message only)."""
        return self.metered or self.concurrency > 1 or self.circuit_failures > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": str(self.rate) if self.rate else None,
            "rate_per_second": self.rate.per_second if self.rate else None,
            "burst": self.burst,
            "daily_quota": self.daily_quota,
            "recipient_rate": str(self.recipient_rate) if self.recipient_rate else None,
            "concurrency": self.concurrency,
            "circuit_failures": self.circuit_failures,
            "circuit_cooldown": self.circuit_cooldown,
        }


def _positive_int(conf: dict[str, Any], key: str, default: int, alias: str, minimum: int = 1) -> int:
    value = conf.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ImproperlyConfigured(
            f"DISPATCHER_MESSENGERS[{alias!r}][{key!r}] must be a whole number >= {minimum}, not {value!r}"
        )
    return value


def flow_config(alias: str) -> FlowConfig:
    """The flow settings of ``alias`` from ``DISPATCHER_MESSENGERS`` (defaults for
    a messenger registered in code): no rate, concurrency 1, and the circuit
    breaker of ``DISPATCHER_CIRCUIT_FAILURES`` / ``DISPATCHER_CIRCUIT_COOLDOWN``."""
    conf = getattr(settings, "DISPATCHER_MESSENGERS", {}).get(alias) or {}
    where = f"DISPATCHER_MESSENGERS[{alias!r}]"
    cooldown = conf.get("circuit_cooldown", getattr(settings, "DISPATCHER_CIRCUIT_COOLDOWN", 30.0))
    if isinstance(cooldown, bool) or not isinstance(cooldown, (int, float)) or cooldown <= 0:
        raise ImproperlyConfigured(f"{where}['circuit_cooldown'] must be a positive number of seconds")
    daily = conf.get("daily_quota")
    return FlowConfig(
        alias=alias,
        rate=parse_rate(conf.get("rate"), f"{where}['rate']"),
        burst=_positive_int(conf, "burst", 1, alias),
        daily_quota=_positive_int(conf, "daily_quota", 0, alias) if daily is not None else None,
        recipient_rate=parse_rate(conf.get("recipient_rate"), f"{where}['recipient_rate']"),
        recipient_burst=_positive_int(conf, "recipient_burst", 1, alias),
        concurrency=_positive_int(conf, "concurrency", 1, alias),
        circuit_failures=_positive_int(
            conf, "circuit_failures", int(getattr(settings, "DISPATCHER_CIRCUIT_FAILURES", 0)), alias, 0
        ),
        circuit_cooldown=float(cooldown),
    )


def check_settings() -> None:
    """Parse every alias's flow settings: a typo stops the process at start-up."""
    for alias in getattr(settings, "DISPATCHER_MESSENGERS", {}):
        flow_config(alias)


@dataclass(frozen=True)
class Ticket:
    """The gate's answer for one send."""

    admitted: bool
    #: Admitted: seconds to wait for the reserved slot (0: now). Not admitted:
    #: seconds until it is worth asking again.
    wait: float = 0.0
    #: Why not admitted: "paused", "circuit", "daily", "rate", "recipient".
    reason: str = ""
    #: Not admitted: whether every other send of this messenger is held back
    #: too (False: only this recipient or this scope).
    whole: bool = True
    #: Admitted as the circuit's half-open probe: send this one alone, then report.
    probe: bool = False


ADMIT = Ticket(True)


@dataclass(frozen=True)
class FlowState:
    """What operators see of one messenger (dashboard, status, metrics)."""

    alias: str
    config: FlowConfig
    #: Unix time until which the whole messenger is paused (None: not paused).
    paused_until: float | None
    #: "closed", "open" or "half-open".
    circuit: str
    circuit_open_until: float | None
    consecutive_failures: int
    #: Seconds the next send would wait for its slot now (0: none waiting).
    rate_backlog: float
    daily_used: int | None

    @property
    def limited(self) -> bool:
        """Held back now: paused, the circuit not closed, the rate saturated or the quota used up."""
        quota = self.config.daily_quota
        return (self.paused_until is not None or self.circuit != "closed" or self.rate_backlog > 0
                or (quota is not None and (self.daily_used or 0) >= quota))

    def paused_until_datetime(self) -> datetime | None:
        return _as_datetime(self.paused_until)

    def circuit_open_until_datetime(self) -> datetime | None:
        return _as_datetime(self.circuit_open_until)


def _as_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _keys(alias: str, scope: str | None = None, recipient: str | None = None) -> dict[str, str]:
    base = f"dispatcher:flow:{alias}"
    return {
        "pause": f"{base}:pause",
        "pause_scope": f"{base}:pause:{scope}" if scope is not None else f"{base}:pause",
        "circuit": f"{base}:circuit",
        "rate": f"{base}:rate",
        "recipient": f"{base}:to:{recipient}" if recipient is not None else f"{base}:to:",
        "daily": f"{base}:day:",
    }


def _interval_ms(rate: Rate | None) -> float:
    return rate.interval * 1000.0 if rate else 0.0


# -- Redis --------------------------------------------------------------------------------------------
# One script per decision, run atomically on the Redis server with its clock
# (TIME), so hosts whose clocks differ still share one budget.

_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"

TAKE_LUA = _NOW + """
-- KEYS: pause, pause_scope, circuit, rate, recipient, daily-prefix
-- ARGV: horizon_ms, T, tau, Tr, taur, quota, circuit_failures, cooldown_ms, take
local horizon = tonumber(ARGV[1])
local T, tau, Tr, taur = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local quota, threshold, cooldown = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local take = tonumber(ARGV[9])
local p = tonumber(redis.call('GET', KEYS[1]) or '0')
if p > now then return {0, tostring(p - now), 'paused', 1, 0} end
if KEYS[2] ~= KEYS[1] then
  p = tonumber(redis.call('GET', KEYS[2]) or '0')
  if p > now then return {0, tostring(p - now), 'paused', 0, 0} end
end
local probe = 0
if threshold > 0 then
  local open_until = tonumber(redis.call('HGET', KEYS[3], 'open_until') or '0')
  if open_until > 0 then
    if open_until > now then return {0, tostring(open_until - now), 'circuit', 1, 0} end
    local probe_until = tonumber(redis.call('HGET', KEYS[3], 'probe_until') or '0')
    if probe_until > now then return {0, tostring(probe_until - now), 'circuit', 1, 0} end
    probe = 1
  end
end
local day = math.floor(now / 86400000)
local daykey = KEYS[6] .. day
if quota > 0 then
  local used = tonumber(redis.call('GET', daykey) or '0')
  if used >= quota then return {0, tostring((day + 1) * 86400000 - now), 'daily', 1, 0} end
end
local wait, wg, tat, tatr = 0, 0, now, now
if T > 0 then
  tat = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now)
  wg = tat - tau - now
  if wg > wait then wait = wg end
end
if Tr > 0 then
  tatr = math.max(tonumber(redis.call('GET', KEYS[5]) or '0'), now)
  local wr = tatr - taur - now
  if wr > wait then wait = wr end
end
if wait > horizon then
  if T > 0 and wg > horizon then return {0, tostring(wg), 'rate', 1, 0} end
  return {0, tostring(wait), 'recipient', 0, 0}
end
if take == 0 then return {1, '0', '', 0, probe} end
local arrival = now + wait
if T > 0 then
  local new = math.max(tat, arrival) + T
  redis.call('SET', KEYS[4], tostring(new), 'PX', math.ceil(new - now + 1000))
end
if Tr > 0 then
  local new = math.max(tatr, arrival) + Tr
  redis.call('SET', KEYS[5], tostring(new), 'PX', math.ceil(new - now + 1000))
end
if quota > 0 then
  redis.call('INCR', daykey)
  redis.call('PEXPIRE', daykey, 2 * 86400000)
end
if probe == 1 then
  redis.call('HSET', KEYS[3], 'probe_until', tostring(now + cooldown))
  redis.call('PEXPIRE', KEYS[3], 86400000)
end
return {1, tostring(math.max(wait, 0)), '', 0, probe}
"""

PAUSE_LUA = _NOW + """
local untill = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untill > current then
  redis.call('SET', KEYS[1], tostring(untill), 'PX', math.ceil(untill - now + 1000))
end
return tostring(math.max(untill, current) - now)
"""

REPORT_LUA = _NOW + """
-- ARGV: threshold, cooldown_ms, trailing failures, success (0/1), probe (0/1)
local threshold, cooldown = tonumber(ARGV[1]), tonumber(ARGV[2])
local n, success, probe = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local f = n
if success == 1 then
  redis.call('HDEL', KEYS[1], 'open_until', 'probe_until')
else
  f = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0') + n
end
redis.call('HSET', KEYS[1], 'failures', f)
if n > 0 then
  local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
  if (probe == 1 and success == 0) or (open_until == 0 and f >= threshold) then
    redis.call('HSET', KEYS[1], 'open_until', tostring(now + cooldown))
    redis.call('HDEL', KEYS[1], 'probe_until')
  end
end
redis.call('PEXPIRE', KEYS[1], 86400000)
return f
"""

STATE_LUA = _NOW + """
-- KEYS: pause, circuit, rate, daily-prefix
local day = math.floor(now / 86400000)
return {tostring(now), redis.call('GET', KEYS[1]) or '0',
        redis.call('HGET', KEYS[2], 'open_until') or '0', redis.call('HGET', KEYS[2], 'probe_until') or '0',
        redis.call('HGET', KEYS[2], 'failures') or '0', redis.call('GET', KEYS[3]) or '0',
        redis.call('GET', KEYS[4] .. day) or '0'}
"""


def _ticket(reply: list[Any]) -> Ticket:
    admitted, ms, reason, whole, probe = reply
    return Ticket(bool(int(admitted)), float(ms) / 1000.0, reason.decode() if isinstance(reason, bytes)
                  else str(reason), bool(int(whole)), bool(int(probe)))


class Backend:
    """Where the shared state lives. Both backends take the same decisions."""

    name = ""

    def take(self, cfg: FlowConfig, horizon: float, scope: str | None = None,
             recipient: str | None = None, take: bool = True) -> Ticket:
        """Admit one send (reserving its slot, at most ``horizon`` seconds
        ahead) or say how long to wait. ``take=False`` only checks the pause
        and the circuit (and claims the half-open probe)."""
        raise NotImplementedError

    def pause(self, alias: str, seconds: float, scope: str | None = None) -> float:
        """Pause ``alias`` (or one scope of it) for ``seconds``; an existing
        longer pause is kept. Returns the seconds the pause now lasts."""
        raise NotImplementedError

    def report(self, cfg: FlowConfig, failures: int, success: bool, probe: bool = False) -> None:
        """Feed the circuit breaker: ``failures`` temporary failures since
        the last success (``success``: at least one send went through)."""
        raise NotImplementedError

    def state(self, cfg: FlowConfig) -> FlowState:
        raise NotImplementedError

    def states(self, cfgs: list[FlowConfig]) -> dict[str, FlowState]:
        return {cfg.alias: self.state(cfg) for cfg in cfgs}

    def reset(self, alias: str) -> None:
        """Forget every piece of state of ``alias`` (tests, operators)."""
        raise NotImplementedError

    def _args(self, cfg: FlowConfig, horizon: float, take: bool) -> list[Any]:
        t, tr = _interval_ms(cfg.rate), _interval_ms(cfg.recipient_rate)
        return [horizon * 1000.0, t, t * (cfg.burst - 1), tr, tr * (cfg.recipient_burst - 1),
                cfg.daily_quota or 0, cfg.circuit_failures, cfg.circuit_cooldown * 1000.0, int(take)]


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, url: str):
        import redis  # the redis client comes with celery[redis]

        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                           health_check_interval=30)
        self._take = self.client.register_script(TAKE_LUA)
        self._pause = self.client.register_script(PAUSE_LUA)
        self._report = self.client.register_script(REPORT_LUA)
        self._state = self.client.register_script(STATE_LUA)

    def take(self, cfg: FlowConfig, horizon: float, scope: str | None = None,
             recipient: str | None = None, take: bool = True) -> Ticket:
        k = _keys(cfg.alias, scope, recipient if cfg.recipient_rate else None)
        keys = [k["pause"], k["pause_scope"], k["circuit"], k["rate"], k["recipient"], k["daily"]]
        return _ticket(self._take(keys=keys, args=self._args(cfg, horizon, take)))

    def pause(self, alias: str, seconds: float, scope: str | None = None) -> float:
        key = _keys(alias, scope)["pause_scope"]
        return float(self._pause(keys=[key], args=[seconds * 1000.0])) / 1000.0

    def report(self, cfg: FlowConfig, failures: int, success: bool, probe: bool = False) -> None:
        if cfg.circuit_failures <= 0:
            return
        self._report(keys=[_keys(cfg.alias)["circuit"]],
                     args=[cfg.circuit_failures, cfg.circuit_cooldown * 1000.0, failures, int(success),
                           int(probe)])

    def state(self, cfg: FlowConfig) -> FlowState:
        k = _keys(cfg.alias)
        now, pause, open_until, probe_until, failures, tat, used = (
            float(v) for v in self._state(keys=[k["pause"], k["circuit"], k["rate"], k["daily"]])
        )
        return _state(cfg, now, pause, open_until, probe_until, failures, tat, used)

    def reset(self, alias: str) -> None:
        keys = list(self.client.scan_iter(match=f"dispatcher:flow:{alias}:*", count=1000))
        if keys:
            self.client.delete(*keys)


def _state(cfg: FlowConfig, now: float, pause: float, open_until: float, probe_until: float,
           failures: float, tat: float, used: float) -> FlowState:
    if open_until <= 0:
        circuit = "closed"
    elif open_until > now:
        circuit = "open"
    else:
        circuit = "half-open"
    backlog = 0.0
    if cfg.rate and tat > now:
        backlog = max(0.0, (tat - _interval_ms(cfg.rate) * (cfg.burst - 1) - now) / 1000.0)
    return FlowState(
        alias=cfg.alias, config=cfg,
        paused_until=pause / 1000.0 if pause > now else None,
        circuit=circuit,
        circuit_open_until=open_until / 1000.0 if open_until > 0 else None,
        consecutive_failures=int(failures),
        rate_backlog=backlog,
        daily_used=int(used) if cfg.daily_quota else None,
    )


# -- the database -------------------------------------------------------------------------------------
class DatabaseBackend(Backend):
    """The same decisions as the Lua scripts, in one short transaction with the
    rows locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
    ``IMMEDIATE`` transactions hold the write lock for the whole of it)."""

    name = "database"

    def _now(self) -> float:
        return time.time() * 1000.0

    def _rows(self, keys: list[str]) -> dict[str, FlowCounter]:
        """Lock (creating them when missing) the rows of ``keys``, inside a transaction."""
        FlowCounter.objects.bulk_create([FlowCounter(key=k) for k in keys], ignore_conflicts=True)
        rows = {r.key: r for r in FlowCounter.objects.select_for_update().filter(key__in=keys)}
        now = self._now()
        for row in rows.values():
            if row.expires is not None and row.expires <= now:
                row.value, row.expires = 0.0, None
        return rows

    def _save(self, row: FlowCounter, value: float, expires: float | None) -> None:
        row.value, row.expires = value, expires
        FlowCounter.objects.filter(key=row.key).update(value=value, expires=expires)

    def take(self, cfg: FlowConfig, horizon: float, scope: str | None = None,
             recipient: str | None = None, take: bool = True) -> Ticket:
        k = _keys(cfg.alias, scope, recipient if cfg.recipient_rate else None)
        if not (take and cfg.metered):
            # Nothing to take: a plain read answers unless a circuit's probe is
            # to be claimed (no write, so no write lock on SQLite for it).
            ticket = self._peek(cfg, k)
            if ticket is not None:
                return ticket
        if random.random() < 0.01:
            self.purge_expired()
        with transaction.atomic():
            now = self._now()
            day = math.floor(now / DAY_MS)
            names = [k["pause"], k["pause_scope"]]
            circuit_keys = [f"{k['circuit']}:open_until", f"{k['circuit']}:probe_until"]
            if cfg.circuit_failures > 0:
                names += circuit_keys
            if cfg.daily_quota:
                names.append(f"{k['daily']}{day}")
            if cfg.rate:
                names.append(k["rate"])
            if cfg.recipient_rate:
                names.append(k["recipient"])
            rows = self._rows(sorted(set(names)))  # one order for every caller: no deadlock
            ms = lambda name: rows[name].value  # noqa: E731
            if ms(k["pause"]) > now:
                return Ticket(False, (ms(k["pause"]) - now) / 1000, "paused", True)
            if ms(k["pause_scope"]) > now:
                return Ticket(False, (ms(k["pause_scope"]) - now) / 1000, "paused", False)
            probe = False
            if cfg.circuit_failures > 0:
                open_until, probe_until = ms(circuit_keys[0]), ms(circuit_keys[1])
                if open_until > 0:
                    if open_until > now:
                        return Ticket(False, (open_until - now) / 1000, "circuit", True)
                    if probe_until > now:
                        return Ticket(False, (probe_until - now) / 1000, "circuit", True)
                    probe = True
            if cfg.daily_quota and ms(f"{k['daily']}{day}") >= cfg.daily_quota:
                return Ticket(False, ((day + 1) * DAY_MS - now) / 1000, "daily", True)
            t, tr = _interval_ms(cfg.rate), _interval_ms(cfg.recipient_rate)
            tau, taur = t * (cfg.burst - 1), tr * (cfg.recipient_burst - 1)
            wait = wg = 0.0
            tat = tatr = now
            if t:
                tat = max(ms(k["rate"]), now)
                wg = tat - tau - now
                wait = max(wait, wg)
            if tr:
                tatr = max(ms(k["recipient"]), now)
                wait = max(wait, tatr - taur - now)
            if wait > horizon * 1000:
                if t and wg > horizon * 1000:
                    return Ticket(False, wg / 1000, "rate", True)
                return Ticket(False, wait / 1000, "recipient", False)
            if not take:
                return Ticket(True, 0.0, probe=probe)
            arrival = now + wait
            if t:
                new = max(tat, arrival) + t
                self._save(rows[k["rate"]], new, new + 1000)
            if tr:
                new = max(tatr, arrival) + tr
                self._save(rows[k["recipient"]], new, new + 1000)
            if cfg.daily_quota:
                row = rows[f"{k['daily']}{day}"]
                self._save(row, row.value + 1, now + 2 * DAY_MS)
            if probe:
                self._save(rows[circuit_keys[1]], now + cfg.circuit_cooldown * 1000, now + DAY_MS)
            return Ticket(True, max(wait, 0.0) / 1000, probe=probe)

    def _peek(self, cfg: FlowConfig, k: dict[str, str]) -> Ticket | None:
        """The answer from a read alone, or None when the locked path must decide."""
        now = self._now()
        circuit = [f"{k['circuit']}:open_until", f"{k['circuit']}:probe_until"]
        names = [k["pause"], k["pause_scope"], *(circuit if cfg.circuit_failures > 0 else [])]
        values = {r.key: r.value for r in FlowCounter.objects.filter(key__in=names)
                  if r.expires is None or r.expires > now}
        if values.get(k["pause"], 0) > now:
            return Ticket(False, (values[k["pause"]] - now) / 1000, "paused", True)
        if values.get(k["pause_scope"], 0) > now:
            return Ticket(False, (values[k["pause_scope"]] - now) / 1000, "paused", False)
        if cfg.circuit_failures > 0 and values.get(circuit[0], 0) > 0:
            return None  # open or half-open: decided under the lock
        return ADMIT

    def pause(self, alias: str, seconds: float, scope: str | None = None) -> float:
        key = _keys(alias, scope)["pause_scope"]
        with transaction.atomic():
            row = self._rows([key])[key]
            now = self._now()
            until = now + seconds * 1000
            if until > row.value:
                self._save(row, until, until + 1000)
            return (max(until, row.value) - now) / 1000

    def report(self, cfg: FlowConfig, failures: int, success: bool, probe: bool = False) -> None:
        if cfg.circuit_failures <= 0:
            return
        base = _keys(cfg.alias)["circuit"]
        names = [f"{base}:failures", f"{base}:open_until", f"{base}:probe_until"]
        with transaction.atomic():
            rows = self._rows(names)
            now = self._now()
            expires = now + DAY_MS
            count = failures if success else rows[names[0]].value + failures
            if success:
                self._save(rows[names[1]], 0, None)
                self._save(rows[names[2]], 0, None)
            self._save(rows[names[0]], count, expires)
            if failures > 0:
                if (probe and not success) or (rows[names[1]].value == 0 and count >= cfg.circuit_failures):
                    self._save(rows[names[1]], now + cfg.circuit_cooldown * 1000, expires)
                    self._save(rows[names[2]], 0, None)

    def state(self, cfg: FlowConfig) -> FlowState:
        return self.states([cfg])[cfg.alias]

    def states(self, cfgs: list[FlowConfig]) -> dict[str, FlowState]:
        """Every alias's state from one query (the dashboard's count of queries
        does not grow with the number of messengers)."""
        now = self._now()
        day = math.floor(now / DAY_MS)
        wanted = {}
        for cfg in cfgs:
            k = _keys(cfg.alias)
            circuit = k["circuit"]
            wanted[cfg.alias] = {"pause": k["pause"], "open": f"{circuit}:open_until",
                                 "probe": f"{circuit}:probe_until", "failures": f"{circuit}:failures",
                                 "rate": k["rate"], "daily": f"{k['daily']}{day}"}
        keys = [key for names in wanted.values() for key in names.values()]
        found = {r.key: r.value for r in FlowCounter.objects.filter(key__in=keys)
                 if r.expires is None or r.expires > now}
        result = {}
        for cfg in cfgs:
            v = {name: found.get(key, 0.0) for name, key in wanted[cfg.alias].items()}
            result[cfg.alias] = _state(cfg, now, v["pause"], v["open"], v["probe"], v["failures"], v["rate"],
                                       v["daily"])
        return result

    def reset(self, alias: str) -> None:
        FlowCounter.objects.filter(key__startswith=f"dispatcher:flow:{alias}:").delete()

    def purge_expired(self) -> int:
        deleted, _ = FlowCounter.objects.filter(expires__lt=self._now() - 60_000).delete()
        return deleted


# -- which backend ------------------------------------------------------------------------------------
_backend: tuple[str, Backend] | None = None


def backend_url() -> str:
    """``DISPATCHER_RATE_LIMIT_URL``, else the broker's URL when it is Redis, else
    ``"database"``."""
    url = getattr(settings, "DISPATCHER_RATE_LIMIT_URL", "") or ""
    if url:
        return url
    broker = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if broker.startswith(("redis://", "rediss://", "unix://")):
        return broker
    return "database"


def get_backend() -> Backend:
    """The process's backend (one Redis connection pool, safe across forks and threads)."""
    global _backend
    url = backend_url()
    if _backend is None or _backend[0] != url:
        if url.startswith(("redis://", "rediss://", "unix://")):
            _backend = (url, RedisBackend(url))
        elif url in ("database", "db"):
            _backend = (url, DatabaseBackend())
        else:
            raise ImproperlyConfigured(
                f"DISPATCHER_RATE_LIMIT_URL must be a redis:// URL or 'database', not {url.split(':')[0]}:..."
            )
    return _backend[1]


def states(aliases: list[str]) -> dict[str, FlowState | None]:
    """Each alias's flow state, for operators; None where it cannot be read."""
    cfgs = []
    for alias in aliases:
        try:
            cfgs.append(flow_config(alias))
        except ImproperlyConfigured:
            continue
    try:
        found: dict[str, FlowState] = get_backend().states(cfgs)
    except Exception:
        found = {}
    return {alias: found.get(alias) for alias in aliases}
