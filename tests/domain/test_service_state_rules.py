"""domain.service_state: the barring o2c's view implies for a product."""
from __future__ import annotations

import pytest

from domain.service_state import expected_barring, manual_reason, state_for_barring


@pytest.mark.parametrize(("status", "reason", "manual", "expected"), [
    ("active", None, False, "none"),
    ("suspended", "barred for arrears (outgoing)", False, "outgoing"),
    ("suspended", "barred for arrears (full)", False, "full"),
    ("suspended", "outgoing use barred: spending limit reached", False, "outgoing"),
    ("suspended", "suspended for arrears", False, "full"),  # no scope named: a full bar
    ("suspended", None, False, "full"),
    ("suspended", "barred for arrears (outgoing)", True, "full"),  # a staff suspension is a full bar over anything
    ("suspended", manual_reason("stolen"), True, "full"),
    ("terminated", None, False, None),
    ("pendingActive", None, False, None),
    ("terminated", None, True, None),
])
def test_expected_barring(status, reason, manual, expected):
    assert expected_barring(status, reason, manually_suspended=manual) == expected


def test_a_line_left_unbarred_is_active_and_a_barred_one_keeps_its_reason():
    assert state_for_barring("none", "barred for arrears (full)") == ("active", None)
    assert state_for_barring("outgoing", "barred for arrears (outgoing)") == ("suspended", "barred for arrears (outgoing)")
