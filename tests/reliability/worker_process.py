"""A real o2c worker process for the reliability tests: the worker's own workflows and activities
(worker.WORKFLOWS, worker.build_activities, configured from O2C_* environment variables like `o2c worker`) plus
the ChargeProbeWorkflow, without sticky
workflow caching so a killed worker's workflows move on at once."""
from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from temporalio.worker import Worker  # noqa: E402

from adapters.temporal.client import connect  # noqa: E402
from charge_probe import ChargeProbeWorkflow  # noqa: E402
from config.settings import get_settings  # noqa: E402
from worker import WORKFLOWS, build_activities  # noqa: E402


async def main() -> None:
    settings = get_settings()
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    with ThreadPoolExecutor(max_workers=8) as executor:
        worker = Worker(client, task_queue=settings.task_queue, workflows=[*WORKFLOWS, ChargeProbeWorkflow], activities=build_activities(settings),
                        activity_executor=executor, max_cached_workflows=0)
        print("worker polling", settings.task_queue, flush=True)
        await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
