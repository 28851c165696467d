"""Rating edge cases. Every expected amount is worked out by hand in the comment next to it.

The tariff below is built for hand arithmetic: national calls are 60/1 (a first 60 s block,
then per second) at 0.12/min peak = 0.002/s, 0.06/min off-peak = 0.001/s, 0.03/min weekend
= 0.0005/s, 0.018/min holiday = 0.0003/s. Rounding is to 6 decimals, so amounts are exact
unless a test says otherwise.
"""
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from domain.rating import AllowanceUsage, Allowances
from domain.rating_engine import (
    AllowanceLimits,
    AllowanceState,
    CompiledTariff,
    RatedEvent,
    RatingEvent,
    rate_events,
    rerate,
)
from domain.tariff import Tariff

BERLIN = ZoneInfo("Europe/Berlin")
HOLIDAYS = frozenset({date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 14), date(2026, 12, 25), date(2026, 12, 26)})
NO_ALLOWANCE = Allowances()

DE_MOBILE = "4915112345678"
DE_FIXED = "49301234567"
PREMIUM = "49900123456"
FRANCE = "33612345678"
UK = "447700900123"


def sixty_one(price: str) -> list[dict]:
    return [
        {"start_s": 0, "price_per_unit": price, "unit_s": 60, "increment_s": 60},
        {"start_s": 60, "price_per_unit": price, "unit_s": 60, "increment_s": 1},
    ]


def sixty_sixty(price: str) -> list[dict]:
    return [{"start_s": 0, "price_per_unit": price, "unit_s": 60, "increment_s": 60}]


def tariff_data(**overrides) -> dict:
    data = {
        "id": "test-mobile",
        "version": "1",
        "rounding": {"decimals": 6, "method": "half_up"},
        "time_bands": {"timezone": "Europe/Berlin", "peak": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "19:00"}]},
        "destinations": [
            {"prefix": "4915", "name": "Germany mobile", "group": "national", "zone": "home"},
            {"prefix": "49", "name": "Germany fixed", "group": "national", "zone": "home"},
            {"prefix": "49900", "name": "Germany premium", "group": "premium", "zone": "home"},
            {"prefix": "33", "name": "France", "group": "intl_eu", "zone": "eu"},
            {"prefix": "43", "name": "Austria", "group": "intl_eu", "zone": "eu"},
            {"prefix": "44", "name": "United Kingdom", "group": "intl_uk", "zone": "world1"},
            {"prefix": "1", "name": "USA/Canada", "group": "intl_nanp", "zone": "world1"},
            {"prefix": "4", "name": "World", "group": "intl_world"},
        ],
        "voice": {
            "national": {
                "in_bundle": True,
                "default": {"intervals": sixty_one("0.06")},
                "peak": {"intervals": sixty_one("0.12")},
                "weekend": {"intervals": sixty_one("0.03")},
                "holiday": {"intervals": sixty_one("0.018")},
            },
            "premium": {"max_cost": "30", "default": {"connect_fee": "0.25", "intervals": sixty_one("1.99")}},
            "intl_eu": {"default": {"intervals": sixty_sixty("0.19")}},
            "intl_uk": {"default": {"intervals": sixty_sixty("0.49")}},
            "intl_nanp": {"default": {"intervals": sixty_sixty("0.29")}},
            "intl_world": {"default": {"intervals": sixty_sixty("0.99")}},
        },
        "sms": {
            "national": {"price": "0.09", "in_bundle": True},
            "premium": {"price": "0.19"},
            "intl_eu": {"price": "0.06"},
            "intl_uk": {"price": "0.19"},
            "intl_nanp": {"price": "0.19"},
            "intl_world": {"price": "0.19"},
        },
        "data": {"price": "0.01", "unit": "MB", "increment_kb": 10, "in_bundle": True},
        "roaming": {
            "home_zone": "home",
            "home_countries": ["DE"],
            "rest_of_world": "world2",
            "zones": [
                {"id": "eu", "roam_like_at_home": True, "rlah_voice_group": "national", "rlah_sms_group": "national",
                 "fair_use": {"wholesale_cap_per_gb": "1.10", "surcharge_per_gb": "1.10"}, "countries": ["FR", "AT", "ES", "NO"]},
                {"id": "world1", "countries": ["US", "GB", "CH"], "voice": {"default": {"intervals": sixty_sixty("1.49")}},
                 "sms": {"price": "0.49"}, "data": {"price": "0.99", "unit": "MB", "increment_kb": 10}},
                {"id": "world2", "voice": {"default": {"intervals": sixty_sixty("2.99")}},
                 "sms": {"price": "0.59"}, "data": {"price": "4.99", "unit": "MB", "increment_kb": 10}},
            ],
        },
    }
    data.update(overrides)
    return data


TARIFF = Tariff.model_validate(tariff_data())


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def rate(*events: RatingEvent, allowances: Allowances = NO_ALLOWANCE, used=None, tariff: Tariff = TARIFF, **kwargs) -> dict[str, RatedEvent]:
    run = rate_events(events, tariff, allowances, used, holidays=HOLIDAYS, **kwargs)
    return {r.record_id: r for r in run.results}


def one(event: RatingEvent, **kwargs) -> RatedEvent:
    return rate(event, **kwargs)[event.record_id]


def parts(rated: RatedEvent) -> list[tuple]:
    return [(p.band, p.units, p.from_allowance, p.amount) for p in rated.parts]


# --- time bands ------------------------------------------------------------------------------


def test_call_within_one_band_is_not_split():
    # Tuesday 10:00 peak, 61 s: 60 s block 0.12 + 1 s × 0.002 = 0.122
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 61, DE_MOBILE))
    assert (rated.billed_units, rated.amount, rated.band, rated.parts) == (61, Decimal("0.122"), "peak", ())
    assert (rated.destination, rated.zone, rated.tariff_id, rated.tariff_version) == ("Germany mobile", "home", "test-mobile", "1")


def test_call_crossing_peak_into_offpeak_prices_each_increment_in_the_band_it_starts_in():
    # Monday 18:59:00, 150 s. Block [18:59:00, 19:00:00) starts in peak: 0.12.
    # Per-second increments from 19:00:00: 90 s off-peak × 0.001 = 0.09. Total 0.21.
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 2, 18, 59, 0), 150, DE_MOBILE))
    assert rated.amount == Decimal("0.21")
    assert rated.band == "peak"
    assert parts(rated) == [("peak", 60, False, Decimal("0.12")), ("offpeak", 90, False, Decimal("0.09"))]


def test_a_block_starting_in_peak_is_all_peak_even_if_it_ends_in_offpeak():
    # Monday 18:59:30, 90 s. Block [18:59:30, 19:00:30) starts in peak: 0.12 for all 60 s,
    # though 30 of them fall after 19:00. Then 30 s off-peak × 0.001 = 0.03. Total 0.15.
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 2, 18, 59, 30), 90, DE_MOBILE))
    assert rated.amount == Decimal("0.15")
    assert parts(rated) == [("peak", 60, False, Decimal("0.12")), ("offpeak", 30, False, Decimal("0.03"))]


def test_call_crossing_offpeak_into_peak_in_the_morning():
    # Wednesday 07:59:50, 75 s. Block starts off-peak: 0.06. 15 s from 08:00:50 peak × 0.002 = 0.03.
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 4, 7, 59, 50), 75, DE_MOBILE))
    assert rated.amount == Decimal("0.09")
    assert parts(rated) == [("offpeak", 60, False, Decimal("0.06")), ("peak", 15, False, Decimal("0.03"))]


def test_saturday_is_weekend_all_day():
    # Saturday 12:00, 120 s weekend: 0.03 + 60 × 0.0005 = 0.06
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 7, 12, 0), 120, DE_MOBILE))
    assert (rated.band, rated.amount) == ("weekend", Decimal("0.06"))


def test_call_into_midnight_of_a_holiday():
    # Thursday 24 Dec 23:59:30 (a working day, off-peak), 120 s.
    # Block [23:59:30, 00:00:30) starts off-peak: 0.06.
    # 60 s per-second from 00:00:30 on 25 Dec (holiday) × 0.0003 = 0.018. Total 0.078.
    rated = one(RatingEvent.voice("c", berlin(2026, 12, 24, 23, 59, 30), 120, DE_MOBILE))
    assert rated.amount == Decimal("0.078")
    assert parts(rated) == [("offpeak", 60, False, Decimal("0.06")), ("holiday", 60, False, Decimal("0.018"))]


def test_call_out_of_a_holiday_at_midnight():
    # Ascension Day, Thursday 14 May 23:59:00, 120 s. Block starts on the holiday: 0.018.
    # From 00:00:00 Friday (off-peak): 60 s × 0.001 = 0.06. Total 0.078.
    rated = one(RatingEvent.voice("c", berlin(2026, 5, 14, 23, 59, 0), 120, DE_MOBILE))
    assert rated.amount == Decimal("0.078")
    assert parts(rated) == [("holiday", 60, False, Decimal("0.018")), ("offpeak", 60, False, Decimal("0.06"))]


def test_call_starting_exactly_at_midnight_of_a_holiday_is_holiday():
    # Friday 25 Dec 00:00:00 (a weekday, but a holiday): 60 s block × holiday 0.018
    rated = one(RatingEvent.voice("c", berlin(2026, 12, 25, 0, 0, 0), 60, DE_MOBILE))
    assert (rated.band, rated.amount) == ("holiday", Decimal("0.018"))


def test_a_working_day_at_peak_time_is_holiday_when_the_holiday_set_says_so():
    # Good Friday 3 April 10:00: without the holiday it would be peak (0.12 for 60 s).
    assert one(RatingEvent.voice("c", berlin(2026, 4, 3, 10, 0), 60, DE_MOBILE)).amount == Decimal("0.018")
    run = rate_events([RatingEvent.voice("c", berlin(2026, 4, 3, 10, 0), 60, DE_MOBILE)], TARIFF, NO_ALLOWANCE, holidays=frozenset())
    assert run.results[0].amount == Decimal("0.12")


def test_holiday_predicate_may_be_a_callable():
    rated = rate_events([RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, DE_MOBILE)], TARIFF, NO_ALLOWANCE,
                        holidays=lambda day: day == date(2026, 3, 3)).results[0]
    assert (rated.band, rated.amount) == ("holiday", Decimal("0.018"))


def test_missing_holiday_rate_falls_back_to_weekend():
    data = tariff_data()
    del data["voice"]["national"]["holiday"]
    tariff = Tariff.model_validate(data)
    # 25 Dec 10:00, 60 s: weekend price 0.03
    assert one(RatingEvent.voice("c", berlin(2026, 12, 25, 10, 0), 60, DE_MOBILE), tariff=tariff).amount == Decimal("0.03")


# --- DST -------------------------------------------------------------------------------------


def test_call_across_the_spring_dst_change_is_billed_for_elapsed_seconds():
    # Sunday 29 March 01:59:00 CET (00:59:00Z), 180 s: the clock jumps 02:00 -> 03:00 mid-call,
    # the call ends at 03:02:00 CEST. 180 s billed (not 3780), weekend: 0.03 + 120 × 0.0005 = 0.09.
    rated = one(RatingEvent.voice("c", utc(2026, 3, 29, 0, 59, 0), 180, DE_MOBILE))
    assert (rated.billed_units, rated.band, rated.amount) == (180, "weekend", Decimal("0.09"))


def test_call_across_the_autumn_dst_change_is_billed_for_elapsed_seconds():
    # Sunday 25 October 02:30 CEST (00:30Z) for 3600 s, ending at 02:30 CET: the wall clock shows
    # no time passed, yet 3600 s are billed. Weekend: 0.03 + 3540 × 0.0005 = 1.80.
    rated = one(RatingEvent.voice("c", utc(2026, 10, 25, 0, 30, 0), 3600, DE_MOBILE))
    assert (rated.billed_units, rated.amount) == (3600, Decimal("1.80"))


def test_peak_starts_at_local_0800_after_the_dst_change():
    # Monday 30 March 07:59 CEST = 05:59Z, 120 s. Block off-peak 0.06; from 08:00 CEST (06:00Z)
    # 60 s peak × 0.002 = 0.12. Total 0.18. (With CET offsets peak would start at 07:00Z: 0.12.)
    rated = one(RatingEvent.voice("c", utc(2026, 3, 30, 5, 59, 0), 120, DE_MOBILE))
    assert rated.amount == Decimal("0.18")
    assert [p.band for p in rated.parts] == ["offpeak", "peak"]


def test_bands_follow_the_subscriber_time_zone():
    # Tuesday 3 March 12:30Z is 13:30 in Berlin (peak) but 07:30 in New York (EST, off-peak).
    event = RatingEvent.voice("c", utc(2026, 3, 3, 12, 30), 60, DE_MOBILE)
    assert one(event).band == "peak"
    assert one(event, timezone="America/New_York").band == "offpeak"


# --- dispositions and 0-second calls ---------------------------------------------------------


@pytest.mark.parametrize("disposition", ["NO ANSWER", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION"])
def test_unanswered_calls_cost_nothing_and_use_no_allowance(disposition):
    run = rate_events([RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 45, PREMIUM, disposition=disposition)],
                      TARIFF, Allowances(voice_minutes=10), holidays=HOLIDAYS)
    rated = run.results[0]
    assert (rated.billed_units, rated.allowance_units, rated.amount, rated.error) == (0, 0, Decimal(0), None)
    assert run.used.voice_s == 0


def test_zero_second_answered_call_costs_the_connect_fee_only():
    # Premium: connect fee 0.25, no seconds billed.
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 0, PREMIUM))
    assert (rated.billed_units, rated.amount, rated.band) == (0, Decimal("0.25"), "peak")


def test_zero_second_call_without_connect_fee_is_free_and_uses_no_allowance():
    run = rate_events([RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 0, DE_MOBILE)], TARIFF, Allowances(voice_minutes=10), holidays=HOLIDAYS)
    assert (run.results[0].amount, run.results[0].allowance_units, run.used.voice_s) == (Decimal(0), 0, 0)


def test_one_second_call_is_billed_the_whole_first_block():
    # 60/1: 1 s bills the 60 s block: peak 0.12
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 1, DE_MOBILE))
    assert (rated.billed_units, rated.amount) == (60, Decimal("0.12"))


def test_unknown_disposition_is_refused():
    with pytest.raises(ValueError, match="disposition"):
        RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 10, DE_MOBILE, disposition="ANSWER")
    compiled = CompiledTariff(TARIFF, HOLIDAYS)
    row = (0, "c", "voice", 10, DE_MOBILE, None, "ANSWER")
    [result] = compiled.rate_batch([row], AllowanceLimits(), AllowanceState())
    assert result[4] == 0 and "disposition" in result[9]


# --- allowances ------------------------------------------------------------------------------


def test_allowance_running_out_mid_call_splits_the_call():
    # 10 minutes = 600 s, 570 s used: 30 s left. Tuesday 10:00 peak, 150 s billed.
    # The 60 s block: 30 s free, 30 s charged at the block's 0.002/s = 0.06.
    # Then 90 per-second increments × 0.002 = 0.18. Total 0.24.
    run = rate_events([RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 150, DE_MOBILE)], TARIFF,
                      Allowances(voice_minutes=10), AllowanceState(voice_s=570), holidays=HOLIDAYS)
    rated = run.results[0]
    assert (rated.billed_units, rated.allowance_units, rated.charged_units, rated.amount) == (150, 30, 120, Decimal("0.24"))
    assert parts(rated) == [("peak", 30, True, Decimal(0)), ("peak", 120, False, Decimal("0.24"))]
    assert run.used.voice_s == 600


def test_allowance_is_consumed_in_event_time_order_not_arrival_order():
    # 2 minutes of allowance. The earlier call (09:00, 120 s) takes all of it even though it
    # arrives second; the later one (10:00, 60 s peak) pays 0.12.
    late = RatingEvent.voice("late", berlin(2026, 3, 3, 10, 0), 60, DE_MOBILE)
    early = RatingEvent.voice("early", berlin(2026, 3, 3, 9, 0), 120, DE_MOBILE)
    results = rate(late, early, allowances=Allowances(voice_minutes=2))
    assert (results["early"].allowance_units, results["early"].amount) == (120, Decimal(0))
    assert (results["late"].allowance_units, results["late"].amount) == (0, Decimal("0.12"))


def test_allowance_end_and_band_change_in_one_call():
    # 1 minute left; Monday 18:59:00 for 150 s. Block [18:59, 19:00) peak: all 60 s free.
    # 90 s off-peak per second, charged × 0.001 = 0.09.
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 2, 18, 59, 0), 150, DE_MOBILE), allowances=Allowances(voice_minutes=1))
    assert parts(rated) == [("peak", 60, True, Decimal(0)), ("offpeak", 90, False, Decimal("0.09"))]


def test_international_and_premium_calls_do_not_use_the_minutes():
    run = rate_events([RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, UK)], TARIFF, Allowances(voice_minutes=100), holidays=HOLIDAYS)
    assert (run.results[0].allowance_units, run.results[0].amount, run.used.voice_s) == (0, Decimal("0.49"), 0)


def test_sms_straddling_the_allowance():
    # 3 messages, 2 left: 2 free, 1 × 0.09.
    run = rate_events([RatingEvent.sms("s", berlin(2026, 3, 3, 10, 0), DE_MOBILE, messages=3)], TARIFF,
                      Allowances(sms=10), AllowanceState(sms=8), holidays=HOLIDAYS)
    rated = run.results[0]
    assert (rated.billed_units, rated.allowance_units, rated.amount) == (3, 2, Decimal("0.09"))
    assert run.used.sms == 10


def test_data_is_billed_in_10_kb_steps_and_split_at_the_allowance():
    # 1 MB allowance, 0.5 MB used. 700,001 bytes -> 71 steps of 10 kB = 710,000 bytes billed.
    # 500,000 free, 210,000 bytes charged × 0.01/MB = 0.0021.
    run = rate_events([RatingEvent.data("d", berlin(2026, 3, 3, 10, 0), 700_001)], TARIFF,
                      Allowances(data_mb=1), AllowanceState(data_bytes=500_000), holidays=HOLIDAYS)
    rated = run.results[0]
    assert (rated.billed_units, rated.allowance_units, rated.amount) == (710_000, 500_000, Decimal("0.0021"))
    assert run.used.data_bytes == 1_000_000


def test_allowance_counters_from_domain_rating_are_whole_minutes():
    # AllowanceUsage(voice_minutes=9) = 540 s used of 600: a 90 s call gets 60 s free, 30 s at 0.002 = 0.06
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 90, DE_MOBILE), allowances=Allowances(voice_minutes=10), used=AllowanceUsage(voice_minutes=9))
    assert (rated.allowance_units, rated.amount) == (60, Decimal("0.06"))


# --- destinations ------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "name"), [
    ("4915112345678", "Germany mobile"),     # 4915 beats 49 and 4
    ("49301234567", "Germany fixed"),        # 49 beats 4
    ("49900123456", "Germany premium"),      # 49900 beats 49
    ("49901123456", "Germany fixed"),        # 4990 is no prefix: back to 49
    ("441234567", "United Kingdom"),         # 44 beats 4
    ("43123456", "Austria"),
    ("420123456", "World"),                  # only the catch-all 4 matches
    ("12125550100", "USA/Canada"),
    ("33612345678", "France"),
])
def test_longest_prefix_wins(number, name):
    assert one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, number)).destination == name


def test_prefix_memo_does_not_leak_between_numbers_sharing_a_short_prefix():
    compiled = CompiledTariff(TARIFF, HOLIDAYS)
    names = [compiled.dest_names[compiled.destination_index(n)] for n in ("4930", "49900123", "4990", "49", "4")]
    assert names == ["Germany fixed", "Germany premium", "Germany fixed", "Germany fixed", "World"]


def test_number_without_a_matching_prefix_is_an_error_not_a_charge():
    data = tariff_data()
    data["destinations"] = [d for d in data["destinations"] if d["prefix"] != "4"]
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, "420123456"), tariff=Tariff.model_validate(data))
    assert rated.amount == 0 and rated.error is not None and "420123456" in rated.error


def test_destination_must_be_e164_digits():
    assert RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, "+4915112345678").destination == "4915112345678"
    with pytest.raises(ValueError, match="E.164"):
        RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, "0151 1234")


# --- international, premium, caps and rounding -----------------------------------------------


def test_international_60_60_bills_whole_minutes():
    # UK 0.49/min, 61 s -> 2 minutes = 0.98
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 61, UK))
    assert (rated.billed_units, rated.amount) == (120, Decimal("0.98"))


def test_premium_call_is_capped_per_event():
    # 3600 s: 0.25 + 60 min × 1.99 = 119.65, capped at 30.00
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 3600, PREMIUM))
    assert rated.amount == Decimal("30")


def test_capped_call_parts_still_add_up_to_the_cap():
    # Monday 18:50, 1800 s premium (band changes at 19:00 though the price does not):
    # 0.25 + 30 × 1.99 = 59.95 -> capped at 30. Parts: up to 19:00 (600 s): 0.25 + 10 × 1.99 = 20.15;
    # the rest fills the cap: 30 - 20.15 = 9.85.
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 2, 18, 50), 1800, PREMIUM))
    assert rated.amount == Decimal("30")
    assert parts(rated) == [("peak", 600, False, Decimal("20.15")), ("offpeak", 1200, False, Decimal("9.85"))]


@pytest.mark.parametrize(("method", "expected"), [("half_up", "0.1217"), ("up", "0.1217"), ("down", "0.1216")])
def test_rounding_method_and_decimals_apply_once_per_event(method, expected):
    # Peak set to 0.073/min (60/1), tariff rounding to 4 decimals. 100 s:
    # 0.073 + 40 × 0.073/60 = 0.073 + 0.0486666… = 0.1216666… -> half_up/up 0.1217, down 0.1216.
    data = tariff_data(rounding={"decimals": 4, "method": method})
    data["voice"]["national"]["peak"] = {"intervals": sixty_one("0.073")}
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 100, DE_MOBILE), tariff=Tariff.model_validate(data))
    assert rated.amount == Decimal(expected)
    assert rated.amount_micros == int(Decimal(expected) * 1_000_000)
    assert rated.amount.as_tuple().exponent == -4  # stated at the tariff's precision


def test_rounding_half_up_on_an_exact_half():
    # 1 s increments at 0.09/min = 0.0015/s; 61 s off-peak at 0.09: 0.09 + 0.0015 = 0.0915.
    # To 3 decimals: half_up 0.092, down 0.091.
    for method, expected in (("half_up", "0.092"), ("down", "0.091"), ("up", "0.092")):
        data = tariff_data(rounding={"decimals": 3, "method": method})
        data["voice"]["national"]["default"] = {"intervals": sixty_one("0.09")}
        rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 21, 0), 61, DE_MOBILE), tariff=Tariff.model_validate(data))
        assert rated.amount == Decimal(expected), method


# --- roaming ---------------------------------------------------------------------------------


def test_calling_home_from_the_eu_is_roam_like_at_home():
    # In France, Tuesday 10:00, 90 s to a German mobile, 1 free minute: rated as at home.
    run = rate_events([RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 90, DE_MOBILE, zone="FR")], TARIFF,
                      Allowances(voice_minutes=1), holidays=HOLIDAYS)
    rated = run.results[0]
    # 90 s: 60 s free, 30 s × 0.002 = 0.06
    assert (rated.zone, rated.allowance_units, rated.amount) == ("eu", 60, Decimal("0.06"))


def test_calling_a_local_number_in_the_visited_eu_country_costs_the_domestic_price():
    # From France to a French mobile: not the international 0.19/min but national peak 0.12 (60 s).
    assert one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, FRANCE, zone="FR")).amount == Decimal("0.12")
    # From home the same number is an international call: 0.19.
    assert one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 60, FRANCE)).amount == Decimal("0.19")


def test_calls_from_the_eu_to_non_eu_numbers_cost_as_from_home():
    # From Austria to the UK: 0.49/min like at home, 60/60.
    assert one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 30, UK, zone="AT")).amount == Decimal("0.49")


def test_world_zone_has_its_own_rates_and_no_allowance():
    # In the US, 61 s to Germany: world zone 1, 60/60 at 1.49 -> 2.98; not from the minutes.
    run = rate_events([RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 61, DE_MOBILE, zone="US"),
                       RatingEvent.data("d", berlin(2026, 3, 3, 11, 0), 1_500_000, zone="US"),
                       RatingEvent.sms("s", berlin(2026, 3, 3, 12, 0), DE_MOBILE, zone="US")],
                      TARIFF, Allowances(voice_minutes=100, sms=100, data_mb=100), holidays=HOLIDAYS)
    voice, data, sms = run.results
    assert (voice.zone, voice.allowance_units, voice.amount) == ("world1", 0, Decimal("2.98"))
    # 1,500,000 bytes × 0.99/MB = 1.485
    assert (data.allowance_units, data.amount) == (0, Decimal("1.485"))
    assert sms.amount == Decimal("0.49")
    assert (run.used.voice_s, run.used.sms, run.used.data_bytes) == (0, 0, 0)


def test_unlisted_country_falls_into_the_rest_of_world_zone():
    # Thailand: world2, 60/60 at 2.99
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 10, DE_MOBILE, zone="TH"))
    assert (rated.zone, rated.amount) == ("world2", Decimal("2.99"))


def test_unknown_zone_without_rest_of_world_is_an_error():
    data = tariff_data()
    data["roaming"]["rest_of_world"] = None
    rated = one(RatingEvent.voice("c", berlin(2026, 3, 3, 10, 0), 10, DE_MOBILE, zone="TH"), tariff=Tariff.model_validate(data))
    assert rated.amount == 0 and "TH" in rated.error


def test_eu_data_beyond_the_fair_use_limit_pays_the_surcharge():
    # Fair-use limit 1,000,000 bytes; allowance 5 MB (plenty). Two 600,000-byte sessions in Spain.
    # First: within the limit, from the allowance, 0. Second: 400,000 bytes within, 200,000 beyond:
    # 200,000 × 1.10/GB = 0.00022; still from the allowance (domestic price 0).
    first = RatingEvent.data("d1", berlin(2026, 3, 3, 10, 0), 600_000, zone="ES")
    second = RatingEvent.data("d2", berlin(2026, 3, 3, 11, 0), 600_000, zone="ES")
    run = rate_events([first, second], TARIFF, Allowances(data_mb=5), holidays=HOLIDAYS, eu_data_cap_bytes=1_000_000)
    r1, r2 = run.results
    assert (r1.amount, r1.allowance_units) == (Decimal(0), 600_000)
    assert (r2.amount, r2.allowance_units) == (Decimal("0.00022"), 600_000)
    assert [(p.units, p.from_allowance, p.fair_use_surcharge, p.amount) for p in r2.parts] == [
        (400_000, True, False, Decimal(0)), (200_000, True, True, Decimal("0.00022"))]
    assert run.used.eu_roaming_data_bytes == 1_200_000


def test_fair_use_cap_from_bundle_price():
    # Twice 9.99 / 1.10 GB = 18.1636… GB -> 18,163,636,364 bytes (rounded up, the customer's minimum).
    fair_use = TARIFF.roaming.zones[0].fair_use
    assert fair_use.data_cap_bytes(Decimal("9.99")) == 18_163_636_364


# --- ordering, batches and the fast path -----------------------------------------------------


def test_results_come_in_event_time_order_with_record_id_breaking_ties():
    t = berlin(2026, 3, 3, 10, 0)
    events = [RatingEvent.sms("b", t, DE_MOBILE), RatingEvent.sms("a", t, DE_MOBILE),
              RatingEvent.sms("z", berlin(2026, 3, 3, 9, 0), DE_MOBILE),
              RatingEvent.sms("y", t.replace(microsecond=1), DE_MOBILE)]
    run = rate_events(events, TARIFF, Allowances(sms=2), holidays=HOLIDAYS)
    assert [r.record_id for r in run.results] == ["z", "a", "b", "y"]
    # z and a got the two free messages
    assert [r.allowance_units for r in run.results] == [1, 1, 0, 0]


def test_rate_batch_on_plain_tuples_matches_the_typed_edge():
    events = [RatingEvent.voice("v", berlin(2026, 3, 2, 18, 59), 150, DE_MOBILE),
              RatingEvent.sms("s", berlin(2026, 3, 2, 9, 0), UK),
              RatingEvent.data("d", berlin(2026, 3, 2, 8, 0), 12_345)]
    compiled = CompiledTariff(TARIFF, HOLIDAYS)
    rows = compiled.rate_batch([e.as_row() for e in events], AllowanceLimits(data_bytes=1_000_000), AllowanceState())
    assert [(r[0], r[2], r[4]) for r in rows] == [("d", 20_000, 0), ("s", 1, 190_000), ("v", 150, 210_000)]
    assert [compiled.to_rated_event(r) for r in rows] == rate_events(events, compiled, Allowances(data_mb=1), holidays=HOLIDAYS).results


def test_memoised_costs_do_not_leak_between_bands():
    # Same duration in peak then off-peak: 60 s peak 0.12, 60 s off-peak 0.06.
    results = rate(RatingEvent.voice("p", berlin(2026, 3, 3, 10, 0), 60, DE_MOBILE),
                   RatingEvent.voice("o", berlin(2026, 3, 3, 20, 0), 60, DE_MOBILE))
    assert (results["p"].amount, results["o"].amount) == (Decimal("0.12"), Decimal("0.06"))


def test_events_months_apart_extend_the_band_calendar():
    results = rate(RatingEvent.voice("a", berlin(2026, 1, 5, 10, 0), 60, DE_MOBILE),
                   RatingEvent.voice("b", berlin(2026, 12, 25, 10, 0), 60, DE_MOBILE),
                   RatingEvent.voice("c", berlin(2027, 6, 5, 10, 0), 60, DE_MOBILE))  # a Saturday
    assert [results[k].band for k in "abc"] == ["peak", "holiday", "weekend"]


# --- re-rating -------------------------------------------------------------------------------


def corrected_tariff() -> Tariff:
    data = tariff_data(version="2")
    data["voice"]["national"]["peak"] = {"intervals": sixty_one("0.09")}  # 0.12 was a typo
    return Tariff.model_validate(data)


CYCLE = [
    RatingEvent.voice("v1", berlin(2026, 3, 3, 10, 0), 120, DE_MOBILE),
    RatingEvent.voice("v2", berlin(2026, 3, 3, 11, 0), 90, DE_MOBILE),
    RatingEvent.voice("v3", berlin(2026, 3, 3, 20, 0), 60, DE_MOBILE),
    RatingEvent.sms("s1", berlin(2026, 3, 3, 12, 0), DE_MOBILE),
]
PLAN = Allowances(voice_minutes=2)


def test_rerate_replaces_amounts_and_reports_deltas():
    # v1 (120 s) uses the 2 free minutes either way. v2: 90 s peak: v1 0.12 + 30 × 0.002 = 0.18;
    # v2 0.09 + 30 × 0.0015 = 0.135. v3 off-peak 0.06 unchanged. s1 0.09 unchanged.
    before = rate_events(CYCLE, TARIFF, PLAN, holidays=HOLIDAYS)
    result = rerate(CYCLE, before.results, corrected_tariff(), PLAN, holidays=HOLIDAYS)
    by_id = {d.record_id: d for d in result.deltas}
    assert by_id["v2"].previous_amount == Decimal("0.18") and by_id["v2"].new_amount == Decimal("0.135")
    assert by_id["v2"].delta == Decimal("-0.045")
    assert result.total_delta == Decimal("-0.045")
    assert {d.record_id for d in result.changed} == {"v1", "v2", "v3", "s1"}  # the tariff version changed on all
    assert all(r.tariff_version == "2" for r in result.results)
    # Never added to the old amounts: the new total is what fresh rating gives.
    assert sum(r.amount for r in result.results) == rate_events(CYCLE, corrected_tariff(), PLAN, holidays=HOLIDAYS).total


def test_rerate_twice_is_idempotent():
    before = rate_events(CYCLE, TARIFF, PLAN, holidays=HOLIDAYS)
    first = rerate(CYCLE, before.results, corrected_tariff(), PLAN, holidays=HOLIDAYS)
    second = rerate(CYCLE, first.results, corrected_tariff(), PLAN, holidays=HOLIDAYS)
    assert second.results == first.results
    assert second.changed == [] and second.total_delta == 0


def test_rerate_recomputes_allowance_from_zero():
    # Rated originally as if 2 minutes were already used (a wrong counter): v1 was charged 0.12 + 60 × 0.002 = 0.24.
    wrong = rate_events(CYCLE, TARIFF, PLAN, AllowanceState(voice_s=120), holidays=HOLIDAYS)
    assert {r.record_id: r.amount for r in wrong.results}["v1"] == Decimal("0.24")
    result = rerate(CYCLE, wrong.results, TARIFF, PLAN, holidays=HOLIDAYS)
    v1 = next(d for d in result.deltas if d.record_id == "v1")
    assert (v1.new_amount, v1.new_allowance_units, v1.delta) == (Decimal(0), 120, Decimal("-0.24"))
    assert result.used.voice_s == 120


def test_rerate_refuses_previous_results_without_events():
    before = rate_events(CYCLE, TARIFF, PLAN, holidays=HOLIDAYS)
    with pytest.raises(ValueError, match="v3"):
        rerate([e for e in CYCLE if e.record_id != "v3"], before.results, TARIFF, PLAN, holidays=HOLIDAYS)


def test_rerate_includes_late_events_as_new():
    before = rate_events(CYCLE[1:], TARIFF, PLAN, holidays=HOLIDAYS)
    result = rerate(CYCLE, before.results, TARIFF, PLAN, holidays=HOLIDAYS)
    late = next(d for d in result.deltas if d.record_id == "v1")
    assert late.previous_tariff is None and late.new_amount == 0
    # v2 lost its free minutes to the earlier, late-arriving v1: 0 -> 0.18
    v2 = next(d for d in result.deltas if d.record_id == "v2")
    assert (v2.previous_amount, v2.new_amount) == (Decimal(0), Decimal("0.18"))
