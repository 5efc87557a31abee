"""The small HTML pages of the public links. Pure: text in, escaped HTML out."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Page:
    """A page and its HTTP status."""

    status: int
    title: str
    message: str
    form_action: str | None = None  # the unsubscribe choice page posts back here

    def html(self) -> str:
        """The page's HTML, every text escaped."""
        form = "" if self.form_action is None else _choices(self.form_action)
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="robots" content="noindex">'
            f"<title>{escape(self.title)}</title></head><body><main>"
            f"<h1>{escape(self.title)}</h1><p>{escape(self.message)}</p>{form}</main></body></html>"
        )


def _choices(action: str) -> str:
    target = escape(action, quote=True)
    return (
        f'<form method="post" action="{target}"><input type="hidden" name="scope" value="this">'
        '<button type="submit">Stop this alert only</button></form>'
        f'<form method="post" action="{target}"><input type="hidden" name="scope" value="shop">'
        '<button type="submit">Stop every alert from this shop</button></form>'
    )


INVALID = Page(400, "This link is not valid", "The link is damaged or incomplete. Nothing was changed.")
EXPIRED = Page(
    410,
    "This link has expired",
    "Confirmation links last 48 hours. Sign up again on the shop to get a new one.",
)
USED = Page(409, "This link was already used", "Your subscription was already confirmed with it.")
GONE = Page(404, "Subscription not found", "This subscription no longer exists. Nothing was changed.")
CONFIRMED = Page(200, "Subscription confirmed", "We will let you know when the item is back in stock.")
UNSUBSCRIBED = Page(200, "You are unsubscribed", "You will not receive this back-in-stock alert any more.")
UNSUBSCRIBED_SHOP = Page(
    200, "You are unsubscribed", "You will not receive any back-in-stock alert from this shop any more."
)


def refused(reason: str) -> Page:
    """The page of a confirmation the consent table refused."""
    return Page(409, "Nothing was changed", reason[:1].upper() + reason[1:] + ".")


def unsubscribe_choice(action: str) -> Page:
    """``GET /u/{token}``: the choice between this alert and every alert of the shop."""
    return Page(200, "Unsubscribe", "Which alerts should stop?", form_action=action)
