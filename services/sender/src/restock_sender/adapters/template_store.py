"""``TemplateStore`` in PostgreSQL: stored template versions, cached for the life of the process.

A version is immutable once used (``restock_common.templating.save_version`` refuses to rewrite it), and
this sender marks it used *before* its first send, so what is cached can never differ from the row: no
invalidation is needed. ``first_used_at`` is set once (``WHERE first_used_at IS NULL``: after the first
time the update matches nothing and locks nothing), and each process does it once per version.
"""

from __future__ import annotations

from piccolo.engine.postgres import PostgresEngine

from restock_common.db.tables import Template
from restock_common.templating import TemplateRecord

_LOAD = "SELECT id, name, version, subject, body_text, body_html FROM templates WHERE id = {}"
_MARK_USED = "UPDATE templates SET first_used_at = now() WHERE id = {} AND first_used_at IS NULL"


class PiccoloTemplateStore:
    """``TemplateStore`` over the Piccolo engine."""

    def __init__(self, engine: PostgresEngine) -> None:
        self.engine = engine
        self._cache: dict[int, TemplateRecord] = {}
        self._marked: set[int] = set()

    async def load(self, template_id: int) -> TemplateRecord | None:
        cached = self._cache.get(template_id)
        if cached is not None:
            return cached
        rows = await Template.raw(_LOAD, template_id)
        if not rows:
            return None
        row = rows[0]
        record = TemplateRecord(
            name=row["name"],
            version=row["version"],
            subject=row["subject"],
            body_text=row["body_text"],
            body_html=row["body_html"],
            template_id=row["id"],
        )
        self._cache[template_id] = record
        return record

    async def mark_used(self, template_id: int) -> None:
        if template_id in self._marked:
            return
        await Template.raw(_MARK_USED, template_id)
        self._marked.add(template_id)
