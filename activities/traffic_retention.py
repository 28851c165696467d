"""The nightly traffic data retention run's activities (services.traffic_retention has the rules). Each call does a
bounded number of chunks, so a first run over years of data is many short calls, never one that times out; the
workflow calls again with the same run id until the run is done."""
from __future__ import annotations

from datetime import datetime

from sqlmodel import Session
from temporalio import activity

from persistence.tables import BusinessEvent
from services.query import in_transaction
from services.traffic_retention import TrafficRetentionReport, erase_expired_traffic_data

CHUNKS_PER_CALL = 50


class TrafficRetentionActivities:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    @activity.defn(name="erase_expired_traffic_data")
    def erase_expired_traffic_data(self, as_of: datetime, run_id: str) -> TrafficRetentionReport:
        """Goes on with run `run_id` (started at the first call). Idempotent: only rows not erased yet are touched,
        and the counts are written with the chunks they count."""
        return erase_expired_traffic_data(self.db_url, as_of, run_id=run_id, max_chunks=CHUNKS_PER_CALL)

    @activity.defn(name="record_traffic_retention_run")
    def record_traffic_retention_run(self, report: TrafficRetentionReport) -> None:
        """The customer-story event of a finished run that erased or kept something (the run's row has every run)."""
        if report.usage_records_erased or report.rejected_lines_erased or report.held_accounts:
            in_transaction(self.db_url, record_run_event, report)


def record_run_event(session: Session, report: TrafficRetentionReport) -> None:
    held = f"; kept for {len(report.held_accounts)} accounts with an open complaint" if report.held_accounts else ""
    session.add(BusinessEvent(kind="traffic_data.erased", at=report.as_of, data=report.model_dump(mode="json"),
                              message=(f"Traffic data retention: {report.usage_records_erased} usage records billed on or before "
                                       f"{report.billed_before:%Y-%m-%d} and {report.rejected_lines_erased} rejected lines received on or before "
                                       f"{report.rejected_before:%Y-%m-%d} erased{held}")))
