"""Messages, keys, settings and rules: the shared contracts behave as documented."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from pydantic import ValidationError

from restock_common.keys import notification_key, restock_window
from restock_common.messages import JobBatch, RestockDetected, UnsupportedVersion, decode, encode
from restock_common.rules import DEFAULT_RULES, Rules, decode_rules, encode_rules
from restock_common.settings import Settings

EVENT = RestockDetected(
    restock_event_id=7,
    tenant_id=1,
    shop_domain="s.myshopify.com",
    variant_id=42,
    available=3,
    restock_window=20_000,
    detected_at=datetime(2026, 11, 25, 12, 0, tzinfo=UTC),
)


def test_message_round_trip() -> None:
    assert decode(encode(EVENT), RestockDetected) == EVENT


def test_unknown_fields_are_tolerated_for_rolling_deploys() -> None:
    body = encode(JobBatch(channel="email", job_ids=[1])).replace(b"}", b',"added_later":true}')
    assert decode(body, JobBatch).job_ids == [1]


def test_newer_schema_version_is_refused() -> None:
    body = encode(JobBatch(channel="email", job_ids=[1], schema_version=2))
    with pytest.raises(UnsupportedVersion):
        decode(body, JobBatch)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'{"channel": "fax", "job_ids": [1]}',
        b'{"channel": "email"}',
        b'{"channel": "email", "job_ids": ["x"]}',
    ],
)
def test_malformed_messages_raise_value_errors(body: bytes) -> None:
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)):
        decode(body, JobBatch)


@pytest.mark.parametrize(
    ("detected_at", "window_seconds", "expected"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 86_400, 0),
        (datetime(1970, 1, 1, 23, 59, 59, tzinfo=UTC), 86_400, 0),
        (datetime(1970, 1, 2, tzinfo=UTC), 86_400, 1),
        (datetime(1970, 1, 2, 1, 0, tzinfo=timezone(timedelta(hours=2))), 86_400, 0),  # 23:00 UTC on day 0
        (datetime(1970, 1, 1, 1, 0, tzinfo=UTC), 3_600, 1),
    ],
)
def test_restock_window(detected_at: datetime, window_seconds: int, expected: int) -> None:
    assert restock_window(detected_at, window_seconds) == expected


def test_restock_window_refuses_naive_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        restock_window(datetime(2026, 1, 1))


def test_notification_key_format() -> None:
    assert notification_key(42, 9, 20_000) == "42:9:20000"


def test_production_refuses_development_secrets() -> None:
    with pytest.raises(ValidationError, match="RESTOCK_SHOPIFY_API_SECRET"):
        Settings(env="production")
    with pytest.raises(ValidationError, match="RESTOCK_LINK_SECRET"):
        Settings(env="production", shopify_api_secret="real", twilio_auth_token="real")
    Settings(env="production", shopify_api_secret="real", twilio_auth_token="real", link_secret="real")


def test_settings_read_the_contract_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTOCK_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("RESTOCK_SMTP_PORT", "2626")
    monkeypatch.setenv("RESTOCK_TWILIO_BASE_URL", "http://twilio.local")
    settings = Settings()
    assert (settings.database_url, settings.smtp_port, settings.twilio_base_url) == (
        "postgresql://db/x",
        2626,
        "http://twilio.local",
    )


def test_secrets_are_not_in_the_settings_repr() -> None:
    assert "s3cr3t" not in repr(Settings(shopify_api_secret="s3cr3t"))


def test_rules_defaults_and_partial_rows() -> None:
    assert decode_rules(None) == DEFAULT_RULES
    rules = decode_rules('{"cooldown_seconds": 60}')
    assert rules.cooldown_seconds == 60
    assert rules.debounce_seconds == DEFAULT_RULES.debounce_seconds
    assert decode_rules(encode_rules(Rules(min_quantity=3))).min_quantity == 3


def test_rules_decode_from_a_jsonb_dict_as_from_text() -> None:
    assert decode_rules({"cooldown_seconds": 60, "min_quantity": 2}) == decode_rules(
        '{"cooldown_seconds": 60, "min_quantity": 2}'
    )
    assert decode_rules({}) == DEFAULT_RULES
