"""Ending a short-lived command that used a Temporal client.

The client's Rust runtime keeps threads of its own; when CPython finalizes while one of them still holds a
thread state, the process aborts with "Fatal Python error: PyGILState_Release" (temporalio/sdk-python#300,
seen here in CI for `o2c poll-refunds`). The command's work is done and printed by then, so it leaves
without interpreter teardown, after flushing what it wrote."""
from __future__ import annotations

import os
import sys


def exit_after_temporal(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
