"""Retention cutoffs from a shop's rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from restock_admin.privacy.retention import cutoffs
from restock_common.rules import DEFAULT_RULES, Rules

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rules", "unconfirmed", "ended"),
    [
        (DEFAULT_RULES, timedelta(hours=48), timedelta(days=90)),
        (Rules(unconfirmed_ttl_hours=1, retention_days=7), timedelta(hours=1), timedelta(days=7)),
    ],
)
def test_cutoffs(rules: Rules, unconfirmed: timedelta, ended: timedelta) -> None:
    due = cutoffs(rules, NOW)
    assert (due.unconfirmed_before, due.ended_before) == (NOW - unconfirmed, NOW - ended)
