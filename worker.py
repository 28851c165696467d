"""The o2c worker: hosts the order, billing-account and dunning workflows and their activities on one task queue."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.bill_run import BillRunActivities
from activities.billing import BillingActivities
from activities.invoice_issuer import render_in_processes
from activities.dunning import DunningActivities
from activities.orders import OrderActivities
from activities.refund_poll import RefundPollActivities
from activities.service_state import ServiceStateActivities
from activities.traffic_retention import TrafficRetentionActivities
from adapters.notify.email import SmtpNotifier
from adapters.notify.sms import HttpSmsSender
from adapters.oss.http_client import HttpOssClient
from adapters.payments.factory import build_gateway
from adapters.http.hub_dispatcher import run_hub_dispatcher
from adapters.temporal.client import WorkflowGateway, connect
from adapters.temporal.outbox_relay import OutboxRelay, workflow_handlers
from adapters.temporal.schedules import (ensure_bill_run_schedule, ensure_oss_reconciliation_schedule, ensure_refund_poll_schedule,
                                         ensure_traffic_retention_schedule)
from config.catalog_loader import load_catalog
from config.dunning_loader import load_dunning_config
from config.profiles import load_billing_profiles
from config.tariff_loader import check_offerings, load_tariff_book
from config.settings import Settings, get_settings
from persistence.db import migrate
from workflows.bill_run import BillRunCheckWorkflow
from workflows.billing_account import BillingAccountWorkflow
from workflows.dunning import DunningWorkflow
from workflows.order import OrderWorkflow
from workflows.refund_poll import RefundPollWorkflow
from workflows.service_state import OssReconciliationWorkflow, ServiceStateWorkflow
from workflows.traffic_retention import TrafficRetentionWorkflow

log = logging.getLogger("o2c.worker")
# Processes that render invoice PDFs (CPU-bound): one per core, at most 4.
RENDER_PROCESSES = min(4, os.cpu_count() or 1)

WORKFLOWS = [OrderWorkflow, BillingAccountWorkflow, BillRunCheckWorkflow, DunningWorkflow, ServiceStateWorkflow, OssReconciliationWorkflow,
             RefundPollWorkflow, TrafficRetentionWorkflow]


def activities_of(*holders: object) -> list:
    """The bound @activity.defn methods of each holder object."""
    found = []
    for holder in holders:
        for name in dir(type(holder)):
            member = getattr(type(holder), name)
            if callable(member) and hasattr(member, "__temporal_activity_definition"):
                found.append(getattr(holder, name))
    return found


def check_dunning_segments(profiles: dict, dunning) -> None:
    """Fail at start, not at the first overdue invoice: every profile's dunning segment has a policy, and a demo
    policy (durations in seconds, no §61 TKG periods) serves only demo profiles."""
    for name, profile in profiles.items():
        policy = dunning.policies.get(profile.dunning_segment)
        if policy is None:
            raise ValueError(f"billing profile {name!r}: dunning_segment {profile.dunning_segment!r} has no policy in {dunning.directory}")
        if policy.demo and not profile.demo:
            raise ValueError(f"billing profile {name!r} is not a demo profile but uses the demo dunning segment {profile.dunning_segment!r}")


def build_activities(settings: Settings, profiles: dict | None = None) -> list:
    catalog = load_catalog(settings.catalog_path)
    # Fail at start, not at the first usage record, when an offering names a tariff that does not exist.
    check_offerings(catalog, load_tariff_book())
    oss = HttpOssClient(settings.oss_base_url, callback_url=f"{settings.public_base_url}/tmf-api/serviceOrdering/v4/listener/serviceOrderStateChangeEvent")
    gateway = build_gateway(settings.stripe_api_key, settings.stripe_api_base, settings.sepa_settle_delay_s)
    notifier = SmtpNotifier(settings.smtp_host, settings.smtp_port, settings.mail_from)
    profiles = profiles or load_billing_profiles()
    dunning = load_dunning_config()
    check_dunning_segments(profiles, dunning)
    return activities_of(
        OrderActivities(settings.database_url, catalog, oss, settings.task_queue),
        BillingActivities(settings, catalog, profiles, gateway, oss, notifier),
        BillRunActivities(settings.database_url, profiles),
        DunningActivities(settings, dunning, gateway, oss, notifier, sms=HttpSmsSender(settings.sms_url) if settings.sms_url else None),
        ServiceStateActivities(settings.database_url, oss),
        RefundPollActivities(settings.database_url, gateway),
        TrafficRetentionActivities(settings.database_url),
    )


def build_worker(client: Client, settings: Settings, executor: ThreadPoolExecutor, profiles: dict | None = None) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(settings, profiles),
        activity_executor=executor,
        max_concurrent_activities=32,
        max_cached_workflows=settings.worker_max_cached_workflows,
        # Let in-flight activities (an OSS call, a charge) finish on shutdown instead of being cancelled mid-way.
        graceful_shutdown_timeout=timedelta(seconds=20),
    )


async def run_worker(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    migrate(settings.database_url)
    render_in_processes(RENDER_PROCESSES)  # PDFs off the worker's GIL (activities.invoice_issuer.seal_documents)
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    if await ensure_bill_run_schedule(client, settings.task_queue):
        log.info("created the nightly bill-run check schedule")
    if await ensure_oss_reconciliation_schedule(client, settings.task_queue):
        log.info("created the nightly OSS reconciliation schedule")
    if await ensure_refund_poll_schedule(client, settings.task_queue):
        log.info("created the hourly refund poll schedule")
    if await ensure_traffic_retention_schedule(client, settings.task_queue):
        log.info("created the nightly traffic data retention schedule")
    with ThreadPoolExecutor(max_workers=32) as executor:
        worker = build_worker(client, settings, executor)
        # SIGTERM (docker stop, Kubernetes, `o2c up`) gets the same graceful shutdown as Ctrl-C:
        # stop polling, give in-flight activities graceful_shutdown_timeout to finish.
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(worker.shutdown()))
        # Ingestion reports spending-limit crossings through the outbox; the worker delivers them.
        relay = OutboxRelay(settings.database_url, workflow_handlers(WorkflowGateway(client, settings.task_queue)))
        stop_relay = asyncio.Event()
        relay_task = asyncio.create_task(relay.run(stop_relay))
        # Events for the CRM's listeners (TMF hub) go out from the same process.
        hub_task = asyncio.create_task(run_hub_dispatcher(settings.database_url, stop_relay))
        log.info("worker polling task queue %s on %s", settings.task_queue, settings.temporal_address)
        try:
            await worker.run()
        finally:
            stop_relay.set()
            await relay_task
            await hub_task


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(run_worker())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
