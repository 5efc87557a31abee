"""Twilio's webhooks over HTTP against this run's PostgreSQL, signed by twilio-python's own
``RequestValidator``: inbound STOP / START / YES keywords and message status callbacks."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from litestar.testing import AsyncTestClient
from twilio.request_validator import RequestValidator

from restock_common.settings import Settings

pytestmark = pytest.mark.integration

Signed = Callable[..., str]
SHOP = "signup-shop.myshopify.com"
PHONE = "+14155552671"
OTHER_PHONE = "+14155552672"


@pytest.fixture
def twilio_post(client: AsyncTestClient, settings: Settings) -> Callable[..., object]:
    """POST form params to a /twilio route, signed as Twilio signs them (or with ``signature``)."""
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())

    async def post(path: str, params: dict[str, str], signature: str | None = None):
        url = settings.public_base_url.rstrip("/") + path
        header = signature if signature is not None else validator.compute_signature(url, params)
        return await client.post(path, data=params, headers={"X-Twilio-Signature": header})

    return post


def inbound(body: str, sender: str = PHONE) -> dict[str, str]:
    return {
        "MessageSid": "SM" + "a" * 32,
        "AccountSid": "AC" + "0" * 32,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }


async def sms_signup(
    client: AsyncTestClient, signed: Signed, variant_id: int, phone: str = PHONE, shop: str = SHOP
) -> int:
    form = {"variant_id": variant_id, "channel": "sms", "phone": phone, "consent": True}
    response = await client.post(signed(shop=shop), json=form)
    assert response.status_code in (200, 201), response.text
    return int(response.json()["id"])


async def test_stop_unsubscribes_every_sms_subscription_of_the_phone(
    client: AsyncTestClient, signed: Signed, twilio_post, tables
) -> None:
    here = [await sms_signup(client, signed, 7), await sms_signup(client, signed, 8)]
    elsewhere = await sms_signup(client, signed, 7, shop="other-shop.myshopify.com")
    someone_else = await sms_signup(client, signed, 7, OTHER_PHONE)
    email = (await client.post(signed(), json={"variant_id": 7, "email": "ada@example.com"})).json()["id"]

    response = await twilio_post("/twilio/inbound", inbound("Stop"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text.endswith("<Response/>")  # Twilio answers STOP itself on a long code
    states = [await tables.state(i) for i in (*here, elsewhere, someone_else, email)]
    assert states == ["unsubscribed", "unsubscribed", "unsubscribed", "confirmed", "confirmed"]
    events = await tables.db.fetch(
        "SELECT source, detail FROM consent_events WHERE kind = 'unsubscribed' ORDER BY id"
    )
    assert len(events) == 3
    assert {e["source"] for e in events} == {"sms-keyword"}
    assert all(PHONE not in e["detail"] for e in events)
    again = await twilio_post("/twilio/inbound", inbound("STOPALL"))
    assert again.status_code == 200
    assert len(await tables.db.fetch("SELECT 1 FROM consent_events WHERE kind = 'unsubscribed'")) == 3


async def test_start_resumes_and_yes_confirms(
    client: AsyncTestClient, signed: Signed, twilio_post, tables
) -> None:
    stopped = await sms_signup(client, signed, 7)
    await twilio_post("/twilio/inbound", inbound("STOP"))
    await tables.set_rules(double_opt_in="email+sms")
    pending = await sms_signup(client, signed, 9, OTHER_PHONE)
    assert await tables.state(pending) == "pending"

    start = await twilio_post("/twilio/inbound", inbound("start"))
    assert (start.status_code, start.text.endswith("<Response/>")) == (200, True)
    assert await tables.state(stopped) == "confirmed"
    assert await tables.kinds(stopped) == ["subscribed", "unsubscribed", "resubscribed"]

    yes = await twilio_post("/twilio/inbound", inbound("YES", OTHER_PHONE))
    assert yes.status_code == 200
    assert "<Message>You&apos;re subscribed" in yes.text or "<Message>You're subscribed" in yes.text
    assert await tables.state(pending) == "confirmed"
    assert await tables.kinds(pending) == ["subscribed", "confirmed"]


async def test_other_messages_and_unknown_numbers_change_nothing(
    client: AsyncTestClient, signed: Signed, twilio_post, tables
) -> None:
    subscription_id = await sms_signup(client, signed, 7)
    for params in (inbound("don't stop me now"), inbound("STOP", "+14155550000"), inbound("STOP", "garbage")):
        response = await twilio_post("/twilio/inbound", params)
        assert (response.status_code, response.text.endswith("<Response/>")) == (200, True)
    assert await tables.kinds(subscription_id) == ["subscribed"]


@pytest.mark.parametrize("path", ["/twilio/inbound", "/twilio/status"])
async def test_a_wrong_signature_is_403_and_changes_nothing(
    client: AsyncTestClient, signed: Signed, twilio_post, tables, settings: Settings, path: str
) -> None:
    subscription_id = await sms_signup(client, signed, 7)
    params = {**inbound("STOP"), "MessageStatus": "failed", "ErrorCode": "21610"}
    forged = RequestValidator("not-the-auth-token").compute_signature(settings.public_base_url + path, params)
    for signature in (forged, ""):
        response = await twilio_post(path, params, signature=signature)
        assert response.status_code == 403
    tampered = RequestValidator(settings.twilio_auth_token.get_secret_value()).compute_signature(
        settings.public_base_url + path, {**params, "Body": "hello"}
    )
    assert (await twilio_post(path, params, signature=tampered)).status_code == 403
    assert await tables.kinds(subscription_id) == ["subscribed"]


async def sent_job(tables, subscription_id: int, sid: str) -> int:
    """A sent job of one subscription and its attempt log with Twilio's MessageSid (as the sender writes)."""
    db = tables.db
    tenant = await db.fetchval("SELECT tenant FROM subscriptions WHERE id = $1", subscription_id)
    event = await db.fetchval(
        "INSERT INTO restock_events (tenant, variant_id, available, restock_window, source, detected_at)"
        " VALUES ($1, 7, 5, 1, 'webhook', now()) RETURNING id",
        tenant,
    )
    job = await db.fetchval(
        "INSERT INTO notification_jobs (tenant, restock_event, subscription, variant_id, channel,"
        " notification_key, state, attempt, priority_at, created_at, updated_at)"
        " VALUES ($1, $2, $3, 7, 'sms', $4, 'sent', 1, now(), now(), now()) RETURNING id",
        tenant,
        event,
        subscription_id,
        f"7:{subscription_id}:{sid}",
    )
    return await db.fetchval(
        "INSERT INTO notification_logs (tenant, job, attempt, channel, outcome, provider,"
        " provider_message_id, variables, started_at)"
        " VALUES ($1, $2, 1, 'sms', 'sent', 'twilio', $3, '{}'::jsonb, now()) RETURNING id",
        tenant,
        job,
        sid,
    )


def status(sid: str, message_status: str, error_code: str | None = None) -> dict[str, str]:
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": message_status,
        "SmsStatus": message_status,
        "AccountSid": "AC" + "0" * 32,
        "To": PHONE,
        "From": "+15005550006",
        "ApiVersion": "2010-04-01",
    }
    return params | ({"ErrorCode": error_code} if error_code else {})


async def test_status_callbacks_record_the_latest_status(
    client: AsyncTestClient, signed: Signed, twilio_post, tables
) -> None:
    sid = "SM" + "1" * 32
    log_id = await sent_job(tables, await sms_signup(client, signed, 7), sid)
    for message_status in ("sent", "delivered", "sent"):  # the last one arrives late
        response = await twilio_post("/twilio/status", status(sid, message_status))
        assert response.status_code == 200
    row = await tables.db.fetchrow(
        "SELECT delivery_status, error_code FROM notification_logs WHERE id = $1", log_id
    )
    assert (row["delivery_status"], row["error_code"]) == ("delivered", None)


@pytest.mark.parametrize("code", ["30005", "30006"])
async def test_carrier_verdicts_are_recorded_as_permanent(
    client: AsyncTestClient, signed: Signed, twilio_post, tables, code: str
) -> None:
    sid = "SM" + code * 6 + "ab"
    subscription_id = await sms_signup(client, signed, 7)
    log_id = await sent_job(tables, subscription_id, sid)
    assert (await twilio_post("/twilio/status", status(sid, "sent"))).status_code == 200
    assert (await twilio_post("/twilio/status", status(sid, "undelivered", code))).status_code == 200
    row = await tables.db.fetchrow("SELECT * FROM notification_logs WHERE id = $1", log_id)
    assert (row["delivery_status"], row["error_code"], row["error_kind"]) == (
        "undelivered",
        code,
        "permanent",
    )
    assert await tables.state(subscription_id) == "confirmed"  # a bad number is not an opt-out


async def test_an_opt_out_receipt_unsubscribes(
    client: AsyncTestClient, signed: Signed, twilio_post, tables
) -> None:
    sid = "SM" + "2" * 32
    subscription_id = await sms_signup(client, signed, 7)
    await sent_job(tables, subscription_id, sid)
    assert (await twilio_post("/twilio/status", status(sid, "failed", "21610"))).status_code == 200
    assert await tables.state(subscription_id) == "unsubscribed"
    event = (await tables.rows("consent_events"))[-1]
    assert (event["kind"], event["source"]) == ("unsubscribed", "provider")


async def test_unknown_or_malformed_status_callbacks(client: AsyncTestClient, twilio_post, tables) -> None:
    assert (await twilio_post("/twilio/status", status("SM" + "9" * 32, "delivered"))).status_code == 200
    assert (await twilio_post("/twilio/status", status("SM" + "9" * 32, "exploded"))).status_code == 400
    assert (await twilio_post("/twilio/status", {"MessageStatus": "sent"})).status_code == 400
    assert await tables.rows("notification_logs") == []


async def test_an_oversized_webhook_is_413(
    client: AsyncTestClient, signed: Signed, twilio_post, tables
) -> None:
    subscription_id = await sms_signup(client, signed, 7)
    response = await twilio_post("/twilio/inbound", {**inbound("STOP"), "Pad": "x" * 20_000})
    assert response.status_code == 413
    assert await tables.kinds(subscription_id) == ["subscribed"]
