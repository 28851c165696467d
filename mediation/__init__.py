"""Mediation: CDR files from switches and gateways -> normalised usage events (or rejected lines).

This package only reads and normalises; de-duplication, guiding, rating and storage are the
importer's job (services.usage_ingest). Public API:
- parse_file(path, fmt=None, ...) -> CdrFile, detect_format(first_lines) -> "asterisk" | "freeswitch" | "pgw"
- asterisk.parse, freeswitch.parse, pgw.parse: streaming parsers over raw byte lines
- UsageEvent, RejectedLine and the reason codes in mediation.records
Formats, columns and rules: docs/cdr-formats.md.
"""
from mediation.detect import FORMATS, CdrFile, UnknownFormat, detect_format, parse_file
from mediation.numbers import normalise_number
from mediation.pgw import HeaderError
from mediation.records import RejectedLine, UsageEvent

__all__ = ["FORMATS", "CdrFile", "HeaderError", "RejectedLine", "UnknownFormat", "UsageEvent", "detect_format",
           "normalise_number", "parse_file"]
