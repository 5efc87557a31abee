"""The sender's built-in templates (per channel: alert and confirmation) and the variables they get.

A job sends with the template pinned on it at freeze (``notification_jobs.template``, loaded through
``adapters.template_store``), or with the channel's built-in one when none is pinned. Rendering, the
sandbox and validation live in ``restock_common.templating`` (one Jinja setup, shared with the admin-api
that saves templates); ``JinjaRenderer`` is that renderer under the sender's old name.
"""

from __future__ import annotations

from typing import Any

from restock_common.messages import Channel
from restock_common.templating import Renderer, TemplateRecord

JinjaRenderer = Renderer

BUILTIN_EMAIL = TemplateRecord(
    name="builtin:restock-email",
    version=1,
    subject="{{ product_title }} is back in stock",
    body_text=(
        "Good news: {{ product_title }} is back in stock at {{ shop_domain }}.\n"
        "\n"
        "Get it before it sells out again:\n"
        "{{ product_url }}\n"
        "\n"
        "You asked {{ shop_domain }} to tell you when this item was available again.\n"
        "{% if unsubscribe_url %}Unsubscribe: {{ unsubscribe_url }}\n{% endif %}"
    ),
    body_html=(
        "<!doctype html>\n"
        "<html><body>\n"
        "<p>Good news: <strong>{{ product_title }}</strong> is back in stock at {{ shop_domain }}.</p>\n"
        '<p><a href="{{ product_url }}">Get it before it sells out again</a></p>\n'
        "<p>You asked {{ shop_domain }} to tell you when this item was available again.</p>\n"
        '{% if unsubscribe_url %}<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n{% endif %}'
        "</body></html>\n"
    ),
)


BUILTIN_SMS = TemplateRecord(
    name="builtin:restock-sms",
    version=1,
    subject="",
    body_text="{{ shop_domain }}: {{ product_title }} is back in stock. {{ product_url }}",
    body_html=None,
)

BUILTIN_EMAIL_CONFIRMATION = TemplateRecord(
    name="builtin:confirmation-email",
    version=1,
    subject="Confirm your back-in-stock alert from {{ shop_domain }}",
    body_text=(
        "You asked {{ shop_domain }} to tell you when {{ product_title }} is back in stock.\n"
        "\n"
        "Confirm by opening this link:\n"
        "{{ confirm_url }}\n"
        "\n"
        "If you did not ask for this, ignore this email: nothing will be sent.\n"
    ),
    body_html=(
        "<!doctype html>\n"
        "<html><body>\n"
        "<p>You asked {{ shop_domain }} to tell you when <strong>{{ product_title }}</strong> is back in"
        " stock.</p>\n"
        '<p><a href="{{ confirm_url }}">Confirm my alert</a></p>\n'
        "<p>If you did not ask for this, ignore this email: nothing will be sent.</p>\n"
        "</body></html>\n"
    ),
)

BUILTIN_SMS_CONFIRMATION = TemplateRecord(
    name="builtin:confirmation-sms",
    version=1,
    subject="",
    body_text=(
        "{{ shop_domain }}: reply YES to confirm alerts when {{ product_title }} is back in stock."
        " Msg&data rates may apply."
    ),
    body_html=None,
)

BUILTIN_ALERTS: dict[Channel, TemplateRecord] = {"email": BUILTIN_EMAIL, "sms": BUILTIN_SMS}
BUILTIN_CONFIRMATIONS: dict[Channel, TemplateRecord] = {
    "email": BUILTIN_EMAIL_CONFIRMATION,
    "sms": BUILTIN_SMS_CONFIRMATION,
}


def restock_variables(
    shop_domain: str, variant_id: int, product_title: str | None, unsubscribe_url: str = ""
) -> dict[str, Any]:
    """The variables of a restock alert (also stored in the log row, so no personal data here)."""
    return {
        "product_title": product_title or "An item you wanted",
        "shop_domain": shop_domain,
        "variant_id": variant_id,
        "product_url": f"https://{shop_domain}/variants/{variant_id}",
        "unsubscribe_url": unsubscribe_url,
    }


def confirmation_variables(
    shop_domain: str, variant_id: int, product_title: str | None, confirm_url: str
) -> dict[str, Any]:
    """The variables of a double opt-in confirmation."""
    variables = restock_variables(shop_domain, variant_id, product_title)
    del variables["unsubscribe_url"]
    return {**variables, "confirm_url": confirm_url}
