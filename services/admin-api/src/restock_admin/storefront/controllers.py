"""``/proxy``: what Shopify's App Proxy forwards from the storefront (``/apps/restock/...`` on the shop).

Every route is guarded by the App Proxy signature and its timestamp; bodies are capped at 64 KiB.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, Router, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException, NotFoundException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import JSONBody, QueryParameter

from restock_admin.storefront.proxy_auth import ProxyVerdict, check_proxy_request
from restock_admin.storefront.schemas import SubscribeRequest, SubscriptionOut
from restock_admin.storefront.services import SignupService, UnknownShop
from restock_admin.storefront.signup import SignupRejected

MAX_BODY_BYTES = 64 * 1024

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


def app_proxy_guard(secret: str, clock: Callable[[], datetime]) -> Guard:
    """A guard admitting only requests signed by Shopify's App Proxy, recently."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        verdict = check_proxy_request(secret, connection.query_params.multi_items(), clock())
        if verdict is not ProxyVerdict.AUTHENTIC:
            raise NotAuthorizedException(detail=verdict.value)

    return guard


def client_ip(request: Request[Any, Any, Any]) -> str | None:
    """The shopper's IP: Shopify's proxy puts it first in X-Forwarded-For; else the peer's address."""
    forwarded = request.headers.get("x-forwarded-for", "")
    first = forwarded.split(",")[0].strip()
    return first or (request.client.host if request.client else None)


class StorefrontController(Controller):
    """The "Notify me" form."""

    path = "/"

    @post("/subscriptions")
    async def subscribe(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[SubscribeRequest],
        signups: NamedDependency[SignupService],
        shop: Annotated[str, QueryParameter(max_length=255)],
    ) -> Response[SubscriptionOut]:
        try:
            result = await signups.subscribe(shop, data, client_ip(request))
        except UnknownShop:
            raise NotFoundException(detail="unknown shop") from None
        except SignupRejected as rejected:
            raise ValidationException(detail=str(rejected)) from None
        stored = result.subscription
        body = SubscriptionOut(
            id=stored.id,
            variant_id=stored.variant_id,
            channel=stored.channel,
            state=stored.state,
            subscribed_at=stored.subscribed_at,
        )
        return Response(body, status_code=201 if result.created else 200)


def storefront_router(signups: SignupService, secret: str, clock: Callable[[], datetime]) -> Router:
    """The ``/proxy`` routes, wired to a signup service."""
    return Router(
        path="/proxy",
        route_handlers=[StorefrontController],
        guards=[app_proxy_guard(secret, clock)],
        dependencies={"signups": Provide(lambda: signups, sync_to_thread=False, use_cache=True)},
        request_max_body_size=MAX_BODY_BYTES,
    )
