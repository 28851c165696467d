from pathlib import Path

import pytest

from mediation import CdrFile, RejectedLine, UnknownFormat, UsageEvent, detect_format, parse_file
from mediation.pgw import HeaderError

DATA = Path(__file__).parent / "data"
FIXTURES = {"asterisk": DATA / "asterisk_master.csv", "freeswitch": DATA / "freeswitch_master.csv", "pgw": DATA / "pgw_data.csv"}


@pytest.mark.parametrize("fmt", sorted(FIXTURES))
def test_each_fixture_is_detected_from_its_first_lines(fmt):
    assert detect_format(FIXTURES[fmt].read_bytes().splitlines(keepends=True)[:20]) == fmt


@pytest.mark.parametrize("fmt", ["asterisk", "freeswitch"])
def test_detection_survives_malformed_lines_at_the_top(fmt):
    lines = FIXTURES[fmt].read_bytes().splitlines(keepends=True)
    junk = [b"\n", b"\xff\xfe garbage\n", b'"unterminated,\n', b"a,b,c\n"]
    assert detect_format(junk + lines[:3]) == fmt


def test_a_pgw_header_is_recognised_whatever_its_case_and_byte_order_mark():
    assert detect_format([b"\xef\xbb\xbfSERVEDIMSI,ServedMSISDN,chargingid\n"]) == "pgw"


def test_an_unknown_file_gets_an_error_that_says_what_was_seen_and_what_to_do():
    with pytest.raises(UnknownFormat) as caught:
        detect_format([b"date,from,to,seconds\n", b"2024-03-01,4915112345678,4930123456,60\n"])
    message = str(caught.value)
    assert "the first has 4 columns: 'date,from,to,seconds'" in message
    assert "name the format explicitly (asterisk, freeswitch, pgw)" in message


def test_nothing_to_detect_from_is_an_error_for_detect_format():
    with pytest.raises(UnknownFormat, match="empty or blank"):
        detect_format([b"\n", b"  \r\n"])


@pytest.mark.parametrize("fmt", sorted(FIXTURES))
def test_parse_file_detects_streams_and_closes(fmt):
    cdrs = parse_file(FIXTURES[fmt])
    assert isinstance(cdrs, CdrFile) and cdrs.format == fmt
    items = list(cdrs)
    assert any(isinstance(item, UsageEvent) for item in items) and any(isinstance(item, RejectedLine) for item in items)
    assert all(item.source_file == str(FIXTURES[fmt]) and item.source_format == fmt for item in items)
    assert cdrs._handle.closed


def test_parse_file_reads_past_the_detection_sample(tmp_path):
    line = FIXTURES["asterisk"].read_bytes().splitlines(keepends=True)[0]
    path = tmp_path / "Master.csv"
    path.write_bytes(b"".join(line.replace(b"1709287200.1", f"id-{n}".encode()) for n in range(50)))
    with parse_file(path) as cdrs:
        assert [item.record_id for item in cdrs] == [f"id-{n}" for n in range(50)]


def test_parse_file_with_a_named_format_and_options(tmp_path):
    with parse_file(FIXTURES["asterisk"], "asterisk", timezone="Europe/Berlin") as cdrs:
        first = next(iter(cdrs))
    assert first.start.hour == 9  # 10:00 CET


def test_parse_file_with_the_wrong_named_format_rejects_every_line_instead_of_guessing():
    with parse_file(FIXTURES["asterisk"], "freeswitch") as cdrs:
        items = list(cdrs)
    assert {item.reason_code for item in items} <= {"wrong_column_count", "not_utf8", "malformed_csv"}
    assert len(items) == 19  # every non-blank line, none lost


def test_parse_file_refuses_an_unknown_format_name_and_undetectable_content(tmp_path):
    with pytest.raises(UnknownFormat, match="unknown CDR format 'cisco'"):
        parse_file(FIXTURES["asterisk"], "cisco")
    path = tmp_path / "odd.csv"
    path.write_bytes(b"hello,world\n")
    with pytest.raises(UnknownFormat):
        parse_file(path)


def test_an_empty_file_is_no_error_and_has_no_records(tmp_path):
    path = tmp_path / "Master.csv"
    path.write_bytes(b"")
    with parse_file(path) as cdrs:
        assert cdrs.format is None
        assert list(cdrs) == []


def test_a_pgw_file_with_a_broken_header_fails_as_a_whole(tmp_path):
    path = tmp_path / "pgw.csv"
    path.write_bytes(b"servedIMSI,servedMSISDN,chargingID\n262011234567890,4915112345678,42\n")
    with parse_file(path) as cdrs:
        assert cdrs.format == "pgw"
        with pytest.raises(HeaderError):
            list(cdrs)
