"""Rating engine: prices a subscriber's usage events with a Tariff, drawing on the cycle's allowances.

Pure (no I/O, no clock, no holiday library) and built for throughput: `CompiledTariff.rate_batch`
(and `rate_runs`, many subscribers' batches in one call) takes plain tuples, works in integer
micro-units and builds no objects per event beyond its output tuple. `rate_events` and `rerate` are the typed edges around it.

Rules (each one a decision a reviewer should be able to find):

* Order: events are rated in (start, record_id) order, whatever order they arrive in, so
  allowances are used up in event-time order. Starts are compared to the microsecond.
* Duration is elapsed time (start and duration in UTC seconds), so a call across a DST change
  is billed for the seconds it lasted, never the wall-clock difference.
* Increments: a call is cut into the increments of its rate intervals (60/1 = one 60 s
  increment, then 1 s ones); the last increment is billed whole.
* Band crossing: each increment is priced in the band in force at the instant the increment
  starts. A 60 s block starting at 18:59:30 is all peak; the per-second increments from
  19:00:00 on are off-peak. The connect fee is priced in the band the call starts in. A
  call's `band` is the band at its start; `parts` show the split.
* Bands are evaluated in the subscriber's local time (the tariff's zone unless given), with
  the holiday set supplied by the caller (see config.tariff_loader).
* Unanswered calls (NO ANSWER or NO_ANSWER, BUSY, FAILED, CONGESTION) cost 0, consume no allowance and are
  not looked up (destination, zone and band stay None). Any other disposition is an error.
* A 0-second answered call bills no seconds: it costs the connect fee (0 where the tariff
  has none) and consumes no allowance.
* Allowances: in-bundle usage (rates with in_bundle: true, at home or roam-like-at-home)
  draws billed seconds, messages or bytes from the cycle's allowance before anything is
  charged. An event straddling the end of the allowance is split: the seconds (bytes,
  messages) still covered are free, the rest are charged at the price of the increment
  they belong to. The connect fee is per call and is never covered by minutes.
* EU fair use: roam-like-at-home data beyond `eu_data_cap_bytes` this cycle is charged the
  zone's fair-use surcharge per GB on top of the domestic price (which may be 0 inside
  the allowance). No cap given means no limit.
* Money: prices become integer micro-units; each rate keeps the exact amount as an integer
  numerator over a common denominator, so nothing is lost before the single rounding per
  event (tariff decimals and method). Then the rate's max_cost caps the event.
  Part amounts are differences of the rounded running total, so parts always add up to the
  event amount exactly, cap included.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

from domain.billing_cycle import local_midnight
from domain.billing_cycle import zone as time_zone
from domain.money import to_micros
from domain.rating import AllowanceUsage, Allowances
from domain.tariff import BANDS, DataRate, Destination, SmsRate, Tariff, VoiceGroupRate

UsageKind = Literal["voice", "sms", "data"]
VOICE, SMS, DATA = "voice", "sms", "data"
ANSWERED = "ANSWERED"
# "NO ANSWER" is Asterisk's spelling, "NO_ANSWER" the mediation package's (mediation.records).
NOT_CHARGED_DISPOSITIONS = frozenset({"NO ANSWER", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION"})
DISPOSITIONS = NOT_CHARGED_DISPOSITIONS | {ANSWERED}

SECONDS_PER_MINUTE = 60
BYTES_PER_MB = 1_000_000
_MICROS_PER_SECOND = 1_000_000
_DAY_S = 86_400

HolidaySet = frozenset[date] | Callable[[date], bool]

# Plain-tuple layouts of the fast path.
# EventRow: (start_us, record_id, kind, quantity, destination, zone, disposition)
#   start_us: microseconds since the Unix epoch (UTC); quantity: seconds, messages or bytes;
#   destination: E.164 digits (voice, sms) or None; zone: ISO country or zone id, None = home.
EventRow = tuple[int, str, str, int, "str | None", "str | None", "str | None"]
# RatedRow: (record_id, kind, billed_units, allowance_units, amount_micros, band_index | None,
#            destination_name | None, zone_id | None, parts, error | None)
# parts: () when unsplit, else tuples (band_index | None, units, from_allowance, fair_use, amount_micros)
RatedRow = tuple


# --- events in, results out (the typed edge) -----------------------------------------------


@dataclass(frozen=True, slots=True)
class RatingEvent:
    """One usage event of one subscriber. `quantity` is seconds (voice, billsec), messages (sms)
    or bytes (data). `zone` is where it was used: ISO country code or zone id, None = home."""

    record_id: str
    kind: UsageKind
    start: datetime
    quantity: int
    destination: str | None = None
    zone: str | None = None
    disposition: str = ANSWERED

    def __post_init__(self) -> None:
        if self.kind not in (VOICE, SMS, DATA):
            raise ValueError(f"{self.record_id}: unknown usage kind {self.kind!r}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError(f"{self.record_id}: start must be timezone-aware")
        if isinstance(self.quantity, bool) or not isinstance(self.quantity, int) or self.quantity < 0:
            raise ValueError(f"{self.record_id}: quantity must be a non-negative int, got {self.quantity!r}")
        if self.kind == VOICE and self.disposition not in DISPOSITIONS:
            raise ValueError(f"{self.record_id}: unknown disposition {self.disposition!r}")
        if self.kind == SMS or (self.kind == VOICE and self.disposition == ANSWERED):
            digits = (self.destination or "").removeprefix("+")
            if not digits.isascii() or not digits.isdigit():
                raise ValueError(f"{self.record_id}: destination {self.destination!r} is not an E.164 number")
            object.__setattr__(self, "destination", digits)

    @classmethod
    def voice(cls, record_id: str, start: datetime, seconds: int, destination: str, *, zone: str | None = None, disposition: str = ANSWERED) -> RatingEvent:
        return cls(record_id, VOICE, start, seconds, destination, zone, disposition)

    @classmethod
    def sms(cls, record_id: str, start: datetime, destination: str, *, messages: int = 1, zone: str | None = None) -> RatingEvent:
        return cls(record_id, SMS, start, messages, destination, zone)

    @classmethod
    def data(cls, record_id: str, start: datetime, octets: int, *, zone: str | None = None) -> RatingEvent:
        return cls(record_id, DATA, start, octets, None, zone)

    def as_row(self) -> EventRow:
        start_us = (self.start - _EPOCH) // timedelta(microseconds=1)
        return (start_us, self.record_id, self.kind, self.quantity, self.destination, self.zone, self.disposition)


@dataclass(frozen=True, slots=True)
class RatedPart:
    band: str | None
    units: int
    from_allowance: bool
    fair_use_surcharge: bool
    amount: Decimal


@dataclass(frozen=True, slots=True)
class RatedEvent:
    """The priced event. Units: seconds (voice), messages (sms), bytes (data), after increments.

    `amount` has the tariff's rounding precision; `amount_micros` is the same value for storage.
    `error` is set (and the amount 0) when the event cannot be rated, e.g. an unknown destination.
    """

    record_id: str
    kind: str
    billed_units: int
    allowance_units: int
    charged_units: int
    amount: Decimal
    amount_micros: int
    band: str | None
    destination: str | None
    zone: str | None
    tariff_id: str
    tariff_version: str
    parts: tuple[RatedPart, ...] = ()
    error: str | None = None


@dataclass(slots=True)
class AllowanceState:
    """Allowance consumed so far in the cycle, in base units. Mutated by rating."""

    voice_s: int = 0
    sms: int = 0
    data_bytes: int = 0
    eu_roaming_data_bytes: int = 0  # roam-like-at-home data so far, for the EU fair-use limit

    @classmethod
    def from_usage(cls, usage: AllowanceUsage) -> AllowanceState:
        """From the minute/MB counters of domain.rating (whole units, so at most a unit off)."""
        return cls(usage.voice_minutes * SECONDS_PER_MINUTE, usage.sms, usage.data_mb * BYTES_PER_MB)

    def copy(self) -> AllowanceState:
        return AllowanceState(self.voice_s, self.sms, self.data_bytes, self.eu_roaming_data_bytes)


@dataclass(frozen=True, slots=True)
class AllowanceLimits:
    """A plan's allowances per cycle in base units: seconds, messages, bytes."""

    voice_s: int = 0
    sms: int = 0
    data_bytes: int = 0

    @classmethod
    def from_allowances(cls, allowances: Allowances) -> AllowanceLimits:
        return cls(allowances.voice_minutes * SECONDS_PER_MINUTE, allowances.sms, allowances.data_mb * BYTES_PER_MB)


@dataclass(frozen=True)
class RatingRun:
    results: list[RatedEvent]  # in event-time order
    used: AllowanceState  # allowance consumed after the run

    @property
    def total(self) -> Decimal:
        return _micros_to_decimal(sum(r.amount_micros for r in self.results))


@dataclass(frozen=True, slots=True)
class RecordDelta:
    record_id: str
    previous_amount: Decimal
    new_amount: Decimal
    previous_allowance_units: int
    new_allowance_units: int
    previous_tariff: tuple[str, str] | None  # None: the record had not been rated before
    new_tariff: tuple[str, str]

    @property
    def delta(self) -> Decimal:
        return self.new_amount - self.previous_amount

    @property
    def changed(self) -> bool:
        return (self.previous_amount, self.previous_allowance_units, self.previous_tariff) != (
            self.new_amount, self.new_allowance_units, self.new_tariff)


@dataclass(frozen=True)
class RerateResult:
    results: list[RatedEvent]
    deltas: list[RecordDelta]  # one per record, in event-time order
    used: AllowanceState

    @property
    def total_delta(self) -> Decimal:
        return sum((d.delta for d in self.deltas), Decimal(0))

    @property
    def changed(self) -> list[RecordDelta]:
        return [d for d in self.deltas if d.changed]


def rate_events(
    events: Iterable[RatingEvent],
    tariff: Tariff | CompiledTariff,
    allowances: Allowances | AllowanceLimits,
    used: AllowanceState | AllowanceUsage | None = None,
    *,
    holidays: HolidaySet,
    timezone: str | None = None,
    eu_data_cap_bytes: int | None = None,
) -> RatingRun:
    """Rate one subscriber's events, continuing from `used` (not modified; the run has the new state)."""
    compiled = tariff if isinstance(tariff, CompiledTariff) else CompiledTariff(tariff, holidays, timezone)
    limits = allowances if isinstance(allowances, AllowanceLimits) else AllowanceLimits.from_allowances(allowances)
    if used is None:
        state = AllowanceState()
    elif isinstance(used, AllowanceUsage):
        state = AllowanceState.from_usage(used)
    else:
        state = used.copy()
    rows = compiled.rate_batch([e.as_row() for e in events], limits, state, eu_data_cap_bytes)
    return RatingRun([compiled.to_rated_event(row) for row in rows], state)


def rerate(
    events: Sequence[RatingEvent],
    previous_results: Iterable[RatedEvent],
    tariff: Tariff | CompiledTariff,
    allowances: Allowances | AllowanceLimits,
    *,
    holidays: HolidaySet,
    timezone: str | None = None,
    eu_data_cap_bytes: int | None = None,
) -> RerateResult:
    """Rate a whole cycle again from scratch (allowance from zero) and compare with what was stored.

    `events` must be all of the cycle's events; the new results replace the previous ones, they
    are never added to them, so applying a re-rate twice charges the same as applying it once.
    A previous result without its event is refused: crediting it silently would hide lost data.
    """
    previous = {r.record_id: r for r in previous_results}
    event_ids = {e.record_id for e in events}
    orphans = sorted(set(previous) - event_ids)
    if orphans:
        raise ValueError(f"previous results without events (re-rate needs the whole cycle): {', '.join(orphans[:10])}")
    run = rate_events(events, tariff, allowances, None, holidays=holidays, timezone=timezone, eu_data_cap_bytes=eu_data_cap_bytes)
    deltas = []
    for new in run.results:
        old = previous.get(new.record_id)
        deltas.append(RecordDelta(
            record_id=new.record_id,
            previous_amount=old.amount if old else Decimal(0),
            new_amount=new.amount,
            previous_allowance_units=old.allowance_units if old else 0,
            new_allowance_units=new.allowance_units,
            previous_tariff=(old.tariff_id, old.tariff_version) if old else None,
            new_tariff=(new.tariff_id, new.tariff_version),
        ))
    return RerateResult(run.results, deltas, run.used)


# --- the compiled tariff and its hot loop -------------------------------------------------


class _Money:
    """Exact amount arithmetic of one rate: numerators over `den` in micro-units, one rounding."""

    __slots__ = ("den", "div", "bias", "quantum", "cap")

    def __init__(self, den: int, tariff: Tariff, max_cost: Decimal | None) -> None:
        self.den = den
        self.quantum = 10 ** (6 - tariff.rounding.decimals)  # micro-units per rounding step
        self.div = den * self.quantum
        # floor((num + bias) / div) rounds half up, up or down for non-negative numerators.
        self.bias = {"half_up": self.div // 2, "up": self.div - 1, "down": 0}[tariff.rounding.method]
        self.cap = None if max_cost is None else to_micros(max_cost)

    def settle(self, numerator: int) -> int:
        amount = (numerator + self.bias) // self.div * self.quantum
        return amount if self.cap is None or amount <= self.cap else self.cap


class _VoiceBand:
    __slots__ = ("connect", "per_second", "costs")

    def __init__(self, connect: int, per_second: tuple[int, ...]) -> None:
        self.connect = connect  # connect fee numerator
        self.per_second = per_second  # numerator of one billed second, per interval
        # Memo: duration -> (billed seconds, amount if charged, amount if all from the allowance),
        # both amounts settled (rounded, capped) micro-units. Durations repeat, so this is what
        # makes the common call one dict lookup.
        self.costs: dict[int, tuple[int, int, int]] = {}


class _VoiceGroup:
    __slots__ = ("in_bundle", "starts", "increments", "money", "bands")

    def __init__(self, rate: VoiceGroupRate, tariff: Tariff) -> None:
        intervals = rate.default.intervals
        self.in_bundle = rate.in_bundle
        self.starts = tuple(i.start_s for i in intervals)
        self.increments = tuple(i.increment_s for i in intervals)
        den = math.lcm(*(i.unit_s for r in (rate.for_band(b) for b in BANDS) for i in r.intervals))
        self.money = _Money(den, tariff, rate.max_cost)
        self.bands = tuple(self._band(rate.for_band(b).connect_fee, rate.for_band(b).intervals, den) for b in BANDS)

    @staticmethod
    def _band(connect_fee: Decimal, intervals: list, den: int) -> _VoiceBand:
        return _VoiceBand(to_micros(connect_fee) * den, tuple(to_micros(i.price_per_unit) * den // i.unit_s for i in intervals))

    def cost(self, band: _VoiceBand, seconds: int) -> tuple[int, int, int]:
        """(billed seconds, amount charged, amount from allowance) of a call of `seconds` wholly in `band`."""
        billed = numerator = 0
        starts, increments = self.starts, self.increments
        for index, start in enumerate(starts):
            if seconds <= start:
                break
            end = starts[index + 1] if index + 1 < len(starts) else seconds
            covered = min(seconds, end) - start
            step = increments[index]
            secs = -(-covered // step) * step
            billed += secs
            numerator += secs * band.per_second[index]
        found = (billed, self.money.settle(band.connect + numerator), self.money.settle(band.connect))
        if len(band.costs) < 100_000:
            band.costs[seconds] = found
        return found


class _SmsPrice:
    __slots__ = ("in_bundle", "per_message", "money")

    def __init__(self, rate: SmsRate, tariff: Tariff) -> None:
        self.in_bundle = rate.in_bundle
        self.per_message = to_micros(rate.price)
        self.money = _Money(1, tariff, rate.max_cost)


class _DataPrice:
    __slots__ = ("in_bundle", "increment", "per_byte", "surcharge_per_byte", "money")

    def __init__(self, rate: DataRate, tariff: Tariff, surcharge_per_gb: Decimal | None) -> None:
        den = 1_000_000_000  # both MB and GB prices are whole numerators per byte over 1e9
        self.in_bundle = rate.in_bundle
        self.increment = rate.increment_bytes
        self.per_byte = to_micros(rate.price) * (den // rate.unit_bytes)
        # None outside fair-use zones; the surcharge is priced per GB.
        self.surcharge_per_byte = None if surcharge_per_gb is None else to_micros(surcharge_per_gb)
        self.money = _Money(den, tariff, rate.max_cost)


class _BandCalendar:
    """Band segments over a UTC range, looked up in O(1): a bucket table points at the segment in
    force at each bucket start, and at most a step or two forward finds the exact one."""

    BUCKET_S = 900

    def __init__(self, tariff: Tariff, tz: ZoneInfo, is_holiday: Callable[[date], bool]) -> None:
        self.time_bands = tariff.time_bands
        self.tz = tz
        self.is_holiday = is_holiday
        self.lo = self.hi = 0
        self.bounds: list[int] = [0, 0]  # segment starts, then the end of coverage
        self.bands: list[int] = []
        self.table: list[int] = []

    def cover(self, t_from: int, t_to: int) -> None:
        """Make sure [t_from, t_to] is covered (UTC seconds); built generously to rebuild rarely."""
        if self.bands and self.lo <= t_from and t_to < self.hi:
            return
        first = self._local_day(t_from - _DAY_S)
        last = self._local_day(t_to + 35 * _DAY_S)
        if self.bands:
            first = min(first, self._local_day(self.lo))
            last = max(last, self._local_day(self.hi - 1))
        bounds: list[int] = []
        bands: list[int] = []
        day = first
        while day <= last:
            for start, band in self.time_bands.day_segments(day, self.tz, self.is_holiday(day)):
                instant = _utc_seconds(start)
                if bands and bands[-1] == band:
                    continue
                if bounds and instant <= bounds[-1]:  # a wall time made invalid by DST: keep order
                    bounds[-1], bands[-1] = bounds[-1], band
                    continue
                bounds.append(instant)
                bands.append(band)
            day += timedelta(days=1)
        self.lo = bounds[0]
        self.hi = _utc_seconds(local_midnight(last + timedelta(days=1), self.tz))
        bounds.append(self.hi)
        self.bounds, self.bands = bounds, bands
        self.table = [bisect_right(bounds, t) - 1 for t in range(self.lo, self.hi, self.BUCKET_S)]

    def _local_day(self, t: int) -> date:
        return datetime.fromtimestamp(t, UTC).astimezone(self.tz).date()

    def segment(self, t: int) -> tuple[int, int]:
        """(band index, end of the segment) in force at UTC second `t`."""
        self.cover(t, t)
        bounds = self.bounds
        i = self.table[(t - self.lo) // self.BUCKET_S]
        while bounds[i + 1] <= t:
            i += 1
        return self.bands[i], bounds[i + 1]


class CompiledTariff:
    """A Tariff turned into lookup tables, for one holiday set and time zone.

    Compile once per tariff version and share across subscribers: allowances and consumption
    are passed per call, the only state kept is memos and the band calendar.
    """

    def __init__(self, tariff: Tariff, holidays: HolidaySet, timezone: str | None = None) -> None:
        self.tariff = tariff
        is_holiday = holidays.__contains__ if isinstance(holidays, frozenset) else holidays
        self.calendar = _BandCalendar(tariff, time_zone(timezone or tariff.time_bands.timezone), is_holiday)
        self._compile_destinations(tariff)
        self._compile_zones(tariff)

    # -- compilation --

    def _compile_destinations(self, tariff: Tariff) -> None:
        destinations = sorted(tariff.destinations, key=lambda d: d.prefix)
        self.dest_names = [d.name for d in destinations]
        self._dest_index = {d.prefix: i for i, d in enumerate(destinations)}
        self._prefix_lengths = sorted({len(d.prefix) for d in destinations}, reverse=True)
        self._key_length = self._prefix_lengths[0]
        # number[:longest prefix] decides the match, so it is the memo key; at most 10**len keys.
        self._dest_memo: dict[str, int] = {}
        self._destinations = destinations

    def _compile_zones(self, tariff: Tariff) -> None:
        roaming = tariff.roaming
        voice = {g: _VoiceGroup(r, tariff) for g, r in tariff.voice.items()}
        sms = {g: _SmsPrice(r, tariff) for g, r in tariff.sms.items()}
        home_data = _DataPrice(tariff.data, tariff, None)
        rlah_ids = {z.id for z in roaming.zones if z.roam_like_at_home}
        dests = self._destinations

        self.zone_ids: list[str] = [roaming.home_zone]
        self.zone_voice: list[list[_VoiceGroup]] = [[voice[d.group] for d in dests]]
        self.zone_sms: list[list[_SmsPrice]] = [[sms[d.group] for d in dests]]
        self.zone_data: list[_DataPrice] = [home_data]
        self._zone_index: dict[str | None, int] = {None: 0, "": 0, roaming.home_zone: 0}
        self._zone_index.update({c: 0 for c in roaming.home_countries})
        for z in roaming.zones:
            if z.roam_like_at_home:
                # Calls to EU/EEA numbers cost the domestic price (rlah group); others as from home.
                zone_voice = [voice[_rlah_group(d, z.rlah_voice_group, rlah_ids)] for d in dests]
                zone_sms = [sms[_rlah_group(d, z.rlah_sms_group, rlah_ids)] for d in dests]
                surcharge = z.fair_use.surcharge_per_gb if z.fair_use else None
                zone_data = _DataPrice(tariff.data, tariff, surcharge)
            else:
                assert z.voice is not None and z.sms is not None and z.data is not None
                own_voice, own_sms = _VoiceGroup(z.voice, tariff), _SmsPrice(z.sms, tariff)
                zone_voice = [own_voice] * len(dests)
                zone_sms = [own_sms] * len(dests)
                zone_data = _DataPrice(z.data, tariff, None)
            index = len(self.zone_ids)
            self.zone_ids.append(z.id)
            self.zone_voice.append(zone_voice)  # type: ignore[arg-type]
            self.zone_sms.append(zone_sms)  # type: ignore[arg-type]
            self.zone_data.append(zone_data)
            self._zone_index[z.id] = index
            self._zone_index.update({c: index for c in z.countries})
        self._rest_of_world = self._zone_index[roaming.rest_of_world] if roaming.rest_of_world else None
        # Per zone: number[:longest prefix] -> (price, destination name); one lookup per event.
        self._voice_memo: list[dict[str, tuple[_VoiceGroup, str]]] = [{} for _ in self.zone_ids]
        self._sms_memo: list[dict[str, tuple[_SmsPrice, str]]] = [{} for _ in self.zone_ids]

    # -- lookups used by the hot loop on a memo miss --

    def destination_index(self, number: str) -> int:
        """Index of the longest prefix matching `number`, or -1."""
        key = number[: self._key_length]
        found = self._dest_memo.get(key)
        if found is not None:
            return found
        found = -1
        for length in self._prefix_lengths:
            if length <= len(key):
                found = self._dest_index.get(key[:length], -1)
                if found >= 0:
                    break
        if len(self._dest_memo) < 200_000:
            self._dest_memo[key] = found
        return found

    def _priced(self, zi: int, number: str, memo: list[dict], zone_prices: list[list]) -> tuple | None:
        """(price of the destination from zone `zi`, destination name), memoised per zone; None if no prefix matches."""
        di = self.destination_index(number)
        if di < 0:
            return None
        priced = (zone_prices[zi][di], self.dest_names[di])
        if len(memo[zi]) < 200_000:
            memo[zi][number[: self._key_length]] = priced
        return priced

    def zone_index(self, where: str | None) -> int:
        """Index of the roaming zone for a country code or zone id, or -1 if unknown."""
        found = self._zone_index.get(where)
        if found is not None:
            return found
        if self._rest_of_world is not None and isinstance(where, str) and len(where) == 2 and where.isalpha() and where.isupper():
            self._zone_index[where] = self._rest_of_world
            return self._rest_of_world
        return -1

    # -- the hot loop --

    def rate_batch(self, rows: Iterable[EventRow], limits: AllowanceLimits, used: AllowanceState, eu_data_cap_bytes: int | None = None) -> list[RatedRow]:
        """Rate one subscriber's rows (any order; rated in (start, record_id) order) and update `used`.

        Returns RatedRows in that order. The common case of each kind is inlined (every
        attribute lookup and call costs here, at ~1 µs per event); the rare cases (a band
        boundary or the end of an allowance inside the event, fair use, errors) leave the
        fast path for `_voice_split`, `_data_split` and friends.
        """
        return self.rate_runs(((rows, limits, used, eu_data_cap_bytes),))[0]

    def rate_runs(self, runs: Iterable[tuple[Iterable[EventRow], AllowanceLimits, AllowanceState, int | None]]) -> list[list[RatedRow]]:
        """rate_batch for many subscribers (or billing periods) at once: each run is (rows, limits,
        used, eu_data_cap_bytes), rated on its own exactly as rate_batch would, and the result is
        one list of RatedRows per run. One call for thousands of runs of a few events each saves
        the per-call set-up that would otherwise cost more than rating the events (bulk import)."""
        runs = [(sorted(rows), limits, used, cap) for rows, limits, used, cap in runs]
        results: list[list[RatedRow]] = []
        zone_index, zone_data, zone_ids = self._zone_index, self.zone_data, self.zone_ids
        voice_memo, sms_memo, key_length = self._voice_memo, self._sms_memo, self._key_length
        calendar = self.calendar
        starts = [run[0][0][0] for run in runs if run[0]]
        if starts:  # one cover for all runs (the band calendar is only a cache of the bands over time)
            calendar.cover(min(starts) // _MICROS_PER_SECOND, max(run[0][-1][0] for run in runs if run[0]) // _MICROS_PER_SECOND)
        cal_lo, cal_hi, table, bounds, bands = calendar.lo, calendar.hi, calendar.table, calendar.bounds, calendar.bands
        bucket = _BandCalendar.BUCKET_S
        micros_per_second = _MICROS_PER_SECOND

        for rows, limits, used, eu_data_cap_bytes in runs:
            out: list[RatedRow] = []
            results.append(out)
            append = out.append
            voice_used, sms_used, data_used = used.voice_s, used.sms, used.data_bytes
            voice_limit, sms_limit, data_limit = limits.voice_s, limits.sms, limits.data_bytes
            for row in rows:
                start_us, record_id, kind, quantity, number, where, disposition = row
                if where is None:
                    zi = 0
                else:
                    zi = zone_index.get(where)
                    if zi is None:
                        zi = self.zone_index(where)
                    if zi < 0:
                        append(self._unrated(row, f"unknown roaming zone {where!r}"))
                        continue
                if kind == VOICE:
                    if disposition != ANSWERED:
                        append(self._unanswered(row))
                        continue
                    priced = voice_memo[zi].get(number[:key_length])
                    if priced is None:
                        priced = self._priced(zi, number, voice_memo, self.zone_voice)
                        if priced is None:
                            append(_error(row, f"no destination matches {number!r}"))
                            continue
                    group, dest_name = priced
                    # The band segment in force at the start: bucket table, then a step or two forward.
                    t = start_us // micros_per_second
                    if not cal_lo <= t < cal_hi:
                        calendar.cover(t, t)
                        cal_lo, cal_hi, table, bounds, bands = calendar.lo, calendar.hi, calendar.table, calendar.bounds, calendar.bands
                    i = table[(t - cal_lo) // bucket]
                    segment_end = bounds[i + 1]
                    while segment_end <= t:
                        i += 1
                        segment_end = bounds[i + 1]
                    band_index = bands[i]
                    band = group.bands[band_index]
                    cost = band.costs.get(quantity)
                    if cost is None:
                        cost = group.cost(band, quantity)
                    billed, amount, bundled_amount = cost
                    from_allowance = 0
                    if group.in_bundle and voice_used < voice_limit:
                        if billed > voice_limit - voice_used or t + billed > segment_end:
                            result = self._voice_split(row, group, t, voice_limit - voice_used, band_index, dest_name, zone_ids[zi])
                            voice_used += result[3]
                            append(result)
                            cal_lo, cal_hi, table, bounds, bands = calendar.lo, calendar.hi, calendar.table, calendar.bounds, calendar.bands
                            continue
                        from_allowance = billed
                        voice_used += billed
                        amount = bundled_amount
                    elif t + billed > segment_end:
                        append(self._voice_split(row, group, t, 0, band_index, dest_name, zone_ids[zi]))
                        cal_lo, cal_hi, table, bounds, bands = calendar.lo, calendar.hi, calendar.table, calendar.bounds, calendar.bands
                        continue
                    append((record_id, kind, billed, from_allowance, amount, band_index, dest_name, zone_ids[zi], (), None))
                elif kind == DATA:
                    price = zone_data[zi]
                    step = price.increment
                    billed = -(-quantity // step) * step
                    from_allowance = 0
                    in_allowance = price.in_bundle and data_used < data_limit
                    if price.surcharge_per_byte is not None or (in_allowance and billed > data_limit - data_used):
                        result = self._data_split(row, price, billed, data_limit - data_used if in_allowance else 0, used, eu_data_cap_bytes, zone_ids[zi])
                        data_used += result[3]
                        append(result)
                        continue
                    if in_allowance:
                        from_allowance = billed
                        data_used += billed
                        amount = 0
                    else:
                        money = price.money
                        amount = (billed * price.per_byte + money.bias) // money.div * money.quantum
                        if money.cap is not None and amount > money.cap:
                            amount = money.cap
                    append((record_id, kind, billed, from_allowance, amount, None, None, zone_ids[zi], (), None))
                elif kind == SMS:
                    priced = sms_memo[zi].get(number[:key_length])
                    if priced is None:
                        priced = self._priced(zi, number, sms_memo, self.zone_sms)
                        if priced is None:
                            append(_error(row, f"no destination matches {number!r}"))
                            continue
                    price, dest_name = priced
                    from_allowance = 0
                    if price.in_bundle and sms_used < sms_limit:
                        from_allowance = min(quantity, sms_limit - sms_used)
                        sms_used += from_allowance
                    charged = quantity - from_allowance
                    money = price.money
                    amount = (charged * price.per_message + money.bias) // money.div * money.quantum
                    if money.cap is not None and amount > money.cap:
                        amount = money.cap
                    # Split only when the messages straddle the end of the allowance.
                    parts = ((None, from_allowance, True, False, 0), (None, charged, False, False, amount)) if from_allowance and charged else ()
                    append((record_id, kind, quantity, from_allowance, amount, None, dest_name, zone_ids[zi], parts, None))
                else:
                    append(_error(row, f"unknown usage kind {kind!r}"))

            used.voice_s, used.sms, used.data_bytes = voice_used, sms_used, data_used
        return results

    # -- the slow paths --

    def _unrated(self, row: EventRow, reason: str) -> RatedRow:
        # An unanswered call is free whatever else is wrong with it.
        if row[2] == VOICE and row[6] != ANSWERED:
            return self._unanswered(row)
        return _error(row, reason)

    def _unanswered(self, row: EventRow) -> RatedRow:
        if row[6] not in NOT_CHARGED_DISPOSITIONS:
            return _error(row, f"unknown disposition {row[6]!r}")
        return (row[1], row[2], 0, 0, 0, None, None, None, (), None)

    def _voice_split(self, row: EventRow, group: _VoiceGroup, t0: int, left: int, start_band: int, dest_name: str, zone_id: str) -> RatedRow:
        """A call whose increments span band segments or the end of the allowance: walk the
        increments segment by segment (not second by second) and price each piece."""
        seconds = row[3]
        calendar = self.calendar
        pieces: list[list] = []
        starts, increments = group.starts, group.increments
        for index, start in enumerate(starts):
            if seconds <= start:
                break
            end = starts[index + 1] if index + 1 < len(starts) else seconds
            step = increments[index]
            count = -(-(min(seconds, end) - start) // step)
            k = 0
            while k < count:
                band_index, segment_end = calendar.segment(t0 + start + k * step)
                # Increments starting before the segment ends are priced in this band.
                k_end = min(count, -(-(segment_end - t0 - start) // step))
                secs = (k_end - k) * step
                free = min(left, secs)
                if free:
                    left -= free
                    _add_piece(pieces, band_index, free, True, False, 0)
                if secs > free:
                    _add_piece(pieces, band_index, secs - free, False, False, (secs - free) * group.bands[band_index].per_second[index])
                k = k_end
        connect = group.bands[start_band].connect
        billed = sum(p[1] for p in pieces)
        from_allowance = sum(p[1] for p in pieces if p[2])
        amount, parts = _settle_parts(pieces, connect, group.money)
        return (row[1], row[2], billed, from_allowance, amount, start_band, dest_name, zone_id, parts, None)

    def _data_split(self, row: EventRow, price: _DataPrice, billed: int, left: int, used: AllowanceState, eu_cap: int | None, zone_id: str) -> RatedRow:
        """Data straddling the end of the allowance and/or the EU fair-use limit."""
        pieces: list[list] = []
        # Offsets within the billed bytes where the allowance ends and the fair-use surcharge starts.
        allowance_end = min(left, billed)
        surcharge_from = billed
        if price.surcharge_per_byte is not None:
            if eu_cap is not None:
                surcharge_from = max(0, min(billed, eu_cap - used.eu_roaming_data_bytes))
            used.eu_roaming_data_bytes += billed
        cuts = sorted({0, allowance_end, surcharge_from, billed})
        for lo, hi in zip(cuts, cuts[1:]):
            free = hi <= allowance_end
            surcharged = lo >= surcharge_from
            numerator = 0 if free else (hi - lo) * price.per_byte
            if surcharged:
                numerator += (hi - lo) * price.surcharge_per_byte  # type: ignore[operator]
            _add_piece(pieces, None, hi - lo, free, surcharged, numerator)
        amount, parts = _settle_parts(pieces, 0, price.money)
        return (row[1], row[2], billed, allowance_end, amount, None, None, zone_id, parts, None)

    # -- converting results --

    def to_rated_event(self, row: RatedRow) -> RatedEvent:
        record_id, kind, billed, from_allowance, micros, band, dest_name, zone_id, parts, error = row
        decimals = self.tariff.rounding.decimals
        return RatedEvent(
            record_id=record_id,
            kind=kind,
            billed_units=billed,
            allowance_units=from_allowance,
            charged_units=billed - from_allowance,
            amount=_micros_to_decimal(micros, decimals),
            amount_micros=micros,
            band=None if band is None else BANDS[band],
            destination=dest_name,
            zone=zone_id,
            tariff_id=self.tariff.id,
            tariff_version=self.tariff.version,
            parts=tuple(RatedPart(None if b is None else BANDS[b], u, a, f, _micros_to_decimal(m, decimals)) for b, u, a, f, m in parts),
            error=error,
        )


def _rlah_group(destination: Destination, rlah_group: str | None, rlah_zone_ids: set[str]) -> str:
    """The group pricing a call from a roam-like-at-home zone to `destination`."""
    if rlah_group is not None and destination.zone in rlah_zone_ids:
        return rlah_group
    return destination.group


def _add_piece(pieces: list[list], band: int | None, units: int, from_allowance: bool, fair_use: bool, numerator: int) -> None:
    if pieces and pieces[-1][0] == band and pieces[-1][2] == from_allowance and pieces[-1][3] == fair_use:
        pieces[-1][1] += units
        pieces[-1][4] += numerator
    else:
        pieces.append([band, units, from_allowance, fair_use, numerator])


def _settle_parts(pieces: list[list], connect: int, money: _Money) -> tuple[int, tuple]:
    """Round the event once and give each piece the growth of the rounded running total, so the
    parts add up to the event's amount exactly, cap included. One piece means no split."""
    running = connect
    settled = 0
    parts = []
    for band, units, from_allowance, fair_use, numerator in pieces:
        running += numerator
        total = money.settle(running)
        parts.append((band, units, from_allowance, fair_use, total - settled))
        settled = total
    if not pieces:
        settled = money.settle(connect)
    return settled, (tuple(parts) if len(parts) > 1 else ())


def _error(row: EventRow, reason: str) -> RatedRow:
    return (row[1], row[2], 0, 0, 0, None, None, None, (), reason)


def _utc_seconds(instant: datetime) -> int:
    """Whole seconds since the Unix epoch, floored, without going through a float."""
    return (instant - _EPOCH) // timedelta(seconds=1)


def _micros_to_decimal(micros: int, decimals: int = 6) -> Decimal:
    return Decimal(micros).scaleb(-6).quantize(Decimal(1).scaleb(-decimals))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
