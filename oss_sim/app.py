"""FastAPI app factory for the OSS simulator (a TMF641 Service Ordering stand-in)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from oss_sim import routes_admin, routes_inventory, routes_tmf
from oss_sim.callbacks import CallbackSender
from oss_sim.errors import SimError, sim_error_handler
from oss_sim.processing import OrderProcessor
from oss_sim.settings import SimSettings
from oss_sim.state import SimState


def create_app(settings: SimSettings | None = None) -> FastAPI:
    settings = settings or SimSettings()
    state = SimState()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        # Pending completions and callback retries must not outlive the server.
        state.stop_background_work()

    app = FastAPI(title="o2c OSS simulator (TMF641 subset)", lifespan=lifespan)
    app.state.sim_settings = settings
    app.state.sim_state = state
    app.state.sim_processor = OrderProcessor(state, settings, CallbackSender(settings))
    app.add_exception_handler(SimError, sim_error_handler)
    app.include_router(routes_tmf.router)
    app.include_router(routes_inventory.router)
    app.include_router(routes_admin.router)
    return app
