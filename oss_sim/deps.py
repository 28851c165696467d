"""FastAPI dependencies: the per-app simulator objects that routes work on."""

from typing import Annotated

from fastapi import Depends, Request

from oss_sim.processing import OrderProcessor
from oss_sim.state import SimState

TMF641_BASE_PATH = "/tmf-api/serviceOrdering/v4"


def get_state(request: Request) -> SimState:
    return request.app.state.sim_state


def get_processor(request: Request) -> OrderProcessor:
    return request.app.state.sim_processor


def tmf_base_href(request: Request) -> str:
    """Absolute TMF641 base URL as the caller sees this server, for `href` fields."""
    return str(request.base_url).rstrip("/") + TMF641_BASE_PATH


StateDep = Annotated[SimState, Depends(get_state)]
ProcessorDep = Annotated[OrderProcessor, Depends(get_processor)]
BaseHrefDep = Annotated[str, Depends(tmf_base_href)]
