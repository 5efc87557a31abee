"""The baseline of ``bench/detector.py``: a bare Litestar route at the detector's path that answers 200
and does no work, served by uvicorn exactly as every service is (``restock_common.service.serve``), so
the difference between the two is the detector's own work. Listens on ``RESTOCK_HTTP_PORT``.

It lives in a sub-folder because ``make bench`` runs every ``bench/*.py``, and this one never ends.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, post

from restock_common.service import health_routes, serve
from restock_common.settings import Settings
from restock_common.telemetry import setup_logging

ROUTE = "/webhooks/shopify"
FALLBACK_PORT = 8101


@post(ROUTE, status_code=200)
async def receive(request: Request[Any, Any, Any]) -> dict[str, str]:
    # Receiving the body is HTTP cost the detector pays too, not detector work.
    await request.body()
    return {"status": "ok"}


def create_app() -> Litestar:
    """The bare app: the health routes every service has, and the webhook route."""
    return Litestar(route_handlers=[*health_routes({}), receive], logging_config=None)


def main() -> None:
    settings = Settings()
    setup_logging("bench-bare-route")
    serve(create_app(), host=settings.http_host, port=settings.http_port or FALLBACK_PORT)


if __name__ == "__main__":
    main()
