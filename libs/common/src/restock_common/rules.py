"""A shop's rules: every tunable of detection, dispatch and delivery, with production defaults.

Stored as JSON in ``rules.body`` (one row per shop) and decoded here; a field missing from a stored row
takes its default, so adding a rule never needs a data migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from restock_common.keys import DEFAULT_WINDOW_SECONDS


class SendWindowRule(msgspec.Struct, frozen=True, kw_only=True):
    """A channel's send window in a shop's rules: local ``HH:MM`` start (inclusive) and end (exclusive)."""

    start: str
    end: str


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
    # Dispatch (inventory-aware waves and fulfilment; see restock_dispatcher.waves and docs/adr/0013)
    waves_enabled: bool = False  # off: every target is notified at once
    shoppers_per_unit: int = 3  # wave size = units available x this
    wave_interval_seconds: int = 1_800  # between the start of one wave and the next
    max_notifications: int = 2  # a subscription notified this many times is fulfilled
    # Signup (admin-api, ADR 17): which channels need double opt-in, how long a pending (unconfirmed)
    # subscription lives, and how many days personal data is kept after a subscription ended.
    double_opt_in: Literal["off", "email", "email+sms"] = "off"
    unconfirmed_ttl_hours: int = 48
    retention_days: int = 90
    # Delivery limits (sender, ADR 16): local send hours per channel, {"sms": {"start": "09:00", "end":
    # "20:00"}} in the shopper's time zone (restock_sender.windows); a malformed window is ignored.
    send_windows: dict[str, SendWindowRule] = msgspec.field(default_factory=dict)
    # Delivery: SMS (sender, ADR 15): appended to every SMS alert unless its template already says it.
    sms_opt_out_text: str = "Reply STOP to opt out."


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
