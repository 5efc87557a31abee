"""Shopify's App Proxy: the storefront's ``/apps/restock/<path>`` forwarded to the app, signed.

As Shopify does: the app receives the storefront request's own query parameters plus ``shop``,
``logged_in_customer_id`` (empty for a guest), ``path_prefix`` and ``timestamp``, and a ``signature`` over
all of them (``restock_common.signatures.app_proxy_signature``); the shopper's IP goes in X-Forwarded-For.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import httpx

from restock_common.signatures import app_proxy_signature

PATH_PREFIX = "/apps/restock"
TIMEOUT_SECONDS = 10.0


def signed_params(
    secret: str, shop_domain: str, now: datetime, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The query parameters of a proxied request, signature last."""
    params = [
        *((key, value) for key, value in extra if key != "signature"),
        ("shop", shop_domain),
        ("logged_in_customer_id", ""),
        ("path_prefix", PATH_PREFIX),
        ("timestamp", str(int(now.timestamp()))),
    ]
    return [*params, ("signature", app_proxy_signature(secret, params))]


@dataclass(frozen=True)
class Upstream:
    """What the app answered."""

    status: int
    content: bytes
    content_type: str


class ProxyForwarder:
    """Forwards storefront requests to the app like Shopify's App Proxy."""

    def __init__(
        self,
        upstream: str,
        shop_domain: str,
        secret: str,
        http: httpx.AsyncClient,
        clock: Callable[[], datetime],
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.shop_domain = shop_domain
        self.secret = secret
        self.http = http
        self.clock = clock

    async def forward(
        self,
        path: str,
        body: bytes,
        content_type: str | None,
        query: Iterable[tuple[str, str]],
        client_ip: str | None,
    ) -> Upstream:
        """POST ``body`` to the app's ``<upstream>/<path>`` with signed parameters."""
        headers = {"Content-Type": content_type or "application/json"}
        if client_ip:
            headers["X-Forwarded-For"] = client_ip
        response = await self.http.post(
            f"{self.upstream}/{path.lstrip('/')}",
            params=tuple(signed_params(self.secret, self.shop_domain, self.clock(), query)),
            content=body,
            headers=headers,
            timeout=TIMEOUT_SECONDS,
        )
        return Upstream(
            response.status_code, response.content, response.headers.get("content-type", "application/json")
        )
