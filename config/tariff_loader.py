"""Reads the rating tariffs from YAML and builds the public-holiday set the engine's holiday band needs.

The domain never imports the `holidays` library: it receives a frozenset of dates, built here.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from functools import lru_cache
from pathlib import Path

import holidays
import yaml
from pydantic import ValidationError

from domain.catalog import Catalog
from domain.tariff import TariffBook, parse_tariff_book

DEFAULT_TARIFFS_PATH = Path(__file__).resolve().parent.parent / "catalog" / "tariffs.yaml"
HOLIDAY_COUNTRY = "DE"


def load_tariff_book(path: Path | None = None) -> TariffBook:
    """The tariff book in `path` (default catalog/tariffs.yaml).

    Raises ValueError naming the file and the failing field; FileNotFoundError if it is missing.
    """
    path = Path(path) if path is not None else DEFAULT_TARIFFS_PATH
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return parse_tariff_book(data)
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid tariffs:\n{exc}") from exc


@lru_cache
def cached_tariff_book(path: Path = DEFAULT_TARIFFS_PATH) -> TariffBook:
    return load_tariff_book(path)


def german_public_holidays(years: Iterable[int], subdivision: str | None = None) -> frozenset[date]:
    """German public holidays in `years`.

    `subdivision` is a Land code (e.g. "BY" adds Epiphany, Corpus Christi, Assumption in
    Bavaria); None gives the nationwide holidays only, which every subscriber shares.
    """
    return _holidays(tuple(sorted(set(years))), subdivision)


def german_public_holidays_between(first: date, last: date, subdivision: str | None = None) -> frozenset[date]:
    """Holidays for every year touched by [first, last], e.g. a billing cycle over New Year."""
    if last < first:
        raise ValueError("last must not be before first")
    return german_public_holidays(range(first.year, last.year + 1), subdivision)


@lru_cache(maxsize=64)
def _holidays(years: tuple[int, ...], subdivision: str | None) -> frozenset[date]:
    if subdivision is not None and subdivision not in holidays.Germany.subdivisions:
        raise ValueError(f"unknown German subdivision {subdivision!r}; one of {', '.join(holidays.Germany.subdivisions)}")
    calendar = holidays.country_holidays(HOLIDAY_COUNTRY, subdiv=subdivision, years=years)
    return frozenset(calendar.keys())


def check_offerings(catalog: Catalog, book: TariffBook) -> None:
    """Fail start-up when an offering names a tariff the book does not have: its usage could not be rated.

    Offerings without a tariff are priced by their catalog rates (domain.offering_tariff)."""
    missing = sorted(f"{o.id} -> {o.tariff_id}" for o in catalog.offerings if o.tariff_id is not None and not book.versions(o.tariff_id))
    if missing:
        raise ValueError(f"catalog {catalog.version}: offerings name tariffs that are not in the tariff book: {', '.join(missing)}")
