"""``/c/{token}`` and ``/u/{token}``: public, cookie-free, authorised by the signed token alone.

``POST /u/{token}`` is RFC 8058's one-click unsubscribe: a mail client posts ``List-Unsubscribe=One-Click``
(form-encoded) with no cookie or login; any POST there unsubscribes (``scope=shop``: every alert of the
shop). Nothing changes on a GET of ``/u``: mail scanners follow links.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.enums import MediaType
from litestar.params import FromPath

from restock_admin.public.pages import Page
from restock_admin.public.services import LinkService

MAX_FORM_BYTES = 8 * 1024

IpHasher = Callable[[Request[Any, Any, Any]], str | None]


def _html(page: Page) -> Response[str]:
    return Response(
        page.html(),
        status_code=page.status,
        media_type=MediaType.HTML,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


@get("/c/{token:str}")
async def confirm(
    token: FromPath[str],
    request: Request[Any, Any, Any],
    links: NamedDependency[LinkService],
    ip_of: NamedDependency[IpHasher],
) -> Response[str]:
    return _html(await links.confirm(token, ip_of(request)))


@get("/u/{token:str}")
async def unsubscribe_page(
    token: FromPath[str], request: Request[Any, Any, Any], links: NamedDependency[LinkService]
) -> Response[str]:
    return _html(await links.unsubscribe_page(token, request.url.path))


@post("/u/{token:str}")
async def unsubscribe(
    token: FromPath[str],
    request: Request[Any, Any, Any],
    links: NamedDependency[LinkService],
    ip_of: NamedDependency[IpHasher],
) -> Response[str]:
    form = await request.form()
    one_click = form.get("List-Unsubscribe") == "One-Click"
    whole_shop = form.get("scope") == "shop"
    return _html(await links.unsubscribe(token, whole_shop, one_click, ip_of(request)))


def public_router(links: LinkService, ip_of: IpHasher) -> Router:
    """The public link routes, wired to their service."""
    return Router(
        path="/",
        route_handlers=[confirm, unsubscribe_page, unsubscribe],
        dependencies={
            "links": Provide(lambda: links, sync_to_thread=False, use_cache=True),
            "ip_of": Provide(lambda: ip_of, sync_to_thread=False, use_cache=True),
        },
        request_max_body_size=MAX_FORM_BYTES,
    )
