"""``/store``: drive the sandbox shop (products, inventory levels, orders) and see the webhooks it sent; the
storefront's App Proxy (``/store/apps/proxy/<path>``); and ``/store/webhook-faults``, the webhook fault
table (see ``restock_sandbox.shopify.faults``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from restock_sandbox.shopify.faults import Mode, WebhookFault
from restock_sandbox.shopify.proxy import ProxyForwarder
from restock_sandbox.shopify.store import LevelIn, OrderIn, ProductIn, Store
from restock_sandbox.shopify.webhooks import Delivery, WebhookDeliverer, build_webhook

Clock = Callable[[], datetime]


class Shop:
    """The store and the webhooks its changes cause."""

    def __init__(self, store: Store, deliverer: WebhookDeliverer, secret: str, clock: Clock) -> None:
        self.store = store
        self.deliverer = deliverer
        self.secret = secret
        self.clock = clock

    async def notify(self, topic: str, payload: dict[str, Any]) -> Delivery:
        """Send the webhook about a change; the receiver's answer."""
        webhook = build_webhook(self.secret, self.store.shop_domain, topic, payload, self.clock())
        return await self.deliverer.deliver(webhook)


def _outcome(delivery: Delivery, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {**{f: getattr(delivery, f) for f in delivery.__struct_fields__}, name: payload}


class StoreController(Controller):
    """The shop's admin side, as tests and ``make run`` drive it."""

    path = "/store"

    @put("/products/{product_id:int}")
    async def put_product(
        self, product_id: FromPath[int], data: JSONBody[ProductIn], shop: NamedDependency[Shop]
    ) -> dict[str, Any]:
        topic = "products/update" if product_id in shop.store.products else "products/create"
        payload = shop.store.put_product(product_id, data)
        return _outcome(await shop.notify(topic, payload), "product", payload)

    @get("/products")
    async def list_products(self, shop: NamedDependency[Shop]) -> list[dict[str, Any]]:
        return shop.store.product_list()

    @post("/inventory_levels/set", status_code=200)
    async def set_level(self, data: JSONBody[LevelIn], shop: NamedDependency[Shop]) -> dict[str, Any]:
        payload = shop.store.set_level(data)
        return _outcome(await shop.notify("inventory_levels/update", payload), "inventory_level", payload)

    @post("/orders", status_code=200)
    async def create_order(self, data: JSONBody[OrderIn], shop: NamedDependency[Shop]) -> Response[Any]:
        try:
            payload = shop.store.create_order(data)
        except ValueError as bad:
            return Response({"detail": str(bad)}, status_code=400)
        return Response(_outcome(await shop.notify("orders/create", payload), "order", payload))

    @get("/orders")
    async def list_orders(self, shop: NamedDependency[Shop]) -> list[dict[str, Any]]:
        return shop.store.orders

    @get("/webhooks")
    async def webhooks(self, shop: NamedDependency[Shop]) -> list[Delivery]:
        return shop.deliverer.log

    @post("/apps/proxy/{path:path}")
    async def app_proxy(
        self, path: FromPath[str], request: Request[Any, Any, Any], proxy: NamedDependency[ProxyForwarder]
    ) -> Response[Any]:
        body = await request.body()
        client = request.client.host if request.client else None
        query = list(request.query_params.multi_items())
        try:
            upstream = await proxy.forward(path, body, request.headers.get("content-type"), query, client)
        except Exception as failure:
            return Response(
                {"detail": f"app proxy upstream failed: {type(failure).__name__}"}, status_code=502
            )
        return Response(upstream.content, status_code=upstream.status, media_type=upstream.content_type)


class WebhookFaultIn(msgspec.Struct, frozen=True, kw_only=True):
    """A rule for ``POST /store/webhook-faults``; see ``restock_sandbox.shopify.faults`` for its meaning."""

    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    mode: Mode
    times: Annotated[int, msgspec.Meta(ge=1)] | None = 1
    delay_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 1_000


class WebhookFaultController(Controller):
    """The store's webhook failure injection, and the release of what it holds."""

    path = "/store/webhook-faults"

    @post("/")
    async def add(self, shop: NamedDependency[Shop], data: JSONBody[WebhookFaultIn]) -> list[dict[str, Any]]:
        shop.deliverer.faults.add(WebhookFault(data.topic, data.mode, data.times, data.delay_ms))
        return [vars(rule) for rule in shop.deliverer.faults.rules]

    @get("/")
    async def list_faults(self, shop: NamedDependency[Shop]) -> list[dict[str, Any]]:
        return [vars(rule) for rule in shop.deliverer.faults.rules]

    @delete("/")
    async def clear(self, shop: NamedDependency[Shop]) -> None:
        shop.deliverer.faults.clear()

    @post("/flush", status_code=200)
    async def flush(self, shop: NamedDependency[Shop]) -> list[Delivery]:
        return await shop.deliverer.flush()
