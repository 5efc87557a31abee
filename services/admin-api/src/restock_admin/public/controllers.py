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

from restock_admin.openapi import TOO_LARGE, form_body, html, operation_with, string
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


INVALID = html("The token is not a valid link: nothing changed.")
NOT_FOUND = html("The subscription no longer exists: nothing changed.")
ONE_CLICK_FORM = operation_with(
    request_body=form_body(
        "RFC 8058's one-click unsubscribe (List-Unsubscribe=One-Click), or the choice page's form (scope). "
        "Any POST unsubscribes; the fields only choose what and record how.",
        {
            "List-Unsubscribe": string("One-Click when a mail client posts it", enum=["One-Click"]),
            "scope": string("shop: every alert of the shop; else this alert", enum=["this", "shop"]),
        },
    ),
    error_too=[400],  # a malformed multipart form: Litestar's JSON 400
)


@get(
    "/c/{token:str}",
    responses={
        200: html("Confirmed."),
        400: INVALID,
        404: NOT_FOUND,
        409: html("The link was already used, or the consent rules refuse the confirmation."),
        410: html("The confirmation link has expired."),
    },
)
async def confirm(
    token: FromPath[str],
    request: Request[Any, Any, Any],
    links: NamedDependency[LinkService],
    ip_of: NamedDependency[IpHasher],
) -> Response[str]:
    return _html(await links.confirm(token, ip_of(request)))


@get(
    "/u/{token:str}",
    responses={
        200: html("The choice page: this alert or every alert of the shop (nothing changed yet)."),
        400: INVALID,
        404: NOT_FOUND,
    },
)
async def unsubscribe_page(
    token: FromPath[str], request: Request[Any, Any, Any], links: NamedDependency[LinkService]
) -> Response[str]:
    return _html(await links.unsubscribe_page(token, request.url.path))


@post(
    "/u/{token:str}",
    status_code=200,  # documentation only: every answer carries its page's status
    operation_class=ONE_CLICK_FORM,
    responses={
        200: html("Unsubscribed (idempotent)."),
        400: html("The token is not a valid link (nothing changed); or, Litestar's JSON, a malformed form."),
        404: NOT_FOUND,
        413: TOO_LARGE,
    },
)
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
