"""Saving template versions on the real PostgreSQL: numbering, concurrent saves, immutability once used."""

from __future__ import annotations

import asyncio

import pytest

from restock_common.db.tables import Template, Tenant
from restock_common.templating import SavedTemplate, TemplateInUse, TemplateRejected, save_version

pytestmark = pytest.mark.integration


async def save(tenant_id: int, body: str, *, locale: str = "en", rewrite: int | None = None) -> SavedTemplate:
    return await save_version(
        tenant_id=tenant_id,
        name="restock",
        channel="email",
        locale=locale,
        subject="{{ product_title }} is back",
        body_text=body,
        body_html=None,
        created_by="merchant@example.com",
        rewrite_version=rewrite,
    )


@pytest.fixture
async def tenant_id(clean_db: None) -> int:
    tenant = Tenant(shop_domain="templates.myshopify.com")
    await tenant.save()
    return int(tenant.id)


async def test_versions_are_numbered_per_name_channel_and_locale(tenant_id: int) -> None:
    assert (await save(tenant_id, "one {{ product_url }}")).version == 1
    assert (await save(tenant_id, "two {{ product_url }}")).version == 2
    assert (await save(tenant_id, "un {{ product_url }}", locale="fr")).version == 1


async def test_concurrent_saves_get_distinct_versions(tenant_id: int) -> None:
    saved = await asyncio.gather(*(save(tenant_id, f"v{n} {{{{ product_url }}}}") for n in range(4)))
    assert sorted(s.version for s in saved) == [1, 2, 3, 4]


async def test_an_unused_version_may_be_rewritten_and_a_used_one_may_not(tenant_id: int) -> None:
    first = await save(tenant_id, "draft {{ product_url }}")
    assert await save(tenant_id, "final {{ product_url }}", rewrite=1) == first
    [row] = await Template.select(Template.body_text).where(Template.id == first.template_id)
    assert row["body_text"] == "final {{ product_url }}"
    await Template.raw("UPDATE templates SET first_used_at = now() WHERE id = {}", first.template_id)
    with pytest.raises(TemplateInUse):
        await save(tenant_id, "changed {{ product_url }}", rewrite=1)
    [row] = await Template.select(Template.body_text).where(Template.id == first.template_id)
    assert row["body_text"] == "final {{ product_url }}"


async def test_a_broken_template_is_refused_and_nothing_is_stored(tenant_id: int) -> None:
    with pytest.raises(TemplateRejected) as rejected:
        await save(tenant_id, "Hello {{ first_name }")
    assert rejected.value.problems[0].startswith("text: syntax error on line 1")
    assert await Template.count().where(Template.tenant == tenant_id) == 0
