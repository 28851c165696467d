"""Browser tests of the staff console: the real app served by uvicorn on a free loopback port (in a
thread), a real Temporal dev server (the API tests' fixture), and Debian's Chromium driven by Playwright.
Nothing is downloaded: Playwright is pointed at /usr/bin/chromium (or $O2C_CHROMIUM). A missing
browser fails the tests with a message saying how to install it; it never skips them."""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn

from api.app import create_app
from tests.api.conftest import api_settings, temporal_client, temporal_env  # noqa: F401 - shared fixtures

CHROMIUM = os.environ.get("O2C_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("O2C_TEST_ARTIFACTS", Path(__file__).resolve().parent / "artifacts"))
# As root in a container Chromium needs --no-sandbox; the rest keep it off this machine's closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(db_url, temporal_env) -> Iterator[str]:  # noqa: F811
    """The API and console at http://127.0.0.1:<port>; the app connects to the Temporal dev server itself."""
    target = temporal_env.client.service_client.config.target_host
    app = create_app(api_settings(db_url, temporal_address=target))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    ready = threading.Event()
    for _ in range(400):  # until uvicorn says it listens (bounded; it takes a moment)
        if server.started:
            ready.set()
            break
        thread.join(0.025)
    if not ready.is_set():
        server.should_exit = True
        pytest.fail("uvicorn did not start the console app")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: the console browser tests need it "
                    "(Debian: `apt-get install -y chromium`, or set O2C_CHROMIUM to a Chromium binary). "
                    "Playwright must not download its own browser here.")
    return CHROMIUM


@pytest.fixture
async def page(chromium_path) -> AsyncIterator:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the console browser tests need the PyPI package playwright (its Python API only; no `playwright install`)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        try:
            yield page
        finally:
            await context.close()
            await browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def service_stack(db_url, temporal_env) -> AsyncIterator[tuple[str, str]]:  # noqa: F811
    """(console base URL, OSS simulator URL) with a worker: an app of its own on a task queue of its own, a
    worker polling it with the real activities, and the OSS simulator, so console actions run end to end.
    (The shared live_server's queue has no worker on purpose: its tests read pending workflows.)"""
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from oss_sim.app import create_app as create_oss_sim
    from oss_sim.settings import SimSettings
    from tests.support.servers import ServerThread
    from worker import build_worker

    from config.settings import Settings

    target = temporal_env.client.service_client.config.target_host
    with ServerThread(create_oss_sim(SimSettings(callback_url=None, default_delay_s=0.0))) as oss:
        settings = Settings(database_url=db_url, temporal_address=target, task_queue=f"console-actions-{uuid.uuid4()}", oss_base_url=oss.url)
        with ServerThread(create_app(settings)) as console, ThreadPoolExecutor(max_workers=8) as executor:
            async with build_worker(temporal_env.client, settings, executor):
                yield console.url, oss.url
