"""Workflow tests: the time-skipping Temporal test server, the real OSS simulator over HTTP, a real SMTP
server, and the real activities on the `db_url` database. Each test gets its own task queue and worker."""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import httpx
import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from adapters.notify.mail_sink import MailSink
from config.settings import Settings
from oss_sim.app import create_app as create_oss_sim
from oss_sim.settings import SimSettings
from tests.support.servers import ServerThread
from worker import build_worker
from workflows.messages import SEARCH_ATTRIBUTES


@pytest.fixture
async def ts_env(temporal_test_server) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=temporal_test_server, data_converter=pydantic_data_converter)
    # One server per test (it starts in ~0.1 s): a workflow left waiting by one test would stop the
    # server from skipping time in the next. The test server knows no custom search attributes; without them an upsert retries forever (GUIDE §1).
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace="default", search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in SEARCH_ATTRIBUTES})
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def oss_sim() -> Iterator[ServerThread]:
    # No callback URL: workflow tests deliver OSS completion by polling or by an explicit signal.
    with ServerThread(create_oss_sim(SimSettings(callback_url=None, default_delay_s=0.0))) as server:
        yield server


@pytest.fixture(scope="session")
def mail_sink(tmp_path_factory) -> Iterator[MailSink]:
    sink = MailSink(tmp_path_factory.mktemp("mail"), port=0)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
async def oss_http(oss_sim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=oss_sim.url) as client:
        # Each backend's number pool starts at the same MSISDN; the simulator must not remember the other's lines.
        await client.post("/sim/reset")
        yield client
        await client.delete("/sim/rules")


@pytest.fixture
def make_settings(db_url, oss_sim, mail_sink):
    def make(**overrides) -> Settings:
        values = dict(database_url=db_url, oss_base_url=oss_sim.url, smtp_port=mail_sink.port, task_queue=f"tq-{uuid.uuid4()}")
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def running_worker(ts_env):
    """Runs a worker for the block. Billing-account workflows it leaves running are terminated at the end:
    the time-skipping server will not skip time while a workflow waits for a worker that is gone."""

    @asynccontextmanager
    async def run(settings: Settings, profiles: dict | None = None):
        with ThreadPoolExecutor(max_workers=32) as executor:
            try:
                async with build_worker(ts_env.client, settings, executor, profiles):
                    yield ts_env.client
            finally:
                await _terminate_account_workflows(ts_env.client, settings.database_url)

    return run


async def _terminate_account_workflows(client, db_url: str) -> None:
    from sqlmodel import select

    from persistence.db import session_scope
    from persistence.tables import BillingAccount
    from workflows.messages import billing_account_workflow_id

    with session_scope(db_url) as session:
        ids = [billing_account_workflow_id(a) for a in session.exec(select(BillingAccount.id))]
    for workflow_id in ids:
        try:
            await client.get_workflow_handle(workflow_id).terminate(reason="test finished")
        except Exception:  # already finished or never started
            pass
