"""The GraphQL Admin API on the wire, its bulk files, and its sandbox controls.

``POST /admin/api/{version}/graphql.json``  Shopify's endpoint (any version), ``X-Shopify-Access-Token``.
``GET  /bulk/{n}.jsonl``                    a completed bulk operation's file (the ``url`` it reports).
``POST /store/graphql/faults``              ``{"http_429": K}``: the next K API requests get HTTP 429.
``POST /store/graphql/config``              ``{"maximum_available", "restore_rate", "max_query_cost",
                                            "bulk_seconds"}``, each optional; a resized bucket starts full.
``GET  /store/graphql/stats``               requests counted by outcome and root field, the bucket now.
``DELETE /store/graphql/stats``             zero the counters.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from restock_sandbox.shopify.admin_api import AdminApi

Api = NamedDependency[AdminApi]


class AdminApiController(Controller):
    """Shopify's GraphQL Admin API endpoint and the bulk files it points at."""

    @post("/admin/api/{version:str}/graphql.json", status_code=200)
    async def graphql(
        self, version: FromPath[str], request: Request[Any, Any, Any], admin_api: Api
    ) -> Response[Any]:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if (request.headers.get("content-type") or "").startswith("application/graphql"):
            body = {"query": raw.decode(errors="replace")}  # Shopify also takes the bare document
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        answer = admin_api.handle(request.headers.get("x-shopify-access-token"), body, base_url)
        return Response(answer.body, status_code=answer.status, headers=dict(answer.headers))

    @get("/bulk/{name:str}")
    async def bulk_file(self, name: FromPath[str], admin_api: Api) -> Response[Any]:
        number = name.removesuffix(".jsonl")
        content = admin_api.bulk_file(int(number)) if number.isdigit() and name.endswith(".jsonl") else None
        if content is None:
            return Response({"detail": f"no completed bulk operation file {name!r}"}, status_code=404)
        return Response(content, media_type="application/jsonl", status_code=200)


class GraphQLFaultIn(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /store/graphql/faults``."""

    http_429: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0


class GraphQLConfigIn(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /store/graphql/config``: the shop's bucket, the single-query cost limit, bulk run time."""

    maximum_available: Annotated[float, msgspec.Meta(gt=0)] | None = None
    restore_rate: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_query_cost: Annotated[int, msgspec.Meta(ge=1)] | None = None
    bulk_seconds: Annotated[float, msgspec.Meta(ge=0, le=3_600)] | None = None


def _state(api: AdminApi) -> dict[str, Any]:
    return {
        "throttle_status": api.bucket.status(api.monotonic()),
        "max_query_cost": api.max_query_cost,
        "bulk_seconds": api.bulk_seconds,
        "http_429_pending": api.answer_429,
    }


class GraphQLControl(Controller):
    """The Admin API's failure injection, limits and counters."""

    path = "/store/graphql"

    @post("/faults", status_code=200)
    async def faults(self, admin_api: Api, data: JSONBody[GraphQLFaultIn]) -> dict[str, Any]:
        admin_api.answer_429 = data.http_429
        return _state(admin_api)

    @post("/config", status_code=200)
    async def configure(self, admin_api: Api, data: JSONBody[GraphQLConfigIn]) -> dict[str, Any]:
        bucket = admin_api.bucket
        if data.maximum_available is not None or data.restore_rate is not None:
            bucket.resize(
                data.maximum_available or bucket.maximum,
                data.restore_rate or bucket.restore_rate,
                admin_api.monotonic(),
            )
        if data.max_query_cost is not None:
            admin_api.max_query_cost = data.max_query_cost
        if data.bulk_seconds is not None:
            admin_api.bulk_seconds = data.bulk_seconds
        return _state(admin_api)

    @get("/stats")
    async def stats(self, admin_api: Api) -> dict[str, Any]:
        return {"counts": dict(admin_api.stats), **_state(admin_api)}

    @delete("/stats")
    async def reset(self, admin_api: Api) -> None:
        admin_api.stats.clear()
