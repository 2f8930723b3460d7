"""``GET /dashboard``: the page, its JSON data and its static assets (vendored Chart.js), served by the server.

The page and its script come from ``monitor/static/`` as they are in the package: nothing to build. The data
is ``monitor.dashboard.dashboard_data`` for every model over ``MODELYARD_MONITOR_WINDOW``: traffic from the
prediction log, drift from the monitor (``serve/monitoring.py``), alerts and alias events from the registry.
"""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from modelyard.monitor.dashboard import dashboard_data, dashboard_html, static_dir
from modelyard.serve.http import json_response
from modelyard.serve.monitoring import server_scheduler
from modelyard.serve.schemas import errors
from modelyard.serve.state import server_state

PAGE = "/dashboard"
DATA = "/dashboard/data"
STATIC = "/dashboard/static"

router = APIRouter(tags=["dashboard"])


@router.get(PAGE, response_class=HTMLResponse, summary="The dashboard page (charts of every model)")
async def page() -> HTMLResponse:
    return HTMLResponse(dashboard_html(DATA, STATIC), headers={"Cache-Control": "no-cache"})


@router.get(DATA, responses=errors(503), summary="What the dashboard draws, as JSON")
async def data(request: Request) -> Response:
    registry = server_state(request).registry
    monitor = server_scheduler(request)

    def build() -> dict[str, object]:
        return dashboard_data(registry, window=monitor.window, drift=monitor.drift())

    return json_response(await anyio.to_thread.run_sync(build))


def install(app: FastAPI) -> None:
    """Add the dashboard's routes and its static files to ``app``."""
    app.include_router(router)
    app.mount(STATIC, StaticFiles(directory=static_dir()), name="dashboard-static")
