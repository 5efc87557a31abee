"""The Twilio webhooks' services with recording fakes: what a keyword or a receipt asks of the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restock_admin.consent import Change, Event, State, Unchanged
from restock_admin.ports import Applied, ContactOnChannel, Evidence, Subscriptions, Target
from restock_admin.twilio.keywords import EMPTY
from restock_admin.twilio.receipts import Receipt
from restock_admin.twilio.services import InboundService, StatusService
from restock_common.signatures import contact_hash

SID = "SM" + "9" * 32  # Twilio Message SIDs: SM + 32 hex digits
SID1 = "SM" + "1" * 32

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


class RecordingLedger:
    def __init__(self, changed: bool = True) -> None:
        self.changed = changed
        self.calls: list[tuple[Target, object, str]] = []

    async def apply(self, target: Target, events: object, evidence: Evidence, now: datetime) -> list[Applied]:
        self.calls.append((target, events, evidence.source))
        outcome = Change(State.CONFIRMED, "confirmed") if self.changed else Unchanged()
        return [Applied(1, 3, "pending", outcome)]

    async def apply_once(self, *args: object) -> object:
        raise AssertionError("not used by the Twilio webhooks")


@pytest.mark.parametrize(
    ("body", "event"),
    [
        ("STOP", Event.UNSUBSCRIBE),
        ("quit", Event.UNSUBSCRIBE),
        ("Start", Event.RESUME),
        ("yes", Event.RESUME),
    ],
)
async def test_keywords_apply_to_every_sms_subscription_of_the_number(body: str, event: Event) -> None:
    ledger = RecordingLedger()
    await InboundService(ledger, lambda: NOW).handle(
        {"From": "+1 (415) 555-2671", "Body": body, "MessageSid": SID1}
    )
    assert ledger.calls == [(ContactOnChannel(contact_hash("+14155552671"), "sms"), event, "sms-keyword")]


@pytest.mark.parametrize(
    "params", [{"From": "+14155552671", "Body": "hello"}, {"From": "nope", "Body": "STOP"}, {}]
)
async def test_other_messages_touch_nothing(params: dict[str, str]) -> None:
    ledger = RecordingLedger()
    assert await InboundService(ledger, lambda: NOW).handle(params) == EMPTY
    assert ledger.calls == []


class Receipts:
    def __init__(self, subscriptions: list[int] | None) -> None:
        self.subscriptions = subscriptions
        self.recorded: list[tuple[Receipt, str | None]] = []

    async def record(self, receipt: Receipt, error_kind: str | None, now: datetime) -> list[int] | None:
        self.recorded.append((receipt, error_kind))
        return self.subscriptions


async def test_an_opt_out_receipt_unsubscribes_its_subscriptions() -> None:
    ledger, receipts = RecordingLedger(), Receipts([4])
    params = {"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "21610"}
    assert await StatusService(receipts, ledger, lambda: NOW).record(params)
    assert receipts.recorded == [(Receipt(SID, "failed", "21610"), "permanent")]
    assert ledger.calls == [(Subscriptions((4,)), Event.UNSUBSCRIBE, "provider")]


@pytest.mark.parametrize(
    ("params", "subscriptions", "accepted"),
    [
        ({"MessageSid": SID, "MessageStatus": "undelivered", "ErrorCode": "30005"}, [4], True),
        ({"MessageSid": SID, "MessageStatus": "failed", "ErrorCode": "21610"}, None, True),  # unknown SID
        ({"MessageSid": SID, "MessageStatus": "bogus"}, [4], False),
        ({"MessageStatus": "sent"}, [4], False),
    ],
)
async def test_other_receipts_never_touch_consent(
    params: dict[str, str], subscriptions: list[int] | None, accepted: bool
) -> None:
    ledger = RecordingLedger()
    assert await StatusService(Receipts(subscriptions), ledger, lambda: NOW).record(params) is accepted
    assert ledger.calls == []
