"""How long traffic data may be kept (GUIDE §4; § 9 TDDDG, formerly § 97 TKG).

Traffic data kept for billing (who called which number, when, from where) may be stored at most six months
after the bill that used it was sent, and longer only while a complaint about that bill is open. A record of
usage that could not be rated is traffic data too: its source line goes six months after it was received.

What stays after erasure is what the invoice needs as a tax record (GoBD: 8 years for the invoice): the
product, usage type, period, units, amount and the tariff version that priced it. The called number, the
roaming country and the exact time go."""
from __future__ import annotations

import calendar
from datetime import datetime

from domain.billing_cycle import require_utc

TRAFFIC_DATA_MONTHS_AFTER_BILL = 6
REJECTED_LINE_MONTHS = 6

# A chargeback in these states is a complaint about a bill that is still open: its account's traffic data is kept.
OPEN_COMPLAINT_DISPUTE_STATES: frozenset[str] = frozenset({"warning_needs_response", "warning_under_review", "needs_response", "under_review"})


def months_before(instant: datetime, months: int) -> datetime:
    """The same UTC wall time `months` calendar months earlier; a day the earlier month lacks becomes its last
    day (31 August minus 6 months is 28 or 29 February), so the window is never shorter than the law's."""
    instant = require_utc(instant)
    index = instant.year * 12 + (instant.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    return instant.replace(year=year, month=month, day=min(instant.day, calendar.monthrange(year, month)[1]))


def billed_traffic_cutoff(as_of: datetime) -> datetime:
    """Traffic data of a bill sent at or before this instant is past its retention at `as_of`."""
    return months_before(as_of, TRAFFIC_DATA_MONTHS_AFTER_BILL)


def rejected_line_cutoff(as_of: datetime) -> datetime:
    """A rejected record received at or before this instant loses its source line at `as_of`."""
    return months_before(as_of, REJECTED_LINE_MONTHS)
