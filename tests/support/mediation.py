"""Reading the parser fixtures in tests/mediation/data: shared by the per-format parser tests."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from mediation.records import RejectedLine, UsageEvent

Parse = Callable[..., Iterable[UsageEvent | RejectedLine]]


def fixture_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def parse_file(parse: Parse, path: Path, source_file: str, **options) -> list[UsageEvent | RejectedLine]:
    return list(parse(fixture_lines(path), source_file=source_file, **options))


def outcome(item: UsageEvent | RejectedLine) -> str:
    """The record id of an event, the reason code of a rejection."""
    return item.record_id if isinstance(item, UsageEvent) else item.reason_code


def parse_in_chunks(parse: Parse, source: list[bytes], cuts: Iterable[int], source_file: str) -> list[UsageEvent | RejectedLine]:
    """Parse `source` piece by piece, cut at the given line boundaries, numbering lines as in the whole file."""
    bounds = sorted({0, len(source), *cuts})
    pieces: list[UsageEvent | RejectedLine] = []
    for start, end in zip(bounds, bounds[1:]):
        pieces += parse(source[start:end], source_file=source_file, first_line_no=start + 1)
    return pieces
