"""One place for timestamps so every document uses the same UTC ISO-8601 form."""

from datetime import UTC, datetime


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
