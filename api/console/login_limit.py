"""The console's sign-in rate limit: after MAX_FAILURES failed sign-ins for one username from one client
address within WINDOW, further attempts are refused (429, Retry-After) until the oldest of them leaves the
window; the password is not even checked meanwhile. A successful sign-in clears the pair's failures.

The failures are rows in the database (console_login_failure), not process memory: every API process
behind a load balancer counts the same failures, and a restart does not reset the count. Keyed by user
and address, one attacker cannot lock a user out from everywhere, nor guess many users from one address
faster than MAX_FAILURES per user."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlmodel import Session, col, delete, select

from persistence.tables import ConsoleLoginFailure

MAX_FAILURES = 5
WINDOW = timedelta(minutes=15)
ERROR_CODE = "too_many_login_attempts"


def _key(username: str) -> str:
    return username.strip().lower()[:200]


def retry_after(session: Session, username: str, client_ip: str, now: datetime) -> int | None:
    """Seconds until the next attempt may be made, or None when this one may go ahead."""
    recent = list(session.exec(select(ConsoleLoginFailure.at).where(
        ConsoleLoginFailure.username == _key(username), ConsoleLoginFailure.client_ip == client_ip, ConsoleLoginFailure.at > now - WINDOW,
    ).order_by(col(ConsoleLoginFailure.at).desc()).limit(MAX_FAILURES)))
    if len(recent) < MAX_FAILURES:
        return None
    return max(1, math.ceil((recent[-1] + WINDOW - now).total_seconds()))


def record_failure(session: Session, username: str, client_ip: str, now: datetime) -> None:
    session.add(ConsoleLoginFailure(username=_key(username), client_ip=client_ip, at=now))
    # Old rows are of no use: drop this pair's rows that left the window, so the table stays small.
    session.exec(delete(ConsoleLoginFailure).where(ConsoleLoginFailure.username == _key(username), ConsoleLoginFailure.client_ip == client_ip,
                                                  ConsoleLoginFailure.at <= now - WINDOW))


def clear(session: Session, username: str, client_ip: str) -> None:
    session.exec(delete(ConsoleLoginFailure).where(ConsoleLoginFailure.username == _key(username), ConsoleLoginFailure.client_ip == client_ip))
