import csv
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediation import pgw
from mediation.records import RejectedLine, UsageEvent
from tests.support.mediation import fixture_lines, outcome, parse_file
from mediation.timestamps import SwitchClock

FIXTURE = Path(__file__).parent / "data" / "pgw_data.csv"
UTC = timezone.utc

EXPECTED = {
    2: "3405678901:pgw01.fra.example.net:1:10",
    3: "3405678901:pgw01.fra.example.net:1:20",  # the same record's second container
    4: "3405678901:pgw01.fra.example.net:2:10",  # the next partial record of the bearer
    5: "3405678902:pgw01.fra.example.net:1:10",
    6: "3405678903:pgw02.ber.example.net:1:10",
    7: "3405678904:pgw02.ber.example.net:1:10",
    8: "3405678905:pgw02.ber.example.net::10",  # a complete record has no recordSequenceNumber
    10: "invalid_msisdn",
    11: "wrong_column_count",
    12: "invalid_timestamp",
    13: "invalid_volume",
    14: "missing_id",
    15: "invalid_rating_group",
    16: "invalid_plmn",
    17: "not_utf8",
    18: "3405678912:pgw03,muc:1:10",
    19: "3405678901:pgw01.fra.example.net:1:10",  # line 2 again
}
HEADER = "servedIMSI,servedMSISDN,chargingID,nodeID,recordSequenceNumber,recordOpeningTime,duration,ratingGroup,datavolumeFBCUplink,datavolumeFBCDownlink"


def lines() -> list[bytes]:
    return fixture_lines(FIXTURE)


def parse_fixture(**options) -> list[UsageEvent | RejectedLine]:
    return parse_file(pgw.parse, FIXTURE, "pgw.csv", **options)


def test_every_data_line_is_an_event_or_a_rejection():
    items = parse_fixture()
    assert {item.line_no: outcome(item) for item in items} == EXPECTED
    assert [item.line_no for item in items] == sorted(EXPECTED)


def test_a_container_line_is_read_column_by_column():
    assert parse_fixture()[0] == UsageEvent(
        source_format="pgw", source_file="pgw.csv", line_no=2, record_id="3405678901:pgw01.fra.example.net:1:10", kind="data",
        msisdn="4915112345678", start=datetime(2024, 3, 1, 9, 0, 0, tzinfo=UTC), duration_s=3600, billsec_s=3600,
        disposition="ANSWERED", destination=None, bytes_up=1_500_000, bytes_down=48_000_000, rating_group=10, roaming_mcc=None)


def test_quantity_of_data_is_both_directions():
    assert parse_fixture()[1].quantity == 20_000 + 350_000


def test_roaming_comes_from_the_serving_plmn_else_the_uli_and_home_is_none():
    items = {item.line_no: item for item in parse_fixture()}
    assert [items[n].roaming_mcc for n in (2, 5, 6, 7, 8)] == [None, "232", "208", None, None]
    assert pgw.visited_mcc("262-01", compact_allowed=True) == "262"
    assert pgw.visited_mcc("310260", compact_allowed=True) == "310"
    with pytest.raises(ValueError):
        pgw.visited_mcc("26201-1A2B", compact_allowed=False)


def test_home_mcc_is_configurable():
    items = {item.line_no: item for item in parse_fixture(home_mcc="232")}
    assert (items[5].roaming_mcc, items[2].roaming_mcc) == (None, "262")


@pytest.mark.parametrize(("text", "expected"), [
    ("240301100000+0100", datetime(2024, 3, 1, 9, 0, tzinfo=UTC)),  # TS 32.298 TimeStamp
    ("240301100000-0530", datetime(2024, 3, 1, 15, 30, tzinfo=UTC)),
    ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),
    ("2024-03-01 10:00:00+02:00", datetime(2024, 3, 1, 8, 0, tzinfo=UTC)),
    ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),  # no offset: the parser's zone (UTC here)
])
def test_opening_time_spellings(text, expected):
    assert pgw.opening_time(text, SwitchClock("UTC")) == expected


@pytest.mark.parametrize("text", ["240230100000+0100", "2024-03-01T10:00:00", "2024-03-01T10:00:00.5", "1709287200", "", "2024-W09-5T10:00:00Z"])
def test_opening_time_refuses_what_it_cannot_place(text):
    with pytest.raises(ValueError):
        pgw.opening_time(text, SwitchClock("UTC"))


def test_rejections_say_why():
    rejected = {item.line_no: item for item in parse_fixture() if isinstance(item, RejectedLine)}
    assert rejected[10].reason == "servedMSISDN is empty (o2c guides data usage by MSISDN, not IMSI)"
    assert rejected[11].reason == "expected 12 columns as in the header, found 9"
    assert rejected[13].reason == "datavolumeFBCUplink '-100' is negative"
    assert rejected[14].reason == "chargingID is empty; it is part of the dedup key"
    assert rejected[15].reason == "ratingGroup 'RG10' is not a whole number"
    assert rejected[16].reason == "servingNodePLMN 'Telekom' is not MCC-MNC"
    assert "pgw-k\\xf6ln" in rejected[17].raw
    assert rejected[11].raw == lines()[10].decode().rstrip("\r\n")


def test_header_columns_are_found_by_name_in_any_order_and_case():
    data = [b"DATAVOLUMEFBCDOWNLINK,datavolumeFBCUplink,ratingGroup,duration,recordOpeningTime,recordSequenceNumber,nodeID,chargingID,servedMSISDN,apn\n",
            b"900,100,32,60,240301100000+0000,7,pgw9,42,015112345678,internet\n"]
    (event,) = pgw.parse(data, source_file="p")
    assert (event.record_id, event.msisdn, event.bytes_up, event.bytes_down, event.rating_group) == ("42:pgw9:7:32", "4915112345678", 100, 900, 32)


def test_numbers_in_the_key_are_rendered_canonically():
    data = [HEADER.encode() + b"\n", b",4915112345678,0042,pgw9,007,240301100000+0000,60,010,1,1\n"]
    (event,) = pgw.parse(data, source_file="p")
    assert event.record_id == "42:pgw9:7:10"


def test_a_header_without_the_required_columns_is_a_file_error():
    with pytest.raises(pgw.HeaderError, match="lacks required column"):
        list(pgw.parse([b"servedIMSI,servedMSISDN,chargingID\n", b"1,2,3\n"], source_file="p"))
    with pytest.raises(pgw.HeaderError, match="unreadable"):
        list(pgw.parse([b"served\xffIMSI,servedMSISDN\n"], source_file="p"))
    with pytest.raises(pgw.HeaderError, match="appears twice"):
        pgw.read_header(HEADER.split(",") + ["chargingID"])


def test_an_empty_file_yields_nothing():
    assert list(pgw.parse([], source_file="p")) == []
    assert list(pgw.parse([b"\n", b"\r\n"], source_file="p")) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=20), max_size=6))
def test_parsing_in_chunks_split_at_any_line_boundary_gives_the_same_result(cuts):
    """Later pieces of a file have no header line; the caller passes the header's fields."""
    whole = parse_fixture()
    source = lines()
    header = next(csv.reader([source[0].decode()]))
    bounds = sorted({1, len(source), *cuts})
    pieces = list(pgw.parse(source[:1], source_file="pgw.csv"))
    for start, end in zip(bounds, bounds[1:]):
        pieces += pgw.parse(source[start:end], source_file="pgw.csv", first_line_no=start + 1, header=header)
    assert pieces == whole
