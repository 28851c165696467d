from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mediation import asterisk
from mediation.records import RejectedLine, UsageEvent
from tests.support.mediation import fixture_lines, outcome, parse_file, parse_in_chunks

FIXTURE = Path(__file__).parent / "data" / "asterisk_master.csv"
UTC = timezone.utc

# What each line of the fixture must become: a record id (an event) or a reason code.
EXPECTED = {
    1: "1709287200.1",
    2: "1709287500.2",
    3: "1709287800.3",
    4: "1709288100.4",
    6: "1709288400.6",
    7: "wrong_column_count",
    8: "invalid_timestamp",
    9: "not_utf8",
    10: "1709287200.1",  # line 1 again: the parser yields both, the importer de-duplicates
    11: "invalid_duration",
    12: "invalid_duration",
    13: "missing_id",
    14: "unknown_disposition",
    15: "malformed_csv",
    16: "invalid_msisdn",
    17: "1709291400.17",
    18: "invalid_timestamp",
    19: "invalid_duration",
    20: "1709292300.20",
}


def lines() -> list[bytes]:
    return fixture_lines(FIXTURE)


def parse_fixture(**options) -> list[UsageEvent | RejectedLine]:
    return parse_file(asterisk.parse, FIXTURE, "Master.csv", **options)


def test_every_line_is_an_event_or_a_rejection_and_the_blank_line_is_skipped():
    items = parse_fixture()
    assert {item.line_no: outcome(item) for item in items} == EXPECTED
    assert [item.line_no for item in items] == sorted(EXPECTED)  # one item per line, in file order


def test_an_answered_call_is_read_column_by_column():
    first = parse_fixture()[0]
    assert first == UsageEvent(
        source_format="asterisk", source_file="Master.csv", line_no=1, record_id="1709287200.1", kind="voice",
        msisdn="4915112345678", start=datetime(2024, 3, 1, 10, 0, 0, tzinfo=UTC), duration_s=127, billsec_s=120,
        disposition="ANSWERED", destination="4930123456", bytes_up=0, bytes_down=0, rating_group=None, roaming_mcc=None)
    assert first.start.tzinfo is UTC
    assert first.quantity == 120  # billable seconds, not the ringing time


def test_a_quoted_comma_in_clid_does_not_shift_columns_and_numbers_are_normalised():
    items = {item.line_no: item for item in parse_fixture()}
    second = items[2]
    assert isinstance(second, UsageEvent)
    assert (second.msisdn, second.destination) == ("4915112345679", "4989123456")  # 0151... and +49...
    assert (second.duration_s, second.billsec_s, second.disposition) == (63, 60, "ANSWERED")
    assert (items[4].msisdn, items[6].msisdn) == ("491701234567", "491701234567")  # 0049... and +49...


def test_dispositions_are_normalised():
    items = {item.line_no: item for item in parse_fixture()}
    assert [items[n].disposition for n in (1, 3, 4, 6, 17)] == ["ANSWERED", "NO_ANSWER", "BUSY", "FAILED", "CONGESTION"]
    assert items[3].billsec_s == 0


def test_seventeen_columns_without_userfield_are_read_and_a_crlf_line_too():
    items = {item.line_no: item for item in parse_fixture()}
    assert isinstance(items[6], UsageEvent) and items[6].record_id == "1709288400.6"
    assert isinstance(items[17], UsageEvent) and items[17].record_id == "1709291400.17"  # no "\r" left in the last field


def test_a_short_code_destination_is_kept_as_none_not_rejected():
    event = {item.line_no: item for item in parse_fixture()}[17]
    assert event.destination is None
    assert event.msisdn == "4915112345678"


def test_rejections_keep_the_source_line_and_say_why():
    rejected = {item.line_no: item for item in parse_fixture() if isinstance(item, RejectedLine)}
    source = lines()
    for line_no, item in rejected.items():
        assert item.source_format == "asterisk" and item.source_file == "Master.csv"
        assert not item.raw.endswith(("\n", "\r"))
        if line_no != 9:
            assert item.raw == source[line_no - 1].decode().rstrip("\r\n")
    assert rejected[7].reason == "expected 18 columns (17 without userfield), found 12"
    assert "'2024-02-30 10:00:00'" in rejected[8].reason and "day is out of range" in rejected[8].reason
    assert rejected[11].reason == "duration '-5' is negative"
    assert rejected[12].reason == "billsec '6O' is not a whole number"
    assert rejected[13].reason == "uniqueid is empty; it is the dedup key"
    assert rejected[14].reason == "disposition 'UNKNOWN' is not a known call outcome"
    assert rejected[16].reason.startswith("src 'anonymous' is not an E.164 number")
    assert rejected[18].reason.startswith("answer: '2024-03-01T11:15:02'")
    assert rejected[19].reason == "billsec 62 is larger than duration 60"


def test_a_non_utf8_line_is_kept_with_its_bytes_escaped():
    rejected = {item.line_no: item for item in parse_fixture() if isinstance(item, RejectedLine)}
    assert rejected[9].reason == "line is not valid UTF-8: byte 0xfc at offset 52"
    assert '"""J\\xfcrgen Gro\\xdf"" <4915112345678>"' in rejected[9].raw
    assert '"1709289300.9"' in rejected[9].raw  # the rest of the line is intact
    # The escapes are reversible: the stored text gives back the switch's bytes.
    assert rejected[9].raw.encode("ascii").decode("unicode_escape").encode("latin-1") == lines()[8].rstrip(b"\n")


def test_switch_local_time_is_converted_to_utc():
    items = {item.line_no: item for item in parse_fixture(timezone="Europe/Berlin")}
    assert items[1].start == datetime(2024, 3, 1, 9, 0, 0, tzinfo=UTC)  # CET, UTC+1
    assert items[20].start == datetime(2024, 3, 31, 21, 59, 30, tzinfo=UTC)  # CEST after the March change, UTC+2


def _line(start: str, uniqueid: str = "1711846800.1") -> bytes:
    return (f'"","4915112345678","4930123456","from-internal","""Hans"" <4915112345678>","PJSIP/a-1","PJSIP/b-2","Dial","x",'
            f'"{start}","{start}","{start}",60,60,"ANSWERED","DOCUMENTATION","{uniqueid}",""\n').encode()


def test_a_wall_clock_time_skipped_by_dst_is_rejected_and_an_ambiguous_one_is_read_as_the_first():
    skipped, ambiguous = asterisk.parse([_line("2024-03-31 02:30:00"), _line("2024-10-27 02:30:00")], source_file="m", timezone="Europe/Berlin")
    assert isinstance(skipped, RejectedLine) and skipped.reason_code == "invalid_timestamp"
    assert "does not exist in Europe/Berlin" in skipped.reason
    assert ambiguous.start == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)  # 02:30 CEST, the first 02:30


def test_country_code_and_line_numbers_are_configurable():
    line = _line("2024-03-01 10:00:00").replace(b'"4915112345678"', b'"06641234567"', 1)
    (event,) = asterisk.parse([line], source_file="m", country_code="43", first_line_no=500)
    assert (event.msisdn, event.line_no) == ("436641234567", 500)


def test_bad_settings_fail_before_any_line_is_read():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        asterisk.parse(iter(()), source_file="m", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="country code"):
        asterisk.parse(iter(()), source_file="m", country_code="+49")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=20), max_size=6))
def test_parsing_in_chunks_split_at_any_line_boundary_gives_the_same_result(cuts):
    whole = parse_fixture()
    source = lines()
    assert parse_in_chunks(asterisk.parse, source, cuts, "Master.csv") == whole


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_never_raise_and_give_at_most_one_item_per_line(raw_lines):
    items = list(asterisk.parse(raw_lines, source_file="fuzz"))
    numbers = [item.line_no for item in items]
    assert numbers == sorted(set(numbers))
    assert all(1 <= n <= len(raw_lines) for n in numbers)
    for item in items:
        if isinstance(item, RejectedLine):
            assert item.reason_code and item.reason
