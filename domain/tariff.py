"""Tariffs as data: destinations, rates, time bands and roaming zones, validated on load.

The shape follows CGRateS' rating model, with exact money instead of its float64:

* Destinations are matched by the longest E.164 prefix of the called number. Each names a
  rate group (several prefixes share one group: 4915, 4916, 4917 are all "de_mobile") and,
  optionally, the roaming zone its country belongs to (used for roam-like-at-home).
* A voice rate is a connect fee plus rate intervals ("group interval start"): from offset
  `start_s` of the call on, `price_per_unit` per `unit_s` seconds, billed in `increment_s`
  steps. 60/60 is one interval {0, p, 60, 60}; 60/1 ("first minute, then per second") is
  {0, p, 60, 60} followed by {60, p, 60, 1}; 1/1 is {0, p, 60, 1}.
* Time bands (peak, offpeak, weekend, holiday) are local wall-clock rules; which band an
  instant falls in depends on the subscriber's time zone and on the public-holiday set,
  both supplied at rating time. A group may price each band differently; missing bands
  fall back (holiday -> weekend -> default, every other band -> default).
* SMS is priced per message per destination group; data per MB or GB, billed in kB steps.
* Roaming zones: home, roam-like-at-home zones (EU/EEA: rated exactly as at home, with the
  EU fair-use data limit), and rest-of-world zones with their own flat rates.
* Rounding (decimals 0..6 and a method) applies once per event, then the rate's
  `max_cost` caps the event.

Prices carry at most 6 decimals so the engine can work in integer micro-units.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from domain.billing_cycle import zone as time_zone
from domain.money import MICRO, Money

Band = Literal["peak", "offpeak", "weekend", "holiday"]
# The engine indexes bands by position in this tuple.
BANDS: tuple[Band, ...] = ("peak", "offpeak", "weekend", "holiday")
PEAK, OFFPEAK, WEEKEND, HOLIDAY = range(4)

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAY_INDEX: dict[str, int] = {name: index for index, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}

BYTES_PER_KB = 1_000  # decimal units, as tariff sheets and the EU roaming rules quote them
BYTES_PER_UNIT: dict[str, int] = {"MB": 1_000_000, "GB": 1_000_000_000}

_E164_PREFIX = re.compile(r"^[1-9][0-9]{0,14}$")


def _at_most_micro(value: Decimal) -> Decimal:
    # The engine computes in integer micro-units; a 7th decimal would be silently rounded.
    if value != value.quantize(MICRO):
        raise ValueError(f"{value} has more than 6 decimals")
    return value


# A non-negative price with at most 6 decimals; floats refused (domain.money.Money).
Price = Annotated[Money, Field(ge=0), AfterValidator(_at_most_micro)]


def _text_only(value: Any) -> Any:
    # YAML 1.1 reads NO (Norway) as false and 08:00 as the integer 480; demand quoted strings.
    if not isinstance(value, (str, time)):
        raise ValueError(f"write this value as a quoted string, got {type(value).__name__} {value!r}")
    return value


CountryCode = Annotated[str, BeforeValidator(_text_only), Field(pattern=r"^[A-Z]{2}$")]
WallTime = Annotated[time, BeforeValidator(_text_only)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Rounding(_Frozen):
    """How an event's exact amount is rounded: to `decimals` places with `method`."""

    decimals: int = Field(default=4, ge=0, le=6)
    method: Literal["half_up", "up", "down"] = "half_up"

    @property
    def quantum(self) -> Decimal:
        return Decimal(1).scaleb(-self.decimals)


class RateInterval(_Frozen):
    """From call offset `start_s` on: `price_per_unit` per `unit_s` seconds, billed per `increment_s`."""

    start_s: int = Field(ge=0)
    price_per_unit: Price
    unit_s: int = Field(gt=0)
    increment_s: int = Field(gt=0)


class VoiceRate(_Frozen):
    """One band's price of a call: a connect fee per answered call plus rate intervals."""

    connect_fee: Price = Decimal(0)
    intervals: list[RateInterval] = Field(min_length=1)

    @field_validator("intervals")
    @classmethod
    def _contiguous_whole_increments(cls, intervals: list[RateInterval]) -> list[RateInterval]:
        if intervals[0].start_s != 0:
            raise ValueError("the first rate interval must start at 0 s")
        for current, following in zip(intervals, intervals[1:]):
            length = following.start_s - current.start_s
            if length <= 0:
                raise ValueError("rate intervals must start at strictly increasing offsets")
            # An increment that ran past the next interval's start would make "which interval
            # prices this second" ambiguous; CGRateS has the same constraint in practice.
            if length % current.increment_s:
                raise ValueError(
                    f"interval at {current.start_s} s is {length} s long, not a whole number of {current.increment_s} s increments"
                )
        return intervals

    def layout(self) -> tuple[tuple[int, int], ...]:
        """(start_s, increment_s) per interval: how a call is cut into billed increments."""
        return tuple((i.start_s, i.increment_s) for i in self.intervals)


class VoiceGroupRate(_Frozen):
    """Voice pricing of one destination group (or one roaming zone), per time band.

    All bands share one interval layout so that a call crossing a band boundary is cut into
    the same increments whichever band each increment is priced in.
    """

    in_bundle: bool = False  # answered seconds draw on the plan's minutes before they are charged
    max_cost: Price | None = None  # cap per event, connect fee included
    default: VoiceRate
    peak: VoiceRate | None = None
    offpeak: VoiceRate | None = None
    weekend: VoiceRate | None = None
    holiday: VoiceRate | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> VoiceGroupRate:
        layouts = {rate.layout() for rate in self._all_rates()}
        if len(layouts) > 1:
            raise ValueError("all bands of a voice rate must use the same intervals (start_s and increment_s)")
        return self

    def _all_rates(self) -> list[VoiceRate]:
        return [r for r in (self.default, self.peak, self.offpeak, self.weekend, self.holiday) if r is not None]

    def for_band(self, band: Band) -> VoiceRate:
        """The band's own rate, else holiday -> weekend -> default, any other band -> default."""
        own = getattr(self, band)
        if own is not None:
            return own
        if band == "holiday" and self.weekend is not None:
            return self.weekend
        return self.default


class SmsRate(_Frozen):
    price: Price  # per message
    in_bundle: bool = False
    max_cost: Price | None = None


class DataRate(_Frozen):
    """`price` per MB or GB (decimal: 1 MB = 1,000,000 bytes), billed per started `increment_kb`."""

    price: Price
    unit: Literal["MB", "GB"] = "MB"
    increment_kb: int = Field(default=10, gt=0)
    in_bundle: bool = False
    max_cost: Price | None = None

    @property
    def unit_bytes(self) -> int:
        return BYTES_PER_UNIT[self.unit]

    @property
    def increment_bytes(self) -> int:
        return self.increment_kb * BYTES_PER_KB


class Destination(_Frozen):
    prefix: str  # E.164 digits without "+", e.g. "4915"
    name: str = Field(min_length=1)  # shown on the rated record and the itemised bill
    group: str = Field(min_length=1)  # key into Tariff.voice and Tariff.sms
    zone: str | None = None  # roaming zone of the destination's country ("home", "eu", ...)

    @field_validator("prefix")
    @classmethod
    def _e164_digits(cls, prefix: str) -> str:
        if not _E164_PREFIX.match(prefix):
            raise ValueError(f"prefix {prefix!r} is not E.164 digits (1-15 digits, no leading 0 or '+')")
        return prefix


class PeakWindow(_Frozen):
    days: list[Weekday] = Field(min_length=1)
    start: WallTime
    end: WallTime  # exclusive

    @model_validator(mode="after")
    def _ordered(self) -> PeakWindow:
        if self.end <= self.start:
            raise ValueError("a peak window must end after it starts (windows do not cross midnight)")
        return self


class TimeBands(_Frozen):
    """Band rules in local wall-clock time. Priority: holiday, then weekend, then peak, else offpeak."""

    timezone: str = "Europe/Berlin"  # default when the subscriber's own zone is not given
    peak: list[PeakWindow] = Field(default_factory=list)
    weekend_days: list[Weekday] = Field(default_factory=lambda: ["sat", "sun"])
    holidays_as_band: bool = True  # public holidays are their own band (priced like weekends unless set)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        time_zone(value)
        return value

    def day_segments(self, day: date, tz: ZoneInfo, is_holiday: bool) -> list[tuple[datetime, int]]:
        """The bands of local `day` as (aware local start, band index), in order, first at midnight.

        Boundaries are local wall times, so after a DST change the same 08:00 is a different
        UTC instant; the caller converts to UTC.
        """
        midnight = datetime.combine(day, time(0), tzinfo=tz)
        if is_holiday and self.holidays_as_band:
            return [(midnight, HOLIDAY)]
        weekday = day.weekday()
        if weekday in {_WEEKDAY_INDEX[d] for d in self.weekend_days}:
            return [(midnight, WEEKEND)]
        windows = sorted((w.start, w.end) for w in self.peak if weekday in {_WEEKDAY_INDEX[d] for d in w.days})
        segments: list[tuple[datetime, int]] = [(midnight, OFFPEAK)]
        for start, end in _merge_windows(windows):
            begin = datetime.combine(day, start, tzinfo=tz)
            if begin == midnight:
                segments.pop()
            segments.append((begin, PEAK))
            segments.append((datetime.combine(day, end, tzinfo=tz), OFFPEAK))
        return segments


def _merge_windows(windows: list[tuple[time, time]]) -> list[tuple[time, time]]:
    """Sorted, overlapping or touching peak windows merged into disjoint ones."""
    merged: list[tuple[time, time]] = []
    for start, end in windows:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class FairUse(_Frozen):
    """EU fair use for open data bundles (Regulation (EU) 2022/612, Implementing Reg. 2016/2286 Art. 4).

    Roaming data up to twice (bundle price net of VAT / wholesale cap per GB) is at the
    domestic price; beyond it a surcharge of at most the wholesale cap applies. Verify the
    cap for the year: EUR 1.30/GB in 2025, 1.10 in 2026, 1.00 from 2027.
    """

    wholesale_cap_per_gb: Price
    surcharge_per_gb: Price

    @model_validator(mode="after")
    def _surcharge_within_cap(self) -> FairUse:
        if self.surcharge_per_gb > self.wholesale_cap_per_gb:
            raise ValueError("the fair-use surcharge must not exceed the regulated wholesale cap")
        return self

    def data_cap_bytes(self, bundle_price_net: Decimal) -> int:
        """Fair-use roaming data volume for a bundle costing `bundle_price_net` per cycle.

        Rounded up to the byte: the regulation sets a minimum the customer is owed."""
        if bundle_price_net < 0:
            raise ValueError("bundle price must not be negative")
        exact = 2 * bundle_price_net * BYTES_PER_UNIT["GB"] / self.wholesale_cap_per_gb
        return math.ceil(exact)


class RoamingZone(_Frozen):
    """A set of countries rated alike while roaming.

    Roam-like-at-home zones are rated as at home (home prices, home allowances); calls and
    SMS from them to numbers of the home or any RLAH zone are priced as the group named in
    `rlah_voice_group` / `rlah_sms_group` (the domestic mobile rate), because the regulation
    requires the domestic price for them. Other zones price everything with their own flat
    `voice`, `sms` and `data` rates.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    name: str = ""
    countries: list[CountryCode] = Field(default_factory=list)
    roam_like_at_home: bool = False
    rlah_voice_group: str | None = None
    rlah_sms_group: str | None = None
    fair_use: FairUse | None = None
    voice: VoiceGroupRate | None = None
    sms: SmsRate | None = None
    data: DataRate | None = None

    @model_validator(mode="after")
    def _rates_match_kind(self) -> RoamingZone:
        own_rates = (self.voice, self.sms, self.data)
        if self.roam_like_at_home:
            if any(r is not None for r in own_rates):
                raise ValueError(f"roam-like-at-home zone {self.id!r} uses the home rates; it must not define its own")
        else:
            if any(r is None for r in own_rates):
                raise ValueError(f"zone {self.id!r} is not roam-like-at-home, so it needs voice, sms and data rates")
            if self.rlah_voice_group or self.rlah_sms_group or self.fair_use:
                raise ValueError(f"rlah_* groups and fair_use only apply to roam-like-at-home zones ({self.id!r})")
        return self


class Roaming(_Frozen):
    home_zone: str = "home"  # zone id of the home network; events with no zone are at home
    home_countries: list[CountryCode] = Field(default_factory=lambda: ["DE"])
    zones: list[RoamingZone] = Field(default_factory=list)
    rest_of_world: str | None = None  # zone for countries no zone lists; None rejects them

    @model_validator(mode="after")
    def _consistent(self) -> Roaming:
        ids = [z.id for z in self.zones]
        if len(set(ids)) != len(ids) or self.home_zone in ids:
            raise ValueError("roaming zone ids must be unique and differ from the home zone id")
        seen: dict[str, str] = {c: self.home_zone for c in self.home_countries}
        for z in self.zones:
            for country in z.countries:
                if country in seen:
                    raise ValueError(f"country {country} is in both {seen[country]!r} and {z.id!r}")
                seen[country] = z.id
        if self.rest_of_world is not None and self.rest_of_world not in ids:
            raise ValueError(f"rest_of_world zone {self.rest_of_world!r} is not defined")
        return self

    def zone_ids(self) -> set[str]:
        return {self.home_zone, *(z.id for z in self.zones)}


class Tariff(_Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    version: str = Field(pattern=r"^[0-9]{1,9}$")  # a correction is a new version; records keep the one that priced them
    name: str = ""
    currency: Literal["EUR"] = "EUR"
    rounding: Rounding = Field(default_factory=Rounding)
    time_bands: TimeBands = Field(default_factory=TimeBands)
    destinations: list[Destination] = Field(min_length=1)
    voice: dict[str, VoiceGroupRate] = Field(min_length=1)
    sms: dict[str, SmsRate] = Field(min_length=1)
    data: DataRate
    roaming: Roaming = Field(default_factory=Roaming)

    @model_validator(mode="after")
    def _references_resolve(self) -> Tariff:
        prefixes = [d.prefix for d in self.destinations]
        duplicates = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if duplicates:
            raise ValueError(f"tariff {self.id} v{self.version}: duplicate destination prefixes: {', '.join(duplicates)}")
        for d in self.destinations:
            if d.group not in self.voice or d.group not in self.sms:
                raise ValueError(f"destination {d.prefix} names group {d.group!r}, which needs both a voice and an sms rate")
            if d.zone is not None and d.zone not in self.roaming.zone_ids():
                raise ValueError(f"destination {d.prefix} names unknown zone {d.zone!r}")
        for z in self.roaming.zones:
            if z.rlah_voice_group is not None and z.rlah_voice_group not in self.voice:
                raise ValueError(f"zone {z.id!r}: rlah_voice_group {z.rlah_voice_group!r} has no voice rate")
            if z.rlah_sms_group is not None and z.rlah_sms_group not in self.sms:
                raise ValueError(f"zone {z.id!r}: rlah_sms_group {z.rlah_sms_group!r} has no sms rate")
        for where, cap in self._caps():
            if cap is not None and cap != cap.quantize(self.rounding.quantum):
                raise ValueError(f"{where}: max_cost {cap} has more decimals than the tariff rounds to")
        return self

    def _caps(self) -> list[tuple[str, Decimal | None]]:
        caps: list[tuple[str, Decimal | None]] = [(f"voice.{g}", r.max_cost) for g, r in self.voice.items()]
        caps += [(f"sms.{g}", r.max_cost) for g, r in self.sms.items()]
        caps.append(("data", self.data.max_cost))
        for z in self.roaming.zones:
            caps += [(f"roaming.{z.id}.{kind}", getattr(z, kind).max_cost) for kind in ("voice", "sms", "data") if getattr(z, kind) is not None]
        return caps

    @property
    def key(self) -> tuple[str, str]:
        return (self.id, self.version)


class TariffBook(_Frozen):
    """All tariffs, every version kept: records name the version that priced them."""

    schema_version: Literal[1] = 1
    tariffs: list[Tariff] = Field(min_length=1)

    @field_validator("tariffs")
    @classmethod
    def _unique_versions(cls, tariffs: list[Tariff]) -> list[Tariff]:
        keys = [t.key for t in tariffs]
        duplicates = sorted({f"{i} v{v}" for i, v in keys if keys.count((i, v)) > 1})
        if duplicates:
            raise ValueError(f"duplicate tariff versions: {', '.join(duplicates)}")
        return tariffs

    def get(self, tariff_id: str, version: str) -> Tariff:
        for tariff in self.tariffs:
            if tariff.key == (tariff_id, version):
                return tariff
        raise KeyError(f"no tariff {tariff_id} version {version}")

    def versions(self, tariff_id: str) -> list[str]:
        return sorted((t.version for t in self.tariffs if t.id == tariff_id), key=int)

    def latest(self, tariff_id: str) -> Tariff:
        versions = self.versions(tariff_id)
        if not versions:
            raise KeyError(f"no tariff {tariff_id}")
        return self.get(tariff_id, versions[-1])


def parse_tariff_book(data: object) -> TariffBook:
    """Validate raw tariff data (as read from YAML); raises pydantic.ValidationError with field paths."""
    return TariffBook.model_validate(data)
