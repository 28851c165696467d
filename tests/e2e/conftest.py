"""End-to-end: the real Temporal dev server, OSS simulator, mail sink, worker and API as separate
processes, on free loopback ports, against the `db_url` database. Driven only over HTTP."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from o2c_cli.stack import temporal_command

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout_s: float, what: str, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: a process exited with {process.returncode}: {process.args}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout_s} s")


@dataclass
class Stack:
    api_url: str
    oss_url: str
    temporal_address: str
    var_dir: Path
    admin_key: str = "dev-admin-key"


@pytest.fixture(scope="session")
def stack(db_url, tmp_path_factory) -> Iterator[Stack]:
    var_dir = tmp_path_factory.mktemp("var")
    ports = {name: free_port() for name in ("temporal", "ui", "api", "oss", "smtp", "sms")}
    env = dict(os.environ)
    env.update({
        "O2C_DATABASE_URL": db_url,
        "O2C_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
        "O2C_API_PORT": str(ports["api"]),
        "O2C_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['api']}",
        "O2C_OSS_SIM_PORT": str(ports["oss"]),
        "O2C_OSS_BASE_URL": f"http://127.0.0.1:{ports['oss']}",
        "O2C_OSS_CALLBACK_URL": f"http://127.0.0.1:{ports['api']}/tmf-api/serviceOrdering/v4/listener/serviceOrderStateChangeEvent",
        "O2C_OSS_CALLBACK_API_KEY": "dev-oss-key",
        "O2C_OSS_SIM_DELAY_S": "0.5",
        "O2C_SMTP_PORT": str(ports["smtp"]),
        # The demo dunning policy sends an SMS notice: the stack has its SMS gateway, as `o2c up` has.
        "O2C_SMS_SINK_PORT": str(ports["sms"]),
        "O2C_SMS_URL": f"http://127.0.0.1:{ports['sms']}",
        "O2C_VAR_DIR": str(var_dir),
    })
    logs = var_dir / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "wb")
        process = subprocess.Popen(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process

    o2c = [sys.executable, "-m", "o2c_cli.main"]
    temporal = temporal_command(var_dir, "127.0.0.1", ports["temporal"]) + ["--headless"]
    try:
        start("temporal", temporal)
        wait_until(lambda: socket.create_connection(("127.0.0.1", ports["temporal"]), timeout=0.5).close() or True, 60, "Temporal", processes)
        start("oss-sim", o2c + ["oss-sim"])
        start("mail-sink", o2c + ["mail-sink"])
        start("sms-sink", o2c + ["sms-sink"])
        start("worker", o2c + ["worker"])
        start("api", o2c + ["api"])
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{ports['oss']}/health").status_code == 200, 60, "OSS simulator", processes)
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{ports['api']}/health").status_code == 200, 90, "API", processes)
        yield Stack(api_url=f"http://127.0.0.1:{ports['api']}", oss_url=f"http://127.0.0.1:{ports['oss']}",
                    temporal_address=f"127.0.0.1:{ports['temporal']}", var_dir=var_dir)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
