"""Compiled tariffs shared by ingestion and re-rating, and the per-event facts they need from a tariff.

Compiling a tariff builds lookup tables and memos that make rating fast, so it is done once per
(tariff version, subscriber time zone) and kept. Public holidays are German nationwide ones
(config.tariff_loader), looked up per year as the band calendar reaches it, so one compiled
tariff serves every year; accounts do not record their Land, so regional holidays are not known.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date

from config.tariff_loader import german_public_holidays
from domain.catalog import ProductOffering
from domain.rating_engine import AllowanceLimits, AllowanceState, CompiledTariff, EventRow, RatedRow
from domain.tariff import Tariff

_cache: dict[tuple[str, str, str, int], tuple[Tariff, CompiledTariff, threading.Lock]] = {}
_cache_lock = threading.Lock()


def is_public_holiday(day: date) -> bool:
    return day in german_public_holidays((day.year,))


def _entry(tariff: Tariff, timezone: str) -> tuple[Tariff, CompiledTariff, threading.Lock]:
    # id(tariff) tells apart two books that reuse a version number (tests, a reload); the entry
    # keeps the tariff alive, so the id cannot be reused while it is cached.
    key = (tariff.id, tariff.version, timezone, id(tariff))
    found = _cache.get(key)
    if found is None:
        with _cache_lock:
            found = _cache.get(key)
            if found is None:
                found = (tariff, CompiledTariff(tariff, is_public_holiday, timezone), threading.Lock())
                _cache[key] = found
    return found


def compiled(tariff: Tariff, timezone: str) -> CompiledTariff:
    return _entry(tariff, timezone)[1]


def engine_and_lock(tariff: Tariff, timezone: str) -> tuple[CompiledTariff, threading.Lock]:
    """The compiled tariff and the lock to hold while rating with it (see rate_rows), for callers
    that rate many groups with one tariff and keep both at hand instead of looking them up per group."""
    _, engine, lock = _entry(tariff, timezone)
    return engine, lock


def rate_rows(tariff: Tariff, timezone: str, rows: Sequence[EventRow], limits: AllowanceLimits, used: AllowanceState,
              eu_data_cap_bytes: int | None) -> list[RatedRow]:
    """CompiledTariff.rate_batch, one thread at a time per compiled tariff: its band calendar is
    extended in place when events fall outside it, which a concurrent batch must not see half done.
    Rating is pure CPU under the GIL, so the lock costs no throughput."""
    _, engine, lock = _entry(tariff, timezone)
    with lock:
        return engine.rate_batch(rows, limits, used, eu_data_cap_bytes)


@contextmanager
def exclusive(tariff: Tariff, timezone: str) -> Iterator[CompiledTariff]:
    """The compiled tariff, for use by one thread at a time (see rate_rows)."""
    _, engine, lock = _entry(tariff, timezone)
    with lock:
        yield engine


def eu_data_cap_bytes(tariff: Tariff, offering: ProductOffering) -> int | None:
    """The EU fair-use roaming data volume of the offering's bundle (its monthly fee, net), or None
    when the tariff has no fair-use zone."""
    caps = [z.fair_use.data_cap_bytes(offering.monthly_fee) for z in tariff.roaming.zones if z.roam_like_at_home and z.fair_use]
    return min(caps) if caps else None


def stand_in_destination(tariff: Tariff, timezone: str, kind: str, roaming: str | None) -> str | None:
    """A number that prices an event without a called number exactly as any number would: when,
    from where the event was used, the tariff has one price for every destination. None when the
    destination changes the price (the event cannot be rated without it)."""
    engine = compiled(tariff, timezone)
    zone = engine.zone_index(roaming) if roaming else 0
    if zone < 0:
        return tariff.destinations[0].prefix  # the engine rejects the unknown zone itself
    prices = engine.zone_voice[zone] if kind == "voice" else engine.zone_sms[zone]
    if len({id(p) for p in prices}) == 1:
        return tariff.destinations[0].prefix
    return None
