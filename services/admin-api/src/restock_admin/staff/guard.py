"""The ``/admin/api`` guard: who calls (a Shopify session token), for which shop, with which permission.

Every route names the permission it needs in its ``opt`` (``PERMISSION``). The guard answers 401 for a
missing or invalid token and for a shop that is not installed, 403 for a staff user without a grant at the
token's shop or whose role lacks the permission; otherwise it leaves the ``Staff`` on the connection for the
handler (``staff_of``). A refusal is logged by its reason, shop and user id: never the token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from restock_admin.staff.ports import StaffDirectory
from restock_admin.staff.roles import Permission, permits
from restock_admin.staff.session_token import Refusal, StaffToken, verify

logger = logging.getLogger(__name__)

PERMISSION = "permission"  # the key of a route's ``opt`` naming what it needs
_STATE_KEY = "staff"
# Shopify's App Bridge fetches a fresh session token and retries once when a 401 carries this header.
RETRY_HEADERS = {
    "X-Shopify-Retry-Invalid-Session-Request": "1",
    "WWW-Authenticate": 'Bearer error="invalid_token"',
}

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


@dataclass(frozen=True)
class Staff:
    """An authenticated, permitted staff user: every query of the request is scoped to ``tenant_id``."""

    tenant_id: int
    shop: str
    user_id: str
    role: str

    @property
    def actor(self) -> str:
        """Who acts, for the audit log."""
        return f"shopify-staff:{self.shop}:{self.user_id}"


@dataclass(frozen=True)
class TokenCheck:
    """What verifying a token needs: the app's secret and client id, and the clock."""

    secret: str
    api_key: str
    clock: Callable[[], datetime]

    def __call__(self, authorization: str | None) -> StaffToken | Refusal:
        return verify(authorization, self.secret, self.api_key, self.clock())


def staff_guard(check: TokenCheck, directory: StaffDirectory) -> Guard:
    """The guard of every admin API route (see the module)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        token = check(connection.headers.get("authorization"))
        if isinstance(token, Refusal):
            logger.info("admin api refused", extra={"reason": token.value})
            raise NotAuthorizedException(detail=token.value, headers=RETRY_HEADERS)
        access = await directory.access(token.shop, token.user_id)
        if access is None:
            _refused(Refusal.UNKNOWN_SHOP, token)
            raise NotAuthorizedException(detail=Refusal.UNKNOWN_SHOP.value)
        permission = Permission(handler.opt[PERMISSION])
        if access.role is None or not permits(access.role, permission):
            reason = "no-grant-for-this-shop" if access.role is None else f"role-lacks:{permission.value}"
            _refused(reason, token)
            raise PermissionDeniedException(detail=reason)
        connection.scope.setdefault("state", {})[_STATE_KEY] = Staff(
            access.tenant_id, token.shop, token.user_id, access.role
        )

    return guard


def _refused(reason: str, token: StaffToken) -> None:
    logger.info(
        "admin api refused", extra={"reason": reason, "shop": token.shop, "staff_user_id": token.user_id}
    )


def staff_of(request: Request[Any, Any, Any]) -> Staff:
    """The guard's ``Staff`` of this request (a dependency of the admin API's handlers)."""
    staff = request.scope.get("state", {}).get(_STATE_KEY)
    if not isinstance(staff, Staff):  # a route without the guard: a wiring bug, not a client's error
        raise RuntimeError("the admin API guard did not run")
    return staff
