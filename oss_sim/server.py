"""Blocking entry point: `python -c "from oss_sim.server import run; run('127.0.0.1', 8641)"`."""

import uvicorn

from oss_sim.app import create_app
from oss_sim.settings import SimSettings


def run(host: str, port: int, settings: SimSettings | None = None) -> None:
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
