"""The public links' service with a recording ledger: which page each verdict gets, and that nothing is
asked of the ledger for a bad token."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from restock_admin.consent import CANCELLED, Change, Event, State, Step, Unchanged
from restock_admin.ports import AlreadyUsed, Applied, ContactAtShop, Evidence, Subscriptions, Target
from restock_admin.public import pages
from restock_admin.public.ports import LinkedSubscription
from restock_admin.public.services import LinkService
from restock_common.links import LinkSigner

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SIGNER = LinkSigner("link-secret")


class RecordingLedger:
    def __init__(self, outcome: Step | None = None, used: bool = False) -> None:
        self.outcome = outcome
        self.used = used
        self.calls: list[tuple[object, ...]] = []

    def _applied(self, subscription_id: int) -> list[Applied]:
        return [] if self.outcome is None else [Applied(subscription_id, 3, "pending", self.outcome)]

    async def apply(self, target: Target, events: object, evidence: Evidence, now: datetime) -> list[Applied]:
        self.calls.append(("apply", target, events, evidence.source, evidence.detail))
        return self._applied(1)

    async def apply_once(
        self,
        token_id: str,
        purpose: str,
        subscription_id: int,
        event: Event,
        evidence: Evidence,
        now: datetime,
    ) -> list[Applied] | AlreadyUsed:
        self.calls.append(("apply_once", purpose, subscription_id, event, evidence.source))
        return AlreadyUsed() if self.used else self._applied(subscription_id)


class Reader:
    async def subscription(self, subscription_id: int) -> LinkedSubscription | None:
        return LinkedSubscription(subscription_id, 3, "hash", "confirmed") if subscription_id < 100 else None


def service(ledger: RecordingLedger) -> LinkService:
    return LinkService(SIGNER, ledger, Reader(), 3600, lambda: NOW)


@pytest.mark.parametrize(
    ("ledger", "page"),
    [
        (RecordingLedger(Change(State.CONFIRMED, "confirmed")), pages.CONFIRMED),
        (RecordingLedger(Unchanged()), pages.CONFIRMED),
        (RecordingLedger(used=True), pages.USED),
        (RecordingLedger(None), pages.GONE),
        (RecordingLedger(CANCELLED), pages.refused(CANCELLED.reason)),
    ],
)
async def test_confirmation_pages(ledger: RecordingLedger, page: pages.Page) -> None:
    assert await service(ledger).confirm(SIGNER.token("confirm", 7), "iphash") == page
    assert ledger.calls == [("apply_once", "confirm", 7, Event.CONFIRM, "email-link")]


@pytest.mark.parametrize(
    "token", [SIGNER.token("unsubscribe", 7), "junk", LinkSigner("other").token("confirm", 7)]
)
async def test_bad_confirmation_tokens_never_reach_the_ledger(token: str) -> None:
    ledger = RecordingLedger(Change(State.CONFIRMED, "confirmed"))
    assert await service(ledger).confirm(token, None) == pages.INVALID
    assert ledger.calls == []


async def test_one_click_targets_this_subscription_and_says_so() -> None:
    ledger = RecordingLedger(Change(State.UNSUBSCRIBED, "unsubscribed"))
    page = await service(ledger).unsubscribe(SIGNER.token("unsubscribe", 7), False, True, None)
    assert page == pages.UNSUBSCRIBED
    assert ledger.calls == [
        ("apply", Subscriptions((7,)), Event.UNSUBSCRIBE, "list-unsubscribe", {"scope": "this"})
    ]


async def test_whole_shop_targets_the_contact_at_the_shop() -> None:
    ledger = RecordingLedger(Change(State.UNSUBSCRIBED, "unsubscribed"))
    page = await service(ledger).unsubscribe(SIGNER.token("unsubscribe", 7), True, False, None)
    assert page == pages.UNSUBSCRIBED_SHOP
    assert ledger.calls == [
        ("apply", ContactAtShop(3, "hash"), Event.UNSUBSCRIBE, "email-link", {"scope": "shop"})
    ]


async def test_unsubscribe_of_a_vanished_subscription_or_bad_token() -> None:
    ledger = RecordingLedger()
    assert (
        await service(ledger).unsubscribe(SIGNER.token("unsubscribe", 500), False, True, None) == pages.GONE
    )
    assert await service(ledger).unsubscribe(SIGNER.token("confirm", 7), False, True, None) == pages.INVALID
    assert await service(ledger).unsubscribe_page(SIGNER.token("unsubscribe", 500), "/u/x") == pages.GONE
    assert ledger.calls == []


def test_pages_escape_what_they_show() -> None:
    html = pages.unsubscribe_choice('/u/"><script>').html()
    assert "<script>" not in html
    assert "&quot;&gt;&lt;script&gt;" in html
