"""Runs in a separate (spawned) process: waits for the start signal, then issues invoices as fast as it can,
so several processes issue at the same moment against the same database."""
from __future__ import annotations


def issue_many(db_url: str, account_id: str, year: int, index: int, count: int, go, results) -> None:
    from tests.billing.support import at, issue

    go.wait(60)
    try:
        ids = [issue(db_url, account_id, at(year, k, minutes=index)).id for k in range(count)]
        results.put((index, ids, None))
    except BaseException as exc:  # reported to the test, which fails with it
        results.put((index, [], repr(exc)))
