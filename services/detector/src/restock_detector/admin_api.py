"""``ports.AdminApi`` over HTTP: Shopify's GraphQL Admin API with httpx, one client per process.

Every call goes through ``_execute``: wait for the shop's bucket to hold the query's cost, send, read the
cost and throttle status back, and on failure ask ``throttle.backoff`` whether and when to try again
(``throttle.py`` has the rules). What cannot be retried, or is still failing after the last attempt, is
raised as ``AdminApiError`` carrying its ``throttle.Failure``: the caller decides what it means for a shop.
Access tokens travel only in the ``X-Shopify-Access-Token`` header and never reach a log line; the bulk
result URL (a signed storage URL in production) is fetched without it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec

from restock_detector import admin_graphql as gql
from restock_detector import throttle
from restock_detector.ports import ShopAccess

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
BULK_DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
TOKEN_HEADER = "X-Shopify-Access-Token"  # noqa: S105 - a header name, not a secret
# Cost guesses until a shop's answers report the real ones (requestedQueryCost).
# A page's cost is per variant (the page costs that times ``first``).
DEFAULT_COSTS = {
    "item": 3.0,
    "variant": 60.0,
    "page": throttle.DEFAULT_COST_PER_VARIANT,
    "bulk_run": 10.0,
    "bulk_status": 1.0,
}


class AdminApiError(Exception):
    """A call that failed for good: ``failure`` says how (``UNAUTHORIZED``: the shop's token is bad)."""

    def __init__(self, failure: throttle.Failure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


def api_base_url(template: str, shop_domain: str) -> str:
    """``https://{shop}`` -> ``https://demo.myshopify.com`` (production); a URL without ``{shop}`` is
    used as is (the sandbox serves every shop on one port)."""
    return template.replace("{shop}", shop_domain).rstrip("/")


class ShopifyAdminApi:
    """``ports.AdminApi`` (see the module's rules). Keeps each shop's last throttle status."""

    def __init__(
        self,
        base_url_template: str,
        client: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: throttle.Jitter = random.random,
    ) -> None:
        self.base_url_template = base_url_template
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.buckets: dict[str, throttle.Bucket] = {}
        self.costs: dict[tuple[str, str], float] = {}

    def bucket(self, shop_domain: str) -> throttle.Bucket | None:
        return self.buckets.get(shop_domain)

    def cost(self, shop_domain: str, operation: str) -> float:
        """The last ``requestedQueryCost`` of this operation for this shop, per variant for a page (else a
        guess)."""
        return self.costs.get((shop_domain, operation), DEFAULT_COSTS[operation])

    async def item_owner(self, shop: ShopAccess, inventory_item_id: int) -> gql.ItemOwner | None:
        variables = {"id": gql.gid("InventoryItem", inventory_item_id)}
        answer = await self._execute(shop, "item", gql.INVENTORY_ITEM_QUERY, variables)
        return gql.parse_item_owner(answer.data)

    async def variant_levels(self, shop: ShopAccess, variant_id: int) -> gql.CatalogVariant | None:
        variables = {"id": gql.gid("ProductVariant", variant_id)}
        answer = await self._execute(shop, "variant", gql.VARIANT_LEVELS_QUERY, variables)
        return gql.parse_variant_levels(answer.data)

    async def variants_page(self, shop: ShopAccess, first: int, after: str | None) -> gql.VariantPage:
        answer = await self._execute(
            shop, "page", gql.VARIANTS_PAGE_QUERY, {"first": first, "after": after}, scale=first
        )
        return gql.parse_variants_page(answer.data)

    async def start_bulk(self, shop: ShopAccess) -> gql.BulkStatus:
        variables = {"query": gql.BULK_VARIANTS_QUERY}
        answer = await self._execute(shop, "bulk_run", gql.BULK_RUN_MUTATION, variables)
        return gql.parse_bulk_run(answer.data)

    async def bulk_status(self, shop: ShopAccess) -> gql.BulkStatus | None:
        answer = await self._execute(shop, "bulk_status", gql.BULK_STATUS_QUERY, {})
        return gql.parse_bulk_status(answer.data)

    async def bulk_lines(self, url: str) -> AsyncIterator[bytes]:
        """The bulk result, line by line, streamed (never held whole)."""
        try:
            async with self.client.stream("GET", url, timeout=BULK_DOWNLOAD_TIMEOUT) as response:
                if response.status_code != 200:
                    raise AdminApiError(
                        throttle.Failure.UNAVAILABLE, f"bulk result HTTP {response.status_code}"
                    )
                async for line in response.aiter_lines():
                    yield line.encode()
        except httpx.HTTPError as error:
            raise AdminApiError(
                throttle.Failure.UNAVAILABLE, f"bulk result: {type(error).__name__}"
            ) from error

    async def _execute(
        self, shop: ShopAccess, operation: str, query: str, variables: dict[str, Any], *, scale: int = 1
    ) -> gql.Answer:
        """Send one operation with throttling and bounded retries (the module's rules)."""
        attempt = 0
        while True:
            attempt += 1
            if operation == "page":  # a page shrinks to what the bucket, as last reported, can pay
                scale = min(scale, self.page_size(shop))
                variables = {**variables, "first": scale}
            cost = self.cost(shop.shop_domain, operation) * scale
            await self._wait_for_bucket(shop.shop_domain, cost)
            failure, detail, retry_after, answer = await self._attempt(shop, query, variables)
            if answer is not None:
                self._remember_cost(shop.shop_domain, operation, answer, scale)
                if failure is None:
                    return answer
                cost = self.cost(shop.shop_domain, operation) * scale  # what THROTTLED says it needs
            delay = throttle.backoff(
                failure or throttle.Failure.REJECTED,
                attempt,
                self.jitter,
                bucket=self.buckets.get(shop.shop_domain),
                cost=cost,
                retry_after=retry_after,
            )
            if failure is None or delay is None:
                raise AdminApiError(failure or throttle.Failure.REJECTED, detail)
            log.warning(
                "admin api call failed; retrying",
                extra={
                    "shop_domain": shop.shop_domain,
                    "operation": operation,
                    "failure": failure.value,
                    "attempt": attempt,
                    "retry_in_seconds": round(delay, 3),
                },
            )
            await self.sleep(delay)

    async def _wait_for_bucket(self, shop_domain: str, cost: float) -> None:
        wait = throttle.wait_before(self.buckets.get(shop_domain), cost, self.clock())
        if wait > 0:
            await self.sleep(min(wait, throttle.MAX_BACKOFF_SECONDS))

    async def _attempt(
        self, shop: ShopAccess, query: str, variables: dict[str, Any]
    ) -> tuple[throttle.Failure | None, str, float | None, gql.Answer | None]:
        """One HTTP round trip: (failure or None, detail, Retry-After, the decoded answer if any)."""
        base = api_base_url(self.base_url_template, shop.shop_domain)
        url = f"{base}/admin/api/{gql.API_VERSION}/graphql.json"
        try:
            response = await self.client.post(
                url,
                content=msgspec.json.encode({"query": query, "variables": variables}),
                headers={TOKEN_HEADER: shop.access_token, "Content-Type": "application/json"},
                timeout=TIMEOUT,
            )
        except httpx.HTTPError as error:
            return throttle.Failure.UNAVAILABLE, type(error).__name__, None, None
        failure = throttle.classify_status(response.status_code)
        retry_after = throttle.parse_retry_after(response.headers.get("retry-after"))
        if failure is not None and failure is not throttle.Failure.RATE_LIMITED:
            return failure, f"HTTP {response.status_code}", retry_after, None
        try:
            answer = gql.decode_envelope(response.content)
        except gql.ResponseError as error:
            return failure or throttle.Failure.UNAVAILABLE, error.reason, retry_after, None
        self._remember_bucket(shop.shop_domain, answer)
        if failure is not None:
            return failure, f"HTTP {response.status_code}", retry_after, answer
        return _graphql_failure(answer), "; ".join(answer.error_messages)[:300], retry_after, answer

    def _remember_bucket(self, shop_domain: str, answer: gql.Answer) -> None:
        status = answer.cost.throttle_status if answer.cost else None
        if status is not None:
            self.buckets[shop_domain] = throttle.Bucket(
                status.maximum_available, status.currently_available, status.restore_rate, self.clock()
            )

    def _remember_cost(self, shop_domain: str, operation: str, answer: gql.Answer, scale: int) -> None:
        requested = answer.cost.requested_query_cost if answer.cost else None
        if requested:
            self.costs[(shop_domain, operation)] = requested / scale

    def page_size(self, shop: ShopAccess) -> int:
        """Variants per sync page, from the shop's last throttle status and page cost."""
        return throttle.page_size(self.bucket(shop.shop_domain), self.cost_per_variant(shop.shop_domain))

    def cost_per_variant(self, shop_domain: str) -> float | None:
        """What one variant of a sync page costs this shop, once a page has told us."""
        return self.costs.get((shop_domain, "page"))


def _graphql_failure(answer: gql.Answer) -> throttle.Failure | None:
    if "THROTTLED" in answer.error_codes:
        return throttle.Failure.THROTTLED
    if answer.error_codes and answer.error_codes[0] in ("ACCESS_DENIED", "UNAUTHORIZED"):
        return throttle.Failure.UNAUTHORIZED
    if answer.error_messages and answer.data is None:
        return throttle.Failure.REJECTED
    return None
