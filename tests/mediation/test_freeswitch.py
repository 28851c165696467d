from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediation import freeswitch
from mediation.records import RejectedLine, UsageEvent
from tests.support.mediation import fixture_lines, outcome, parse_file, parse_in_chunks

FIXTURE = Path(__file__).parent / "data" / "freeswitch_master.csv"
UTC = timezone.utc
UUID = "6f1c2a9e-3b7d-4c1e-9a42-0000000000%02d"

EXPECTED = {
    1: UUID % 1,
    2: UUID % 2,
    3: UUID % 3,
    4: UUID % 4,
    5: UUID % 5,
    6: UUID % 6,
    7: UUID % 7,
    8: UUID % 8,
    10: "wrong_column_count",
    11: "invalid_timestamp",
    12: "not_utf8",
    13: UUID % 1,  # line 1 again: yielded, the importer de-duplicates
    14: "missing_id",
    15: "unknown_disposition",
    16: "invalid_duration",
    17: "malformed_csv",
    18: "unknown_disposition",
}


def lines() -> list[bytes]:
    return fixture_lines(FIXTURE)


def parse_fixture(**options) -> list[UsageEvent | RejectedLine]:
    return parse_file(freeswitch.parse, FIXTURE, "Master.csv", **options)


def test_every_line_is_an_event_or_a_rejection_and_the_blank_line_is_skipped():
    items = parse_fixture()
    assert {item.line_no: outcome(item) for item in items} == EXPECTED
    assert [item.line_no for item in items] == sorted(EXPECTED)


def test_an_answered_call_of_the_example_template_is_read_column_by_column():
    assert parse_fixture()[0] == UsageEvent(
        source_format="freeswitch", source_file="Master.csv", line_no=1, record_id=UUID % 1, kind="voice",
        msisdn="4915112345678", start=datetime(2024, 3, 1, 11, 0, 0, tzinfo=UTC), duration_s=185, billsec_s=180,
        disposition="ANSWERED", destination="4930123456", bytes_up=0, bytes_down=0, rating_group=None, roaming_mcc=None)


def test_thirteen_columns_with_a_quoted_comma_in_the_name():
    second = {item.line_no: item for item in parse_fixture()}[2]
    assert (second.msisdn, second.destination, second.billsec_s) == ("4915112345679", "4989123456", 60)


def test_hangup_causes_map_to_dispositions_and_an_answer_time_means_answered():
    items = {item.line_no: item for item in parse_fixture()}
    assert [items[n].disposition for n in range(1, 9)] == [
        "ANSWERED", "ANSWERED", "NO_ANSWER", "BUSY", "NO_ANSWER", "ANSWERED", "FAILED", "CONGESTION"]
    assert items[6].billsec_s == 600  # ended on MEDIA_TIMEOUT after ten minutes of talk: still billed


@pytest.mark.parametrize(("cause", "answer", "billsec", "expected"), [
    ("NORMAL_CLEARING", "2024-03-01 10:00:01", "60", "ANSWERED"),
    ("NORMAL_CLEARING", "", "0", "NO_ANSWER"),
    ("NORMAL_CLEARING", "", "12", "ANSWERED"),  # billable seconds prove an answer even without the stamp
    ("RECOVERY_ON_TIMER_EXPIRE", "2024-03-01 10:00:01", "60", "ANSWERED"),
    ("USER_BUSY", "", "0", "BUSY"),
    ("NO_USER_RESPONSE", "", "0", "NO_ANSWER"),
    ("SWITCH_CONGESTION", "", "0", "CONGESTION"),
    ("CALL_REJECTED", "", "0", "FAILED"),
    ("SOME_FUTURE_CAUSE", "", "0", "FAILED"),
    ("", "", "0", None),
    ("normal_clearing", "", "0", None),
])
def test_disposition_rules(cause, answer, billsec, expected):
    assert freeswitch.disposition(cause, answer, billsec) == expected


def test_rejections_keep_the_source_line_and_say_why():
    rejected = {item.line_no: item for item in parse_fixture() if isinstance(item, RejectedLine)}
    source = lines()
    for line_no, item in rejected.items():
        if line_no != 12:
            assert item.raw == source[line_no - 1].decode().rstrip("\n")
    assert rejected[10].reason == "expected 13 columns (15 with read_codec, write_codec), found 14"
    assert rejected[11].reason.startswith("start_stamp: '2024-03-01 25:00:00' is not a valid date and time")
    assert rejected[12].raw.startswith('"J\\xfcrgen Gro\\xdf","4915112345678"')
    assert rejected[14].reason == "uuid is empty; it is the dedup key"
    assert rejected[15].reason == "hangup_cause '' is not a known call outcome"
    assert rejected[16].reason == "duration 'sixty' is not a whole number"
    assert rejected[17].reason == "line is not valid CSV: unexpected end of data"


def test_an_unterminated_quote_costs_only_its_own_line():
    source = lines()
    broken, following = source[16], source[17]
    items = list(freeswitch.parse([broken, following], source_file="m", first_line_no=17))
    assert [(item.line_no, outcome(item)) for item in items] == [(17, "malformed_csv"), (18, "unknown_disposition")]


def test_local_time_of_the_freeswitch_host():
    first = parse_fixture(timezone="America/New_York")[0]
    assert first.start == datetime(2024, 3, 1, 16, 0, 0, tzinfo=UTC)  # EST, UTC-5


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=18), max_size=6))
def test_parsing_in_chunks_split_at_any_line_boundary_gives_the_same_result(cuts):
    whole = parse_fixture()
    source = lines()
    assert parse_in_chunks(freeswitch.parse, source, cuts, "Master.csv") == whole


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise_and_give_at_most_one_item_per_line(raw_lines):
    numbers = [item.line_no for item in freeswitch.parse(raw_lines, source_file="fuzz")]
    assert numbers == sorted(set(numbers))
    assert all(1 <= n <= len(raw_lines) for n in numbers)
