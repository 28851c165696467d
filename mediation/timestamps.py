"""Switch timestamps ("YYYY-MM-DD HH:MM:SS", no offset, in the switch's zone) -> aware UTC datetimes.

Asterisk and FreeSWITCH write wall-clock times in the zone the switch runs in (Asterisk writes UTC
with `usegmtime=yes` in cdr.conf). The zone is configuration, not data, so the caller names it.

Wall-clock times that a DST change makes odd:
- in the hour clocks go back (ambiguous, e.g. 02:30 on the last Sunday of October in Berlin) the
  time is read as its first occurrence (PEP 495 fold=0, still summer time). Billing periods change
  at midnight and time bands on whole hours away from 02:00-03:00, so the wrong guess can move a
  record by one hour but never into another period or band.
- a time the clocks skipped (e.g. 02:30 on the last Sunday of March in Berlin) cannot come from a
  correctly configured switch; it is rejected, which points at a wrong zone setting.

Speed: converting through zoneinfo costs about 1 µs a record; instead the UTC offset is worked out
once per wall-clock hour and cached, and only hours that contain a transition are converted
record by record.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
_UTC_NAMES = frozenset({"UTC", "Etc/UTC"})
_HOUR_END = timedelta(minutes=59, seconds=59)
_MAX_CACHED_HOURS = 100_000  # a year of hours is ~8,800; the bound only keeps a runaway input in check
_MIXED = timedelta.max  # cache marker: this hour contains a DST transition
_SEPARATORS = "-- ::"


def has_wall_clock_shape(text: str) -> bool:
    """"YYYY-MM-DD HH:MM:SS" exactly. datetime.fromisoformat alone would also take ISO week dates,
    fractions and offsets, which no switch writes here and which would hide a wrong column."""
    # Characters 4, 7, 10, 13 and 16 are the separators; one slice compares them all at C speed.
    return len(text) == 19 and text[4::3] == _SEPARATORS


def unknown_zone_error(tz_name: str) -> ValueError:
    return ValueError(f"unknown time zone {tz_name!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'")


class SwitchClock:
    """Converts one switch's wall-clock timestamps to UTC. Raises ValueError with a readable reason."""

    __slots__ = ("zone_name", "_zone", "_utc", "_offsets")

    def __init__(self, zone_name: str = "UTC") -> None:
        try:
            self._zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise unknown_zone_error(zone_name) from exc
        self.zone_name = zone_name
        self._utc = zone_name in _UTC_NAMES
        self._offsets: dict[str, timedelta] = {}

    def check(self, text: str) -> None:
        """Validate a timestamp o2c does not otherwise use (answer, end) without converting it."""
        if len(text) != 19 or text[4::3] != _SEPARATORS:  # has_wall_clock_shape, inlined: runs twice a record
            raise ValueError(f"{text!r} is not a YYYY-MM-DD HH:MM:SS timestamp")
        try:
            datetime.fromisoformat(text)
        except ValueError as exc:  # a date or time out of range, a letter for a digit
            raise ValueError(f"{text!r} is not a valid date and time ({exc})") from None

    def to_utc(self, text: str) -> datetime:
        if len(text) != 19 or text[4::3] != _SEPARATORS:  # has_wall_clock_shape, inlined
            raise ValueError(f"{text!r} is not a YYYY-MM-DD HH:MM:SS timestamp")
        # Read as UTC first: fromisoformat with an offset is ~5x faster than .replace(tzinfo=...).
        try:
            as_utc = datetime.fromisoformat(text + "+00:00")
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date and time ({exc})") from None
        if self._utc:
            return as_utc
        hour = text[:13]
        offset = self._offsets.get(hour)
        if offset is None:
            offset = self._hour_offset(as_utc)
            if len(self._offsets) >= _MAX_CACHED_HOURS:
                self._offsets.clear()
            self._offsets[hour] = offset
        if offset is _MIXED:
            return self._convert_one(text, as_utc)
        return as_utc - offset

    def _hour_offset(self, as_utc: datetime) -> timedelta:
        """The zone's UTC offset if it is the same for every second of this wall-clock hour, either
        fold, else _MIXED."""
        first = as_utc.replace(minute=0, second=0, tzinfo=None)
        offsets = {moment.replace(tzinfo=self._zone, fold=fold).utcoffset() for moment in (first, first + _HOUR_END) for fold in (0, 1)}
        if len(offsets) == 1:
            offset = offsets.pop()
            assert offset is not None
            return offset
        return _MIXED

    def _convert_one(self, text: str, as_utc: datetime) -> datetime:
        wall = as_utc.replace(tzinfo=None)
        earlier = wall.replace(tzinfo=self._zone, fold=0).utcoffset()
        later = wall.replace(tzinfo=self._zone, fold=1).utcoffset()
        assert earlier is not None and later is not None
        if earlier < later:
            # In a gap fold=0 gives the offset before the change; a smaller offset means clocks jumped forward.
            raise ValueError(f"{text!r} does not exist in {self.zone_name} (the clocks skipped it); is the switch's time zone right?")
        return as_utc - earlier  # ambiguous (earlier > later): the first occurrence; or unambiguous
