"""The admin API's job bodies (msgspec; Litestar validates a request: 400 with the reason). No job body
carries a contact: a job names its subscription by id, and its last error is redacted."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

MAX_REPLAY_IDS = 500
MAX_REASON_LENGTH = 500
MAX_PAGE = 200
DEFAULT_PAGE = 50
LAST_ERROR_LENGTH = 500

PositiveId = Annotated[int, msgspec.Meta(gt=0, le=2**63 - 1)]
# Not blank, and no U+0000 (PostgreSQL's JSONB, where the audit row keeps it, cannot store one). The pattern
# is linear: ``\s*`` can only give back spaces, which never match the class after it.
Reason = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_REASON_LENGTH, pattern=r"^\s*[^\s\x00][^\x00]*$")
]


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs to move back to pending (``dead-letter`` / ``indeterminate`` ones of the caller's shop), and why:
    the reason goes to the audit log."""

    job_ids: Annotated[list[PositiveId], msgspec.Meta(min_length=1, max_length=MAX_REPLAY_IDS)]
    reason: Reason


class ReplayOut(msgspec.Struct, frozen=True, kw_only=True):
    """The replayed ids (in request order) and why each other one was refused: ``not-found`` (also a job of
    another shop), ``not-replayable-in-state:<state>``, ``opted-out``, ``not-confirmed``."""

    replayed: list[int]
    refused: dict[str, str]


class JobOut(msgspec.Struct, frozen=True, kw_only=True):
    """A notification job as an operator sees it (no contact details)."""

    id: int
    state: str
    channel: str
    variant_id: int
    subscription_id: int
    attempt: int
    decision: str | None
    last_error_kind: str | None
    last_error: str | None  # the first LAST_ERROR_LENGTH characters, addresses and numbers redacted
    updated_at: datetime


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    """Jobs newest first (by id). ``next_after_id``: pass it as ``after_id`` for the next page; null on the
    last one."""

    jobs: list[JobOut]
    next_after_id: int | None
