"""The bar kept under a staff suspension: each party (dunning, the hard spending cap) changes only its own."""
from __future__ import annotations

import pytest

from domain.service_state import SPENDING_REASON, purpose_of, underlying_after

NONE = ("none", None)
ARREARS_OUT = ("outgoing", "barred for arrears (outgoing)")
ARREARS_FULL = ("full", "barred for arrears (full)")
SPENDING = ("outgoing", SPENDING_REASON)
OTHER = ("full", "suspended for arrears")  # a bar of the older in-workflow dunning


@pytest.mark.parametrize(("current", "barring", "purpose", "after"), [
    # A spending cap bars: only over no bar or its own; never over dunning's (or another) bar.
    (NONE, "outgoing", "spending", SPENDING),
    (SPENDING, "outgoing", "spending", SPENDING),
    (ARREARS_FULL, "outgoing", "spending", ARREARS_FULL),
    (ARREARS_OUT, "outgoing", "spending", ARREARS_OUT),
    (OTHER, "outgoing", "spending", OTHER),
    # The cap's lift (next cycle) clears only its own bar.
    (SPENDING, "none", "spending", NONE),
    (ARREARS_FULL, "none", "spending", ARREARS_FULL),
    (NONE, "none", "spending", NONE),
    # Dunning bars over anything (its bar replaces the cap's, as on a line no one holds).
    (NONE, "full", "arrears", ARREARS_FULL),
    (SPENDING, "full", "arrears", ARREARS_FULL),
    (ARREARS_FULL, "outgoing", "arrears", ARREARS_OUT),
    # Dunning's lift clears its own bar, not the cap's.
    (ARREARS_FULL, "none", "arrears", NONE),
    (SPENDING, "none", "arrears", SPENDING),
])
def test_each_party_changes_only_its_own_bar_under_a_staff_suspension(current, barring, purpose, after):
    reason = None if barring == "none" else (SPENDING_REASON if purpose == "spending" else f"barred for arrears ({barring})")
    assert underlying_after(current, barring, reason, purpose) == after


def test_the_purpose_of_a_reason():
    assert purpose_of(SPENDING_REASON) == "spending"
    assert purpose_of("barred for arrears (full)") == "arrears"
    assert purpose_of("suspended for arrears") == "arrears"
