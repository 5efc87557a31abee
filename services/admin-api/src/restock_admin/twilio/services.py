"""The Twilio webhooks' orchestration: keywords and receipts become consent events and log updates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime

import phonenumbers

from restock_admin.consent import Change, Event
from restock_admin.ports import ConsentLedger, ContactOnChannel, Evidence, Subscriptions
from restock_admin.twilio import keywords, receipts
from restock_admin.twilio.ports import DeliveryReceipts
from restock_common.signatures import contact_hash

logger = logging.getLogger(__name__)


def _e164(raw: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class InboundService:
    """``POST /twilio/inbound``: STOP-family keywords unsubscribe, START / UNSTOP / YES resume or confirm."""

    def __init__(self, ledger: ConsentLedger, clock: Callable[[], datetime]) -> None:
        self.ledger = ledger
        self.clock = clock

    async def handle(self, params: Mapping[str, str]) -> str:
        """The TwiML answer to one inbound message."""
        asked = keywords.keyword(params.get("Body", ""))
        phone = _e164(params.get("From", ""))
        sid = receipts.message_sid(params.get("MessageSid", ""))
        if asked is None or phone is None:
            logger.info(
                "inbound sms ignored",
                extra={"message_sid": sid, "keyword": None if asked is None else asked.value},
            )
            return keywords.EMPTY
        event = Event.UNSUBSCRIBE if asked is keywords.Keyword.OPT_OUT else Event.RESUME
        hashed = contact_hash(phone)
        evidence = Evidence("sms-keyword", None, {"keyword": asked.value, "message_sid": sid})
        applied = await self.ledger.apply(ContactOnChannel(hashed, "sms"), event, evidence, self.clock())
        changed = sum(isinstance(each.outcome, Change) for each in applied)
        logger.info(
            "inbound sms keyword",
            extra={
                "message_sid": sid,
                "keyword": asked.value,
                "contact_hash": hashed,
                "subscriptions": len(applied),
                "changed": changed,
            },
        )
        return keywords.reply(asked, changed)


class StatusService:
    """``POST /twilio/status``: a message's delivery receipt."""

    def __init__(
        self, receipts_store: DeliveryReceipts, ledger: ConsentLedger, clock: Callable[[], datetime]
    ) -> None:
        self.receipts = receipts_store
        self.ledger = ledger
        self.clock = clock

    async def record(self, params: Mapping[str, str]) -> bool:
        """Record one callback; False when it is malformed (no MessageSid or an unknown status)."""
        sid = receipts.message_sid(params.get("MessageSid", ""))
        status = params.get("MessageStatus", "").lower()
        if sid is None or not receipts.is_known(status):
            logger.warning(
                "twilio status refused",
                extra={"message_sid": sid, "status": status[:32].replace("\x00", "")},
            )
            return False
        receipt = receipts.Receipt(sid, status, receipts.error_code(params.get("ErrorCode")))
        now = self.clock()
        subscription_ids = await self.receipts.record(receipt, receipts.error_kind(receipt), now)
        logger.info(
            "twilio status",
            extra={
                "message_sid": receipt.message_sid,
                "status": receipt.status,
                "error_code": receipt.error_code,
                "known_message": subscription_ids is not None,
            },
        )
        if subscription_ids and receipts.opted_out(receipt):
            evidence = Evidence(
                "provider", None, {"error_code": receipt.error_code, "message_sid": receipt.message_sid}
            )
            await self.ledger.apply(Subscriptions(tuple(subscription_ids)), Event.UNSUBSCRIBE, evidence, now)
        return True
