"""``/admin/api``: the authenticated admin API the embedded admin (SPA) calls, per shop (ADR 29).

Every route is behind ``restock_admin.staff.guard``: 401 without a valid Shopify session token (or for a
shop that is not installed), 403 without the permission the route names at the token's shop. Everything a
route reads or changes is the token's shop's: another shop's job is answered like a job that does not exist.
Refusals: 400 a malformed query or body (the reason in detail); 413 a body over the cap.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import JSONBody, QueryParameter

from restock_admin.jobs.schemas import (
    DEFAULT_PAGE,
    MAX_PAGE,
    JobPage,
    ReplayOut,
    ReplayRequest,
)
from restock_admin.jobs.services import JobService
from restock_admin.openapi import MAX_JSON_BODY_BYTES, TOO_LARGE, error
from restock_admin.staff.guard import PERMISSION, Guard, Staff, staff_of
from restock_admin.staff.roles import Permission
from restock_common.jobs import NEEDS_AN_OPERATOR, JobState

SECURITY_SCHEME = "shopifySessionToken"
SECURITY_COMPONENTS = Components(
    security_schemes={
        SECURITY_SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            bearer_format="JWT",
            description="A Shopify session token (App Bridge), HS256 under the app's secret; aud the app's "
            "client id; dest the shop.",
        )
    }
)

UNAUTHENTICATED = error(
    "No valid Shopify session token (missing, malformed, expired, wrong signature or audience), or its shop "
    "is not installed: the reason is in detail."
)
FORBIDDEN = error(
    "The staff user has no role at the token's shop, or the role lacks this route's permission."
)
MALFORMED = error("A malformed query or body: the reason is in detail.")


class JobsController(Controller):
    """The shop's notification jobs: the ones that need an operator, and their replay."""

    path = "/jobs"

    @get(
        "/",
        opt={PERMISSION: Permission.JOBS_READ},
        response_description="The shop's jobs in the requested states, newest first.",
        responses={400: MALFORMED, 401: UNAUTHENTICATED, 403: FORBIDDEN},
    )
    async def list_jobs(
        self,
        jobs: NamedDependency[JobService],
        staff: NamedDependency[Staff],
        states: Annotated[
            list[JobState] | None,
            QueryParameter(name="state", description="Repeatable; default: dead-letter and indeterminate"),
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
        after_id: Annotated[
            int | None, QueryParameter(ge=1, le=2**63 - 1, description="The previous page's next_after_id")
        ] = None,
    ) -> JobPage:
        return await jobs.page(staff, states or sorted(NEEDS_AN_OPERATOR), limit, after_id)

    @post(
        "/replay",
        status_code=200,
        opt={PERMISSION: Permission.JOBS_REPLAY},
        response_description="What was replayed (back to pending, audited), and why each other job was not.",
        responses={400: MALFORMED, 401: UNAUTHENTICATED, 403: FORBIDDEN, 413: TOO_LARGE},
    )
    async def replay(
        self, data: JSONBody[ReplayRequest], jobs: NamedDependency[JobService], staff: NamedDependency[Staff]
    ) -> ReplayOut:
        return await jobs.replay(staff, data)


def admin_router(jobs: JobService, guard: Guard) -> Router:
    """The ``/admin/api`` routes, wired to their service and guarded."""
    return Router(
        path="/admin/api",
        route_handlers=[JobsController],
        guards=[guard],
        security=[{SECURITY_SCHEME: []}],
        dependencies={
            "jobs": Provide(lambda: jobs, sync_to_thread=False, use_cache=True),
            "staff": Provide(staff_of, sync_to_thread=False),
        },
        request_max_body_size=MAX_JSON_BODY_BYTES,
    )
