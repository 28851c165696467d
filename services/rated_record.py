"""What a rating-engine result becomes on a usage_record row, and the allowance counter it leaves.

The engine counts seconds, messages and bytes. The record's units / allowance_units /
chargeable_units keep the meaning invoices rely on: started minutes (voice), messages (sms) and
started MB (data); `parts` keep the exact split, one entry per piece the event was priced in.
The amount is exact micro-units, as the engine computed it; invoices sum amount_micros.
"""
from __future__ import annotations

from typing import Any

from domain.money import to_micros
from domain.rating_engine import AllowanceState, RatedEvent, RatedRow
from domain.tariff import BANDS
from persistence.tables import AllowanceCounter

BILLING_UNIT = {"voice": 60, "sms": 1, "data": 1_000_000}  # base units per invoice unit (MIN, C62, MB)


def _ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


def rated_values(row: RatedRow) -> dict[str, Any]:
    """usage_record columns set by rating, from one engine result (fast path) without an error."""
    _, kind, billed, from_allowance, amount, band, destination_name, zone, parts, _ = row
    return _values(kind, billed, from_allowance, amount, None if band is None else BANDS[band], destination_name, zone,
                   [(None if b is None else BANDS[b], u, a, f, m) for b, u, a, f, m in parts])


def rated_event_values(event: RatedEvent) -> dict[str, Any]:
    """The same from a typed RatedEvent (re-rating)."""
    parts = [(p.band, p.units, p.from_allowance, p.fair_use_surcharge, to_micros(p.amount)) for p in event.parts]
    return _values(event.kind, event.billed_units, event.allowance_units, event.amount_micros, event.band, event.destination, event.zone, parts)


def _values(kind: str, billed: int, from_allowance: int, amount: int, band: str | None, destination_name: str | None, zone: str | None,
            parts: list[tuple[str | None, int, bool, bool, int]]) -> dict[str, Any]:
    unit = BILLING_UNIT[kind]
    units = _ceil_div(billed, unit)
    chargeable = _ceil_div(billed - from_allowance, unit)
    if parts:
        stored_parts = [_part(*p) for p in parts]
    elif billed or amount:
        stored_parts = [_part(band, billed, bool(billed) and from_allowance == billed, False, amount)]
    else:
        stored_parts = []  # unanswered, or nothing used
    return {
        "units": units,
        "allowance_units": units - chargeable,
        "chargeable_units": chargeable,
        "amount_micros": amount,
        "band": band,
        "zone": zone,
        "destination_name": destination_name,
        "parts": stored_parts,
    }


def _part(band: str | None, units: int, from_allowance: bool, fair_use: bool, amount_micros: int) -> dict[str, Any]:
    return {"band": band, "units": units, "fromAllowance": from_allowance, "fairUse": fair_use, "amountMicros": amount_micros}


def allowance_base_units(parts: list[dict[str, Any]]) -> int:
    """Seconds, messages or bytes a stored record drew from the allowance."""
    return sum(p["units"] for p in parts if p.get("fromAllowance"))


def counter_values(used: AllowanceState) -> dict[str, int]:
    """allowance_counter columns for the consumption `used`."""
    return {
        "voice_s": used.voice_s, "sms": used.sms, "data_bytes": used.data_bytes, "eu_roaming_data_bytes": used.eu_roaming_data_bytes,
        # The old whole-unit columns, for readers that still use them.
        "voice_minutes": _ceil_div(used.voice_s, BILLING_UNIT["voice"]),
        "data_mb": _ceil_div(used.data_bytes, BILLING_UNIT["data"]),
    }


def store_state(counter: AllowanceCounter, used: AllowanceState) -> None:
    for name, value in counter_values(used).items():
        setattr(counter, name, value)
