"""The sandbox Twilio peer over the wire, driven by the official ``twilio`` client (AsyncTwilioHttpClient):
create, list, fetch, every injected error as ``TwilioRestException``, signed status callbacks and inbound
webhooks that twilio's own ``RequestValidator`` accepts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

pytestmark = pytest.mark.integration

SHOPPER = "+14155550123"
OTHER = "+14155550199"
FROM = "+15005550006"


@pytest.fixture
async def http(sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=10) as client:
        yield client


def _client(sandbox, token: str | None = None) -> Client:
    settings = sandbox.settings
    client = Client(
        settings.twilio_account_sid,
        token or settings.twilio_auth_token.get_secret_value(),
        http_client=AsyncTwilioHttpClient(),
    )
    client.api.base_url = f"{sandbox.url}/twilio"
    return client


@pytest.fixture
async def twilio(sandbox) -> AsyncIterator[Client]:
    client = _client(sandbox)
    yield client
    await client.http_client.close()


async def _until(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _eventually(probe, what: str, timeout: float = 10.0):
    """Await ``probe()`` until it returns something truthy (status changes happen in the background)."""
    deadline = time.monotonic() + timeout
    for _ in range(100_000):
        if value := await probe():
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    raise AssertionError(what)


def _form(request) -> dict[str, str]:
    return dict(parse_qsl(request.body.decode(), keep_blank_values=True))


async def test_create_returns_a_message_the_client_parses_and_the_peer_records(
    sandbox, twilio: Client, http: httpx.AsyncClient
) -> None:
    message = await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="Back in stock: Demo Hoodie M")

    assert message.sid.startswith("SM")
    assert len(message.sid) == 34
    int(message.sid[2:], 16)
    assert (message.status, message.to, message.from_, message.num_segments) == ("queued", SHOPPER, FROM, "1")
    assert message.account_sid == sandbox.settings.twilio_account_sid
    assert message.api_version == "2010-04-01"
    assert isinstance(message.date_created, datetime)
    assert message.error_code is None
    assert message.price is None
    assert message.uri.endswith(f"/Messages/{message.sid}.json")

    recorded = (await http.get("/twilio/messages", params={"to": SHOPPER})).json()
    assert [(m["sid"], m["body"], m["segments"], m["encoding"]) for m in recorded] == [
        (message.sid, "Back in stock: Demo Hoodie M", 1, "GSM-7")
    ]
    assert recorded[0]["accepted_at"]


async def test_segments_are_counted_honestly_over_the_wire(twilio: Client) -> None:
    long_gsm = await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="a" * 161)
    emoji = await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="Back in stock \N{FIRE}")
    assert (long_gsm.num_segments, emoji.num_segments) == ("2", "1")


async def test_traceparent_and_messaging_service_are_recorded(sandbox, http: httpx.AsyncClient) -> None:
    settings = sandbox.settings
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await http.post(
        f"/twilio/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json",
        data={"To": SHOPPER, "MessagingServiceSid": "MG" + "1" * 32, "Body": "hi"},
        auth=(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()),
        headers={"traceparent": traceparent},
    )
    assert response.status_code == 201, response.text
    assert response.json()["messaging_service_sid"] == "MG" + "1" * 32
    (recorded,) = (await http.get("/twilio/messages")).json()
    assert recorded["traceparent"] == traceparent
    assert recorded["headers"]["traceparent"] == traceparent


async def test_status_callbacks_are_sent_then_delivered_and_twilio_validates_their_signature(
    sandbox, receiver, twilio: Client, http: httpx.AsyncClient
) -> None:
    assert (await http.post("/twilio/config", json={"status_delay_ms": 0})).status_code == 200
    callback_url = f"{receiver.url}/twilio/status?job=42"
    message = await twilio.messages.create_async(
        to=SHOPPER, from_=FROM, body="hello", status_callback=callback_url
    )

    await _until(lambda: len(receiver.requests) == 2, "two status callbacks")
    validator = RequestValidator(sandbox.settings.twilio_auth_token.get_secret_value())
    forms = [_form(r) for r in receiver.requests]
    assert [f["MessageStatus"] for f in forms] == ["sent", "delivered"]
    for request, form in zip(receiver.requests, forms, strict=True):
        assert request.path == "/twilio/status"
        assert form["MessageSid"] == form["SmsSid"] == message.sid
        assert (form["To"], form["From"], form["ApiVersion"]) == (SHOPPER, FROM, "2010-04-01")
        assert form["AccountSid"] == sandbox.settings.twilio_account_sid
        assert "ErrorCode" not in form
        assert validator.validate(callback_url, form, request.headers["x-twilio-signature"])
        assert not validator.validate(
            callback_url, {**form, "MessageStatus": "failed"}, request.headers["x-twilio-signature"]
        )
    fetched = await twilio.messages(message.sid).fetch_async()
    assert fetched.status == "delivered"
    assert fetched.date_sent is not None
    recorded = (await http.get("/twilio/callbacks")).json()
    assert [(c["kind"], c["params"]["MessageStatus"], c["status"]) for c in recorded] == [
        ("status", "sent", 200),
        ("status", "delivered", 200),
    ]


async def test_status_callbacks_can_be_turned_off_and_statuses_still_advance(
    receiver, twilio: Client, http: httpx.AsyncClient
) -> None:
    answer = (
        await http.post("/twilio/config", json={"status_delay_ms": 0, "status_callbacks": False})
    ).json()
    assert answer == {"status_delay_ms": 0, "status_callbacks": False}
    message = await twilio.messages.create_async(
        to=SHOPPER, from_=FROM, body="hello", status_callback=f"{receiver.url}/twilio/status"
    )

    async def delivered() -> bool:
        return (await twilio.messages(message.sid).fetch_async()).status == "delivered"

    deadline = asyncio.get_running_loop().time() + 10
    while not await delivered():
        assert asyncio.get_running_loop().time() < deadline, "the message never reached delivered"
        await asyncio.sleep(0.05)
    assert receiver.requests == []
    assert (await http.post("/twilio/config", json={"status_callbacks": True})).json()["status_callbacks"]


@pytest.mark.parametrize(
    ("code", "status"),
    [(21211, 400), (21610, 400), (21614, 400), (21408, 400), (20429, 429), (20003, 401), (500, 500)],
)
async def test_an_injected_error_is_raised_by_the_client_with_its_code(
    twilio: Client, http: httpx.AsyncClient, code: int, status: int
) -> None:
    added = await http.post(
        "/twilio/faults", json={"match": SHOPPER, "mode": "error", "code": code, "times": 2}
    )
    assert added.status_code == 201, added.text

    for _ in range(2):
        with pytest.raises(TwilioRestException) as raised:
            await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="hi")
        assert (raised.value.code, raised.value.status) == (20500 if code == 500 else code, status)
    # Other recipients are untouched, and the rule is used up after its two times.
    await twilio.messages.create_async(to=OTHER, from_=FROM, body="hi")
    await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="hi")
    assert [m["to"] for m in (await http.get("/twilio/messages")).json()] == [OTHER, SHOPPER]


async def test_error_json_is_twilios(sandbox, http: httpx.AsyncClient) -> None:
    await http.post("/twilio/faults", json={"match": "+44*", "mode": "error", "code": 21211})
    settings = sandbox.settings
    response = await http.post(
        f"/twilio/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json",
        data={"To": "+447700900123", "From": FROM, "Body": "hi"},
        auth=(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()),
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": 21211,
        "message": "The 'To' number +447700900123 is not a valid phone number.",
        "more_info": "https://www.twilio.com/docs/errors/21211",
        "status": 400,
    }


async def test_wrong_credentials_are_refused_with_20003(sandbox, http: httpx.AsyncClient) -> None:
    client = _client(sandbox, token="wrong-token")
    try:
        with pytest.raises(TwilioRestException) as raised:
            await client.messages.create_async(to=SHOPPER, from_=FROM, body="hi")
    finally:
        await client.http_client.close()
    assert (raised.value.code, raised.value.status) == (20003, 401)
    assert (await http.get("/twilio/messages")).json() == []


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": FROM, "Body": "hi"}, 21604),
        ({"To": "0044 7700", "From": FROM, "Body": "hi"}, 21211),
        ({"To": SHOPPER, "Body": "hi"}, 21603),
        ({"To": SHOPPER, "From": FROM}, 21602),
        ({"To": SHOPPER, "From": FROM, "Body": "x" * 1601}, 21617),
    ],
)
async def test_bad_create_requests_get_twilios_validation_errors(sandbox, http, form, code) -> None:
    settings = sandbox.settings
    response = await http.post(
        f"/twilio/2010-04-01/Accounts/{settings.twilio_account_sid}/Messages.json",
        data=form,
        auth=(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()),
    )
    assert (response.status_code, response.json()["code"]) == (400, code)


async def test_a_carrier_failure_is_accepted_then_reported_undelivered(
    sandbox, receiver, twilio, http
) -> None:
    await http.post("/twilio/faults", json={"match": SHOPPER, "mode": "error", "code": 30005})
    callback_url = f"{receiver.url}/twilio/status"

    message = await twilio.messages.create_async(
        to=SHOPPER, from_=FROM, body="hi", status_callback=callback_url
    )

    assert message.status == "queued"
    assert receiver.requests == []  # the first callback follows the answer (250 ms by default)
    await _until(lambda: len(receiver.requests) == 2, "two status callbacks")
    forms = [_form(r) for r in receiver.requests]
    assert [(f["MessageStatus"], f.get("ErrorCode")) for f in forms] == [
        ("sent", None),
        ("undelivered", "30005"),
    ]
    fetched = await twilio.messages(message.sid).fetch_async()
    assert (fetched.status, fetched.error_code) == ("undelivered", 30005)


async def test_a_failed_final_status_skips_sent(receiver, twilio, http) -> None:
    await http.post(
        "/twilio/faults", json={"match": "*", "mode": "error", "code": 30006, "final_status": "failed"}
    )
    await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="hi", status_callback=f"{receiver.url}/s")
    await _until(lambda: len(receiver.requests) == 1, "one status callback")
    assert [(f["MessageStatus"], f["ErrorCode"]) for f in map(_form, receiver.requests)] == [
        ("failed", "30006")
    ]


async def test_a_dropped_connection_accepts_nothing(twilio, http) -> None:
    await http.post("/twilio/faults", json={"match": SHOPPER, "mode": "drop"})
    with pytest.raises(Exception) as raised:
        await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="hi")
    assert not isinstance(raised.value, TwilioRestException)
    assert (await http.get("/twilio/messages")).json() == []


async def test_a_drop_after_accept_is_found_by_listing_to_and_date_sent(twilio, http) -> None:
    await http.post("/twilio/faults", json={"match": SHOPPER, "mode": "drop-after-accept"})
    before = datetime.now(UTC) - timedelta(seconds=2)
    with pytest.raises(Exception) as raised:
        await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="did it go?")
    assert not isinstance(raised.value, TwilioRestException)

    found = await _eventually(
        lambda: twilio.messages.list_async(to=SHOPPER, date_sent_after=before), "the message listed as sent"
    )
    assert [m.body for m in found] == ["did it go?"]
    assert await twilio.messages.list_async(to=OTHER, date_sent_after=before) == []
    assert (
        await twilio.messages.list_async(to=SHOPPER, date_sent_after=datetime.now(UTC) + timedelta(hours=1))
        == []
    )


async def test_a_slow_answer_still_accepts(twilio, http) -> None:
    await http.post("/twilio/faults", json={"match": SHOPPER, "mode": "delay", "delay_ms": 300})
    started = time.monotonic()
    message = await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="hi")
    assert time.monotonic() - started >= 0.3
    assert message.status == "queued"


async def test_list_pages_follow_next_page_uri_newest_first(twilio, http) -> None:
    bodies = [f"m{n}" for n in range(5)]
    for body in bodies:
        await twilio.messages.create_async(to=SHOPPER, from_=FROM, body=body)
    await twilio.messages.create_async(to=OTHER, from_=FROM, body="not this one")

    listed = await twilio.messages.list_async(to=SHOPPER, page_size=2)

    assert [m.body for m in listed] == list(reversed(bodies))
    first_page = await twilio.messages.page_async(to=SHOPPER, page_size=2)
    assert first_page._payload["next_page_uri"].startswith("/2010-04-01/Accounts/")


async def test_date_sent_exact_day_filter(twilio) -> None:
    await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="today")
    today = datetime.now(UTC).date()

    async def on(day):
        return [m.body for m in await twilio.messages.list_async(to=SHOPPER, date_sent=day)]

    assert await _eventually(lambda: on(today), "the message sent today") == ["today"]
    assert await on(today - timedelta(days=1)) == []


async def test_inbound_message_is_posted_signed_and_the_answer_returned(sandbox, receiver, http) -> None:
    receiver.answers["/twilio/inbound"] = (200, "<Response/>")
    answer = (await http.post("/twilio/inbound", json={"from": SHOPPER, "body": "STOP"})).json()

    (request,) = receiver.requests
    form = _form(request)
    assert request.path == "/twilio/inbound"
    assert (form["From"], form["To"], form["Body"], form["NumMedia"]) == (SHOPPER, FROM, "STOP", "0")
    assert form["MessageSid"].startswith("SM")
    assert form["AccountSid"] == sandbox.settings.twilio_account_sid
    validator = RequestValidator(sandbox.settings.twilio_auth_token.get_secret_value())
    assert validator.validate(
        sandbox.settings.sandbox_twilio_inbound_url, form, request.headers["x-twilio-signature"]
    )
    assert answer["status"] == 200
    assert "Response" in answer["body"]


async def test_stats_count_the_most_messages_in_any_second(twilio, http) -> None:
    for _ in range(3):
        await twilio.messages.create_async(to=SHOPPER, from_=FROM, body="hi")
    stats = (await http.get("/twilio/stats")).json()
    assert stats["accepted"] == 3
    assert stats["segments"] == 3
    assert 1 <= stats["max_in_any_1s"] <= 3
    # Three messages to one number: two of them are duplicates by recipient.
    assert (stats["recipients"], stats["duplicates"]) == (1, 2)


async def test_unknown_fault_code_is_refused(http) -> None:
    response = await http.post("/twilio/faults", json={"match": SHOPPER, "mode": "error", "code": 12345})
    assert response.status_code == 400
