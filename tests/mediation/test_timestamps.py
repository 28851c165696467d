from datetime import datetime, timezone

import pytest

from mediation.timestamps import SwitchClock, has_wall_clock_shape

UTC = timezone.utc


@pytest.mark.parametrize(("zone", "wall", "utc"), [
    ("UTC", "2024-03-01 10:00:00", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),
    ("Europe/Berlin", "2024-01-15 00:30:00", datetime(2024, 1, 14, 23, 30, tzinfo=UTC)),  # CET: the previous UTC day
    ("Europe/Berlin", "2024-03-31 01:59:59", datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC)),  # last second of CET
    ("Europe/Berlin", "2024-03-31 03:00:00", datetime(2024, 3, 31, 1, 0, 0, tzinfo=UTC)),  # first second of CEST
    ("Europe/Berlin", "2024-10-27 02:30:00", datetime(2024, 10, 27, 0, 30, tzinfo=UTC)),  # ambiguous: first (CEST)
    ("Europe/Berlin", "2024-10-27 03:00:00", datetime(2024, 10, 27, 2, 0, tzinfo=UTC)),
    ("Australia/Lord_Howe", "2024-10-06 02:30:00", datetime(2024, 10, 5, 15, 30, tzinfo=UTC)),  # 30-minute DST shift
])
def test_wall_clock_to_utc(zone, wall, utc):
    converted = SwitchClock(zone).to_utc(wall)
    assert converted == utc and converted.tzinfo is UTC


@pytest.mark.parametrize(("zone", "wall"), [("Europe/Berlin", "2024-03-31 02:30:00"), ("Australia/Lord_Howe", "2024-10-06 02:15:00")])
def test_a_time_the_clocks_skipped_is_refused(zone, wall):
    with pytest.raises(ValueError, match="does not exist"):
        SwitchClock(zone).to_utc(wall)


def test_the_per_hour_cache_gives_the_same_answer_as_zoneinfo_for_every_minute_around_a_change():
    clock = SwitchClock("Europe/Berlin")
    for minute in range(0, 24 * 60, 7):
        wall = datetime(2024, 10, 27).replace(hour=minute // 60, minute=minute % 60)
        expected = wall.replace(tzinfo=clock._zone).astimezone(UTC)  # fold=0, like the clock
        assert clock.to_utc(wall.strftime("%Y-%m-%d %H:%M:%S")) == expected


@pytest.mark.parametrize("text", ["2024-03-01T10:00:00", "2024-03-01 10:00", "2024-03-01 10:00:00+01:00", "2024-W09-5 10:00:00",
                                  "01/03/2024 10:00:00", "2024-03-01 10:00:00.5", ""])
def test_only_the_switch_shape_is_accepted(text):
    assert not has_wall_clock_shape(text)
    with pytest.raises(ValueError):
        SwitchClock("UTC").to_utc(text)


def test_an_unknown_zone_is_refused():
    with pytest.raises(ValueError, match="unknown time zone"):
        SwitchClock("CEST")
