"""``/proxy``: what Shopify's App Proxy forwards from the storefront (``/apps/restock/...`` on the shop).

Every route is guarded by the App Proxy signature and its timestamp; bodies are capped at 64 KiB (413).
Refusals: 400 malformed form, bad email or phone; 401 signature; 404 unknown shop; 409 another
confirmation pending for the contact; 422 missing consent or unknown variant; 429 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from litestar import Controller, Request, Response, Router, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, QueryParameter

from restock_admin.openapi import MAX_JSON_BODY_BYTES, TOO_LARGE, error, operation_with, query
from restock_admin.storefront.proxy_auth import ProxyVerdict, check_proxy_request
from restock_admin.storefront.schemas import SubscribeRequest, SubscriptionOut, ViewBeacon
from restock_admin.storefront.services import (
    PendingConfirmation,
    RateLimited,
    SignupService,
    UnknownShop,
    UnknownVariant,
    ViewService,
)
from restock_admin.storefront.signup import ConsentMissing, SignupRejected, client_ip

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


class UnprocessableException(ClientException):
    """422: a well-formed form that cannot be accepted (no consent, unknown variant)."""

    status_code = 422


class ConflictException(ClientException):
    """409: the request conflicts with the contact's current state."""

    status_code = 409


def app_proxy_guard(secret: str, clock: Callable[[], datetime]) -> Guard:
    """A guard admitting only requests signed by Shopify's App Proxy, recently."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        verdict = check_proxy_request(secret, connection.query_params.multi_items(), clock())
        if verdict is not ProxyVerdict.AUTHENTIC:
            raise NotAuthorizedException(detail=verdict.value)

    return guard


def _refusal(error: Exception) -> HTTPException:
    """The HTTP answer to a refused signup."""
    if isinstance(error, RateLimited):
        return TooManyRequestsException(detail=str(error), headers={"Retry-After": str(error.retry_after)})
    if isinstance(error, UnknownShop):
        return NotFoundException(detail="unknown shop")
    if isinstance(error, UnknownVariant):
        return UnprocessableException(detail="unknown variant: not in this shop's catalogue")
    if isinstance(error, ConsentMissing):
        return UnprocessableException(detail=str(error))
    if isinstance(error, PendingConfirmation):
        return ConflictException(
            detail="a confirmation is already waiting for this contact at this shop: confirm it first"
        )
    return ValidationException(detail=str(error))


# What Shopify's App Proxy adds to the storefront's request (``shop`` is a handler parameter): the guard
# reads them from the raw query.
SIGNED_QUERY = operation_with(
    parameters=[
        query("signature", "HMAC-SHA256 (hex) of the other parameters under the app secret"),
        query("timestamp", "Unix seconds when Shopify signed the request; at most 5 minutes old"),
        query("path_prefix", "The App Proxy's prefix on the storefront, e.g. /apps/restock", required=False),
        query("logged_in_customer_id", "The signed-in customer, if any (empty otherwise)", required=False),
    ]
)
UNSIGNED = error("The App Proxy signature is missing, wrong, or too old.")
UNKNOWN_SHOP = error("The shop is not installed.")
MALFORMED = error("The body is not the documented JSON (or a field is invalid): the reason is in detail.")


class StorefrontController(Controller):
    """The "Notify me" form and the product view beacon."""

    path = "/"

    @post(
        "/subscriptions",
        operation_class=SIGNED_QUERY,
        response_description="Subscribed: a new subscription (pending while a confirmation is on its way).",
        responses={
            200: ResponseSpec(
                SubscriptionOut,
                description="The contact was already subscribed to this variant: that subscription.",
                generate_examples=False,
            ),
            400: error("A malformed form, or an email or phone that is not valid: the reason is in detail."),
            401: UNSIGNED,
            404: UNKNOWN_SHOP,
            409: error("A confirmation is already waiting for this contact at this shop."),
            413: TOO_LARGE,
            422: error("A well-formed signup that cannot be accepted: no consent, or an unknown variant."),
            429: error("Too many signups from this IP or for this contact; see the Retry-After header."),
        },
    )
    async def subscribe(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[SubscribeRequest],
        signups: NamedDependency[SignupService],
        trusted_hops: NamedDependency[int],
        shop: Annotated[str, QueryParameter(max_length=255)],
    ) -> Response[SubscriptionOut]:
        peer = request.client.host if request.client else None
        ip = client_ip(request.headers.get("x-forwarded-for", ""), peer, trusted_hops)
        try:
            result = await signups.subscribe(shop, data, ip)
        except (RateLimited, UnknownShop, UnknownVariant, SignupRejected, PendingConfirmation) as refused:
            raise _refusal(refused) from None
        stored = result.subscription
        body = SubscriptionOut(
            id=stored.id,
            variant_id=stored.variant_id,
            channel=stored.channel,
            state=stored.state,
            subscribed_at=stored.subscribed_at,
        )
        return Response(body, status_code=201 if result.created else 200)

    @post(
        "/views",
        status_code=204,
        operation_class=SIGNED_QUERY,
        response_description="Counted.",
        responses={400: MALFORMED, 401: UNSIGNED, 404: UNKNOWN_SHOP, 413: TOO_LARGE},
    )
    async def view(
        self,
        data: JSONBody[ViewBeacon],
        views: NamedDependency[ViewService],
        shop: Annotated[str, QueryParameter(max_length=255)],
    ) -> None:
        try:
            await views.count(shop, data.variant_id)
        except UnknownShop:
            raise NotFoundException(detail="unknown shop") from None


def storefront_router(
    signups: SignupService, views: ViewService, secret: str, clock: Callable[[], datetime], trusted_hops: int
) -> Router:
    """The ``/proxy`` routes, wired to their services."""
    return Router(
        path="/proxy",
        route_handlers=[StorefrontController],
        guards=[app_proxy_guard(secret, clock)],
        dependencies={
            "signups": Provide(lambda: signups, sync_to_thread=False, use_cache=True),
            "views": Provide(lambda: views, sync_to_thread=False, use_cache=True),
            "trusted_hops": Provide(lambda: trusted_hops, sync_to_thread=False, use_cache=True),
        },
        request_max_body_size=MAX_JSON_BODY_BYTES,
    )
