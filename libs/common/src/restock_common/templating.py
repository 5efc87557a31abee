"""Message templates: the sandboxed Jinja2 renderer, validation, and saving immutable versions.

Rules
-----
- Templates are written by shops, so they render in Jinja's ``ImmutableSandboxedEnvironment`` (no access
  to internals, no mutation of the variables), with ``StrictUndefined``: a misspelt variable fails
  instead of sending "Hello ,". HTML parts are autoescaped; subject and text parts are not. A subject is
  one line (whitespace collapsed), so a newline in a product title cannot inject a header.
- Each template *kind* has a fixed set of variables (``ALLOWED_VARIABLES``): ``confirmation`` templates
  (a name containing ``confirmation``) get ``confirm_url``, every other name is an ``alert`` and gets
  ``unsubscribe_url``. The variables carry no personal data: they are stored in every log row.
- A broken template is refused when it is saved, never discovered at send time: ``validate`` parses each
  part (syntax), rejects variables outside the kind's set, and renders every part with a complete sample
  of the allowed variables (filters, attribute access, sandbox violations). SMS templates have no HTML
  part and at most 1,600 characters (Twilio's limit); email templates need a subject and a text part.
- Versions are immutable once used: ``save_version`` inserts version ``max + 1`` of (tenant, name,
  channel, locale); rewriting a version in place is allowed only while its ``first_used_at`` is NULL
  (the sender sets it at the first send), otherwise ``TemplateInUse``: save a new version instead.

Compiled templates are cached per (template id, name, version, part): a version never changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from restock_common.db.tables import Template as TemplateTable
from restock_common.messages import Channel

TemplateKind = Literal["alert", "confirmation"]
# The names shops' templates are stored under: the dispatcher pins the latest ALERT_TEMPLATE version on
# each job at freeze; the sender renders the latest CONFIRMATION_TEMPLATE version for a double opt-in.
ALERT_TEMPLATE = "restock-alert"
CONFIRMATION_TEMPLATE = "confirmation"
Part = Literal["subject", "text", "html"]

_COMMON_VARIABLES = frozenset({"product_title", "product_url", "shop_domain", "variant_id"})
ALLOWED_VARIABLES: dict[TemplateKind, frozenset[str]] = {
    "alert": _COMMON_VARIABLES | {"unsubscribe_url"},
    "confirmation": _COMMON_VARIABLES | {"confirm_url"},
}
_SAMPLE: dict[str, Any] = {
    "product_title": "Linen Shirt - Blue / M",
    "product_url": "https://sample-shop.myshopify.com/variants/123456789",
    "shop_domain": "sample-shop.myshopify.com",
    "variant_id": 123456789,
    "unsubscribe_url": "https://restock.example/u/sample-token",
    "confirm_url": "https://restock.example/c/sample-token",
}
SMS_MAX_CHARACTERS = 1_600


def kind_of(name: str) -> TemplateKind:
    """The kind of a template, from its name."""
    return "confirmation" if CONFIRMATION_TEMPLATE in name else "alert"


def sample_variables(kind: TemplateKind) -> dict[str, Any]:
    """A complete set of the kind's variables with realistic values (validation renders with them)."""
    return {name: _SAMPLE[name] for name in ALLOWED_VARIABLES[kind]}


@dataclass(frozen=True)
class TemplateRecord:
    """One immutable template version; ``template_id`` is ``None`` for a built-in one."""

    name: str
    version: int
    subject: str
    body_text: str
    body_html: str | None
    template_id: int | None = None


@dataclass(frozen=True)
class RenderedMessage:
    """A template rendered with resolved variables."""

    subject: str
    text: str
    html: str | None


class RenderError(Exception):
    """The template could not be rendered with these variables (a missing variable, bad syntax)."""


def _environment(part: Part) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=part == "html")


class Renderer:
    """Renders template records (a ``TemplateRenderer``), compiling each version's parts once."""

    def __init__(self) -> None:
        self._environments: dict[Part, ImmutableSandboxedEnvironment] = {
            part: _environment(part) for part in ("subject", "text", "html")
        }
        self._cache: dict[tuple[int | None, str, int, Part], Template] = {}

    def render(self, template: TemplateRecord, variables: Mapping[str, Any]) -> RenderedMessage:
        """Subject (one line), text and HTML; raises ``RenderError``."""
        try:
            subject = self._compiled(template, "subject", template.subject).render(variables)
            text = self._compiled(template, "text", template.body_text).render(variables)
            html = None
            if template.body_html is not None:
                html = self._compiled(template, "html", template.body_html).render(variables)
        except TemplateError as error:
            raise RenderError(f"{template.name} v{template.version}: {error}") from error
        return RenderedMessage(" ".join(subject.split()), text, html)

    def _compiled(self, template: TemplateRecord, part: Part, source: str) -> Template:
        key = (template.template_id, template.name, template.version, part)
        if key not in self._cache:
            self._cache[key] = self._environments[part].from_string(source)
        return self._cache[key]


def _part_problems(part: Part, source: str, kind: TemplateKind) -> list[str]:
    environment = _environment(part)
    try:
        parsed = environment.parse(source)
    except TemplateSyntaxError as error:
        return [f"{part}: syntax error on line {error.lineno}: {error.message}"]
    unknown = sorted(meta.find_undeclared_variables(parsed) - ALLOWED_VARIABLES[kind])
    if unknown:
        return [f"{part}: unknown variable '{name}'" for name in unknown]
    try:
        environment.from_string(source).render(sample_variables(kind))
    except TemplateError as error:
        return [f"{part}: does not render: {error}"]
    return []


def _channel_problems(channel: Channel, subject: str, body_text: str, body_html: str | None) -> list[str]:
    if channel == "sms":
        problems = ["html: an SMS template has no HTML part"] if body_html else []
        return problems + (["subject: an SMS template has no subject"] if subject.strip() else [])
    return [] if subject.strip() else ["subject: an email template needs a subject"]


def validate(
    name: str, channel: Channel, subject: str, body_text: str, body_html: str | None = None
) -> list[str]:
    """Every problem of a template (empty: it may be saved)."""
    kind = kind_of(name)
    problems = _channel_problems(channel, subject, body_text, body_html)
    if not body_text.strip():
        problems.append("text: the text part is empty")
    parts: list[tuple[Part, str]] = [("subject", subject), ("text", body_text)]
    if body_html is not None:
        parts.append(("html", body_html))
    for part, source in parts:
        problems.extend(_part_problems(part, source, kind))
    if channel == "sms" and not problems:
        rendered = _environment("text").from_string(body_text).render(sample_variables(kind))
        if len(rendered) > SMS_MAX_CHARACTERS:
            problems.append(f"text: {len(rendered)} characters rendered, more than {SMS_MAX_CHARACTERS}")
    return problems


# --- saving versions ---------------------------------------------------------------------------------


class TemplateRejected(ValueError):
    """The template has problems (``problems``) and was not saved."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class TemplateInUse(ValueError):
    """The version was already used to send: it is immutable, save a new version instead."""


@dataclass(frozen=True)
class SavedTemplate:
    """The row a save wrote."""

    template_id: int
    version: int


_INSERT_NEXT = """
INSERT INTO templates (tenant, name, channel, locale, version, subject, body_text, body_html, created_by)
SELECT {}, {}, {}, {}, COALESCE(MAX(version), 0) + 1, {}, {}, {}, {}
  FROM templates WHERE tenant = {} AND name = {} AND channel = {} AND locale = {}
RETURNING id, version
"""

_REWRITE_UNUSED = """
UPDATE templates SET subject = {}, body_text = {}, body_html = {}, created_by = {}, created_at = now()
 WHERE tenant = {} AND name = {} AND channel = {} AND locale = {} AND version = {} AND first_used_at IS NULL
RETURNING id, version
"""

_INSERT_ATTEMPTS = 10  # editors saving at once collide on the UNIQUE version: each loser takes the next one


async def save_version(
    *,
    tenant_id: int,
    name: str,
    channel: Channel,
    locale: str,
    subject: str,
    body_text: str,
    body_html: str | None,
    created_by: str,
    rewrite_version: int | None = None,
) -> SavedTemplate:
    """Validate, then insert the next version (or rewrite ``rewrite_version`` while it is unused).
    Raises ``TemplateRejected`` with the problems, or ``TemplateInUse``."""
    problems = validate(name, channel, subject, body_text, body_html)
    if problems:
        raise TemplateRejected(problems)
    key = (tenant_id, name, channel, locale)
    if rewrite_version is not None:
        rows = await TemplateTable.raw(
            _REWRITE_UNUSED, subject, body_text, body_html, created_by, *key, rewrite_version
        )
        if not rows:
            raise TemplateInUse(f"version {rewrite_version} of {name} is used or missing; save a new version")
        return SavedTemplate(int(rows[0]["id"]), int(rows[0]["version"]))
    for attempt in range(_INSERT_ATTEMPTS):
        try:
            rows = await TemplateTable.raw(
                _INSERT_NEXT, *key, subject, body_text, body_html, created_by, *key
            )
        except asyncpg.UniqueViolationError:
            if attempt == _INSERT_ATTEMPTS - 1:
                raise
            continue
        return SavedTemplate(int(rows[0]["id"]), int(rows[0]["version"]))
    raise AssertionError("unreachable")
