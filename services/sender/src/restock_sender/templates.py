"""Email templates: the built-in default and a sandboxed Jinja2 renderer (a ``TemplateRenderer``).

Templates are shop-editable later (stored, versioned), so they render in Jinja's ``SandboxedEnvironment``:
no attribute access to internals, HTML autoescaped, and ``StrictUndefined`` so a misspelt variable fails
loudly instead of sending "Hello ,". Compiled templates are cached per (name, version, template_id):
a version is immutable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from restock_sender.ports import RenderedMessage, RenderError, TemplateRecord

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
    ),
    body_html=(
        "<!doctype html>\n"
        "<html><body>\n"
        "<p>Good news: <strong>{{ product_title }}</strong> is back in stock at {{ shop_domain }}.</p>\n"
        '<p><a href="{{ product_url }}">Get it before it sells out again</a></p>\n'
        "<p>You asked {{ shop_domain }} to tell you when this item was available again.</p>\n"
        "</body></html>\n"
    ),
)


def restock_variables(shop_domain: str, variant_id: int, product_title: str | None) -> dict[str, Any]:
    """The variables of a restock email (also stored in the log row, so no personal data here)."""
    return {
        "product_title": product_title or "An item you wanted",
        "shop_domain": shop_domain,
        "variant_id": variant_id,
        "product_url": f"https://{shop_domain}/variants/{variant_id}",
    }


class JinjaRenderer:
    """``TemplateRenderer`` over two sandboxed environments: plain text and autoescaped HTML."""

    def __init__(self) -> None:
        self._text = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._html = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        self._cache: dict[tuple[str, int, int | None, str], Template] = {}

    def render(self, template: TemplateRecord, variables: Mapping[str, Any]) -> RenderedMessage:
        try:
            subject = self._compiled(template, "subject", template.subject).render(variables)
            text = self._compiled(template, "text", template.body_text).render(variables)
            html = None
            if template.body_html is not None:
                html = self._compiled(template, "html", template.body_html).render(variables)
        except TemplateError as error:
            raise RenderError(f"{template.name} v{template.version}: {error}") from error
        # A header is one line: a newline in a product title must not inject headers.
        return RenderedMessage(" ".join(subject.split()), text, html)

    def _compiled(self, template: TemplateRecord, part: str, source: str) -> Template:
        key = (template.name, template.version, template.template_id, part)
        if key not in self._cache:
            environment = self._html if part == "html" else self._text
            self._cache[key] = environment.from_string(source)
        return self._cache[key]
