"""The shipped tariff file, tariff validation, and the German holiday set."""
import copy
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from config.tariff_loader import (
    DEFAULT_TARIFFS_PATH,
    german_public_holidays,
    german_public_holidays_between,
    load_tariff_book,
)
from domain.rating import Allowances
from domain.rating_engine import RatingEvent, rate_events
from domain.tariff import HOLIDAY, OFFPEAK, PEAK, WEEKEND, TariffBook, TimeBands, parse_tariff_book

BERLIN = ZoneInfo("Europe/Berlin")
RAW = yaml.safe_load(DEFAULT_TARIFFS_PATH.read_text(encoding="utf-8"))


def raw_tariff() -> dict:
    return copy.deepcopy(RAW["tariffs"][0])


def book_with(tariff: dict) -> TariffBook:
    return parse_tariff_book({"schema_version": 1, "tariffs": [tariff]})


# --- the shipped file ------------------------------------------------------------------------


def test_shipped_tariffs_load():
    book = load_tariff_book()
    tariff = book.get("de-mobile-2026", "1")
    assert book.latest("de-mobile-2026") is tariff
    assert tariff.currency == "EUR" and tariff.time_bands.timezone == "Europe/Berlin"
    prefixes = {d.prefix: d.group for d in tariff.destinations}
    assert {prefixes[p] for p in ("4915", "4916", "4917")} == {"de_mobile"}
    assert (prefixes["49"], prefixes["49900"], prefixes["44"]) == ("de_fixed", "de_premium", "intl_uk")
    assert tariff.voice["de_premium"].max_cost == Decimal("30.00")
    eu = next(z for z in tariff.roaming.zones if z.id == "eu")
    assert eu.roam_like_at_home and "NO" in eu.countries and "GB" not in eu.countries  # Norway is EEA; the UK is not


def test_shipped_tariff_prices_national_60_1_and_international_60_60():
    tariff = load_tariff_book().get("de-mobile-2026", "1")
    holidays = german_public_holidays([2026])
    start = datetime(2026, 3, 3, 10, 0, tzinfo=BERLIN)  # Tuesday, peak
    events = [
        RatingEvent.voice("national", start, 61, "4917012345678"),  # 0.09 + 1 s × 0.0015 = 0.0915
        RatingEvent.voice("uk", start, 61, "447700900123"),          # 2 min × 0.49 = 0.98
        RatingEvent.voice("premium", start, 3600, "49900123456"),    # 0.25 + 60 × 1.99 = 119.65 -> cap 30
        RatingEvent.voice("easter", datetime(2026, 4, 6, 10, 0, tzinfo=BERLIN), 60, "4930123456"),  # holiday = weekend 0.02
        RatingEvent.data("data", start, 15_001),                    # 20 kB × 0.01/MB = 0.0002
    ]
    amounts = {r.record_id: r.amount for r in rate_events(events, tariff, Allowances(), holidays=holidays).results}
    assert amounts == {"national": Decimal("0.0915"), "uk": Decimal("0.98"), "premium": Decimal("30"),
                       "easter": Decimal("0.02"), "data": Decimal("0.0002")}


def test_every_e164_number_has_a_destination_in_the_shipped_tariff():
    tariff = load_tariff_book().get("de-mobile-2026", "1")
    firsts = {d.prefix for d in tariff.destinations if len(d.prefix) == 1}
    assert firsts == {str(n) for n in range(1, 10)}


# --- validation ------------------------------------------------------------------------------


def test_duplicate_prefix_is_refused():
    data = raw_tariff()
    data["destinations"].append({"prefix": "4915", "name": "Again", "group": "de_mobile"})
    with pytest.raises(ValidationError, match="duplicate destination prefixes: 4915"):
        book_with(data)


@pytest.mark.parametrize("prefix", ["+49", "049", "4a9", "", "1234567890123456"])
def test_prefix_must_be_e164_digits(prefix):
    data = raw_tariff()
    data["destinations"].append({"prefix": prefix, "name": "Bad", "group": "de_mobile"})
    with pytest.raises(ValidationError, match="E.164"):
        book_with(data)


def test_unquoted_yaml_prefix_is_refused():
    data = raw_tariff()
    data["destinations"][0]["prefix"] = 4915
    with pytest.raises(ValidationError, match="prefix"):
        book_with(data)


def test_float_prices_are_refused():
    data = raw_tariff()
    data["sms"]["de_mobile"]["price"] = 0.09
    with pytest.raises(ValidationError, match="exact decimal expected"):
        book_with(data)


def test_prices_with_more_than_six_decimals_are_refused():
    data = raw_tariff()
    data["data"]["price"] = "0.0000001"
    with pytest.raises(ValidationError, match="more than 6 decimals"):
        book_with(data)


def test_yaml_norway_problem_is_caught():
    original = DEFAULT_TARIFFS_PATH.read_text(encoding="utf-8")
    text = original.replace('"NO"]', "NO]")
    assert text != original
    data = yaml.safe_load(text)
    with pytest.raises(ValidationError, match="quoted string"):
        parse_tariff_book(data)


def test_unquoted_times_are_caught():
    data = raw_tariff()
    data["time_bands"]["peak"][0]["start"] = 480  # what YAML makes of 08:00
    with pytest.raises(ValidationError, match="quoted string"):
        book_with(data)


def test_group_without_an_sms_rate_is_refused():
    data = raw_tariff()
    del data["sms"]["de_premium"]
    with pytest.raises(ValidationError, match="de_premium"):
        book_with(data)


def test_bands_of_one_group_must_share_their_intervals():
    data = raw_tariff()
    data["voice"]["de_mobile"]["peak"]["intervals"] = [{"start_s": 0, "price_per_unit": "0.09", "unit_s": 60, "increment_s": 60}]
    with pytest.raises(ValidationError, match="same intervals"):
        book_with(data)


def test_interval_must_hold_whole_increments_and_start_at_zero():
    data = raw_tariff()
    data["voice"]["intl_eu"]["default"]["intervals"] = [
        {"start_s": 0, "price_per_unit": "0.19", "unit_s": 60, "increment_s": 45},
        {"start_s": 60, "price_per_unit": "0.19", "unit_s": 60, "increment_s": 1},
    ]
    with pytest.raises(ValidationError, match="whole number of 45 s increments"):
        book_with(data)
    data["voice"]["intl_eu"]["default"]["intervals"] = [{"start_s": 30, "price_per_unit": "0.19", "unit_s": 60, "increment_s": 1}]
    with pytest.raises(ValidationError, match="start at 0"):
        book_with(data)


def test_fair_use_surcharge_may_not_exceed_the_wholesale_cap():
    data = raw_tariff()
    data["roaming"]["zones"][0]["fair_use"]["surcharge_per_gb"] = "1.11"
    with pytest.raises(ValidationError, match="wholesale cap"):
        book_with(data)


def test_max_cost_must_fit_the_rounding():
    data = raw_tariff()
    data["voice"]["de_premium"]["max_cost"] = "29.99999"
    with pytest.raises(ValidationError, match="more decimals than the tariff rounds to"):
        book_with(data)


def test_country_in_two_zones_is_refused():
    data = raw_tariff()
    data["roaming"]["zones"][1]["countries"].append("FR")
    with pytest.raises(ValidationError, match="FR is in both"):
        book_with(data)


def test_world_zone_needs_its_own_rates_and_rlah_zone_must_not_have_them():
    data = raw_tariff()
    del data["roaming"]["zones"][1]["sms"]
    with pytest.raises(ValidationError, match="needs voice, sms and data"):
        book_with(data)
    data = raw_tariff()
    data["roaming"]["zones"][0]["sms"] = {"price": "0.09"}
    with pytest.raises(ValidationError, match="uses the home rates"):
        book_with(data)


def test_destination_zone_must_exist():
    data = raw_tariff()
    data["destinations"][0]["zone"] = "mars"
    with pytest.raises(ValidationError, match="unknown zone 'mars'"):
        book_with(data)


def test_duplicate_tariff_version_is_refused_and_versions_sort_numerically():
    with pytest.raises(ValidationError, match="duplicate tariff versions"):
        parse_tariff_book({"schema_version": 1, "tariffs": [raw_tariff(), raw_tariff()]})
    versions = []
    for v in ("2", "10", "1"):
        t = raw_tariff()
        t["version"] = v
        versions.append(t)
    book = parse_tariff_book({"schema_version": 1, "tariffs": versions})
    assert book.versions("de-mobile-2026") == ["1", "2", "10"]
    assert book.latest("de-mobile-2026").version == "10"
    with pytest.raises(KeyError):
        book.get("de-mobile-2026", "3")


def test_loader_names_the_file_on_errors(tmp_path: Path):
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("tariffs: [unclosed", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        load_tariff_book(bad_yaml)
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("schema_version: 1\ntariffs: []\n", encoding="utf-8")
    with pytest.raises(ValueError, match="invalid.yaml: invalid tariffs"):
        load_tariff_book(invalid)


# --- time bands as data ----------------------------------------------------------------------


def test_weekday_segments_in_local_time():
    bands = TimeBands.model_validate({"peak": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "19:00"}]})
    segments = bands.day_segments(date(2026, 3, 2), BERLIN, is_holiday=False)
    assert [(s.time(), b) for s, b in segments] == [(time(0), OFFPEAK), (time(8), PEAK), (time(19), OFFPEAK)]
    assert bands.day_segments(date(2026, 3, 7), BERLIN, is_holiday=False) == [(datetime(2026, 3, 7, tzinfo=BERLIN), WEEKEND)]
    assert bands.day_segments(date(2026, 3, 2), BERLIN, is_holiday=True) == [(datetime(2026, 3, 2, tzinfo=BERLIN), HOLIDAY)]


def test_overlapping_peak_windows_merge_and_a_window_may_start_at_midnight():
    bands = TimeBands.model_validate({"peak": [
        {"days": ["mon"], "start": "00:00", "end": "09:00"},
        {"days": ["mon"], "start": "08:00", "end": "12:00"},
        {"days": ["mon"], "start": "14:00", "end": "16:00"},
    ]})
    segments = bands.day_segments(date(2026, 3, 2), BERLIN, is_holiday=False)
    assert [(s.time(), b) for s, b in segments] == [(time(0), PEAK), (time(12), OFFPEAK), (time(14), PEAK), (time(16), OFFPEAK)]


def test_peak_at_0800_is_a_different_utc_instant_after_dst():
    bands = TimeBands.model_validate({"peak": [{"days": ["fri", "mon"], "start": "08:00", "end": "19:00"}]})
    before = bands.day_segments(date(2026, 3, 27), BERLIN, is_holiday=False)[1][0]
    after = bands.day_segments(date(2026, 3, 30), BERLIN, is_holiday=False)[1][0]
    assert (before.astimezone(UTC).hour, after.astimezone(UTC).hour) == (7, 6)


# --- holidays --------------------------------------------------------------------------------


def test_nationwide_german_holidays_2026():
    days = german_public_holidays([2026])
    assert {date(2026, 1, 1), date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 1), date(2026, 5, 14),
            date(2026, 5, 25), date(2026, 10, 3), date(2026, 12, 25), date(2026, 12, 26)} == days
    assert date(2026, 1, 6) not in days  # Epiphany is a holiday in some Länder only


def test_subdivision_adds_regional_holidays():
    assert date(2026, 1, 6) in german_public_holidays([2026], "BY")
    with pytest.raises(ValueError, match="unknown German subdivision"):
        german_public_holidays([2026], "XX")


def test_holidays_between_cover_every_year_touched():
    days = german_public_holidays_between(date(2026, 12, 15), date(2027, 1, 14))
    assert date(2026, 12, 25) in days and date(2027, 1, 1) in days
