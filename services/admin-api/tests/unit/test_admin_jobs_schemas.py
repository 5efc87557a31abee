"""The admin API's replay body (``restock_admin.jobs.schemas.ReplayRequest``): its bounds, as Litestar
applies them (msgspec decoding: a refusal is a 400 with this reason)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from restock_admin.jobs.schemas import MAX_REASON_LENGTH, MAX_REPLAY_IDS, ReplayRequest


def decode(body: dict[str, Any]) -> ReplayRequest:
    return msgspec.json.decode(msgspec.json.encode(body), type=ReplayRequest)


@pytest.mark.parametrize(
    "body",
    [
        {"job_ids": [1], "reason": "smtp outage over"},
        {"job_ids": list(range(1, MAX_REPLAY_IDS + 1)), "reason": "x" * MAX_REASON_LENGTH},
        {"job_ids": [2**63 - 1, 1, 1], "reason": "  padded, with a newline\n"},
        {"job_ids": [1], "reason": "ok", "unknown": "ignored (a newer SPA and an older API get along)"},
    ],
    ids=["plain", "at the bounds", "largest id, repeats", "unknown field"],
)
def test_accepted(body: dict[str, Any]) -> None:
    assert decode(body).job_ids == body["job_ids"]


@pytest.mark.parametrize(
    "body",
    [
        {"job_ids": [], "reason": "r"},
        {"job_ids": list(range(1, MAX_REPLAY_IDS + 2)), "reason": "r"},
        {"job_ids": [0], "reason": "r"},
        {"job_ids": [-1], "reason": "r"},
        {"job_ids": [2**63], "reason": "r"},
        {"job_ids": ["1"], "reason": "r"},
        {"job_ids": 1, "reason": "r"},
        {"job_ids": [1]},
        {"reason": "r"},
        {"job_ids": [1], "reason": ""},
        {"job_ids": [1], "reason": " \t\n"},
        {"job_ids": [1], "reason": "x" * (MAX_REASON_LENGTH + 1)},
        {"job_ids": [1], "reason": "a\x00b"},
        {"job_ids": [1], "reason": 5},
    ],
    ids=[
        "no ids",
        "too many ids",
        "id 0",
        "negative id",
        "id over bigint",
        "id as string",
        "ids not a list",
        "no reason",
        "no ids field",
        "empty reason",
        "blank reason",
        "reason too long",
        "NUL in reason",
        "reason not a string",
    ],
)
def test_refused(body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode(body)
