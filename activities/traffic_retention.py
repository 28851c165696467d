"""The nightly traffic data retention run's activity: erase what is past retention and record the run
(services.traffic_retention has the rules)."""
from __future__ import annotations

from datetime import datetime

from sqlmodel import Session
from temporalio import activity

from persistence.tables import BusinessEvent
from services.query import in_transaction
from services.traffic_retention import TrafficRetentionReport, erase_expired_traffic_data


class TrafficRetentionActivities:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    @activity.defn(name="erase_expired_traffic_data")
    def erase_expired_traffic_data(self, as_of: datetime) -> TrafficRetentionReport:
        """Idempotent: a retried or repeated run erases only rows not erased yet, so it finds nothing more."""
        report = erase_expired_traffic_data(self.db_url, as_of)
        if report.usage_records_erased or report.rejected_lines_erased or report.held_accounts:
            in_transaction(self.db_url, _record_report, report)
        return report


def _record_report(session: Session, report: TrafficRetentionReport) -> None:
    held = f"; kept for {len(report.held_accounts)} accounts with an open chargeback" if report.held_accounts else ""
    session.add(BusinessEvent(kind="traffic_data.erased", at=report.as_of, data=report.model_dump(mode="json"),
                              message=(f"Traffic data retention: {report.usage_records_erased} usage records billed on or before "
                                       f"{report.billed_before:%Y-%m-%d} and {report.rejected_lines_erased} rejected lines received on or before "
                                       f"{report.rejected_before:%Y-%m-%d} erased{held}")))
