"""A shop's rules: every tunable of detection, dispatch and delivery, with production defaults.

Stored as JSON in ``rules.body`` (one row per shop) and decoded here; a field missing from a stored row
takes its default, so adding a rule never needs a data migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from restock_common.keys import DEFAULT_WINDOW_SECONDS


class Rules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """The rules of one shop."""

    # Detection
    cooldown_seconds: int = 86_400
    debounce_seconds: int = 300
    min_quantity: int = 1
    excluded_location_ids: list[int] = msgspec.field(default_factory=list)
    confirm_with_admin_api: bool = False
    sync_interval_seconds: int = 900
    restock_window_seconds: int = DEFAULT_WINDOW_SECONDS
    # Delivery
    max_attempts: int = 6
    retry_base_seconds: float = 30.0
    retry_cap_seconds: float = 3_600.0
    email_per_second: float | None = None
    sms_per_second: float | None = None


DEFAULT_RULES = Rules()


def decode_rules(body: bytes | str | Mapping[str, Any] | None) -> Rules:
    """The rules of a stored row: JSON text, or the dict a JSONB column comes back as when the query is
    read through asyncpg's codecs (``None`` or empty: the defaults)."""
    if not body:
        return DEFAULT_RULES
    if isinstance(body, Mapping):
        return msgspec.convert(dict(body), Rules)
    return msgspec.json.decode(body, type=Rules)


def encode_rules(rules: Rules) -> str:
    """JSON text for ``rules.body``."""
    return msgspec.json.encode(rules).decode()
