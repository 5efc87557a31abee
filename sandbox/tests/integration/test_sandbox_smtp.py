"""The sandbox SMTP server over the wire: messages reach the inbox; injected faults are answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest
from pydantic import SecretStr

from restock_common.settings import Settings
from restock_sandbox.app import create_app, http_port

pytestmark = pytest.mark.integration


def message(to: str, subject: str = "Back in stock") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Restock <alerts@restock.localhost>"
    mail["To"] = to
    mail["Subject"] = subject
    mail["Message-ID"] = "<0123456789abcdef@restock.localhost>"
    mail["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    mail.set_content("Variant 42 is back.")
    mail.add_alternative("<p>Variant 42 is <b>back</b>.</p>", subtype="html")
    return mail


@pytest.fixture
async def http(sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url, timeout=5) as client:
        yield client


async def send(sandbox, mail: EmailMessage) -> None:
    await aiosmtplib.send(
        mail, hostname=sandbox.settings.smtp_host, port=sandbox.settings.smtp_port, timeout=5
    )


async def test_a_sent_email_appears_in_the_inbox_with_its_headers(sandbox, http: httpx.AsyncClient) -> None:
    await send(sandbox, message("ada@example.com"))

    messages = (await http.get("/inbox")).json()
    assert len(messages) == 1
    received = messages[0]
    assert received["mail_from"] == "alerts@restock.localhost"
    assert received["rcpt_tos"] == ["ada@example.com"]
    assert received["subject"] == "Back in stock"
    assert received["message_id"] == "<0123456789abcdef@restock.localhost>"
    assert received["text"].strip() == "Variant 42 is back."
    assert received["html"].strip() == "<p>Variant 42 is <b>back</b>.</p>"
    headers = dict(received["headers"])
    assert headers["traceparent"] == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert headers["To"] == "ada@example.com"
    assert received["id"]
    assert received["received_at"]


async def test_inbox_filters_by_recipient_and_clears(sandbox, http: httpx.AsyncClient) -> None:
    await send(sandbox, message("ada@example.com"))
    await send(sandbox, message("grace@example.org"))
    assert [m["rcpt_tos"] for m in (await http.get("/inbox", params={"to": "Grace@example.org"})).json()] == [
        ["grace@example.org"]
    ]
    assert (await http.delete("/inbox")).status_code == 204
    assert (await http.get("/inbox")).json() == []


async def test_a_fault_rule_answers_its_code_k_times_then_the_server_accepts(
    sandbox, http: httpx.AsyncClient
) -> None:
    rule = {"match": "example.com", "code": 451, "message": "4.7.1 greylisted, try later", "times": 2}
    assert (await http.post("/smtp/faults", json=rule)).status_code == 201

    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sandbox, message("ada@example.com"))
        assert refused.value.recipients[0].code == 451
    await send(sandbox, message("ada@example.com"))

    assert [m["rcpt_tos"] for m in (await http.get("/inbox")).json()] == [["ada@example.com"]]
    assert (await http.get("/smtp/faults")).json() == []


async def test_a_rule_matches_only_its_recipients(sandbox, http: httpx.AsyncClient) -> None:
    await http.post(
        "/smtp/faults", json={"match": "ada@example.com", "code": 550, "message": "5.1.1 no such user"}
    )
    await send(sandbox, message("grace@example.com"))
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
        await send(sandbox, message("ADA@example.com"))
    assert refused.value.recipients[0].code == 550
    assert [m["rcpt_tos"] for m in (await http.get("/inbox")).json()] == [["grace@example.com"]]


async def test_a_data_stage_rule_without_times_holds_until_cleared(sandbox, http: httpx.AsyncClient) -> None:
    rule = {"match": "*", "code": 552, "message": "5.3.4 message too big", "times": None, "stage": "data"}
    await http.post("/smtp/faults", json=rule)
    for _ in range(3):
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(sandbox, message("ada@example.com"))
        assert refused.value.code == 552
    assert (await http.delete("/smtp/faults")).status_code == 204
    await send(sandbox, message("ada@example.com"))
    assert len((await http.get("/inbox")).json()) == 1


@pytest.mark.parametrize(
    "rule",
    [
        {"match": "*", "code": 250},
        {"match": "", "code": 451},
        {"match": "*", "code": 451, "times": 0},
        {"code": 451},
        {"match": "*", "code": 421, "seconds": 0},
        {"match": "*", "code": 421, "seconds": 7200},
        {"match": "*"},  # does nothing
        {"match": "*", "drop": True, "code": 421},  # a dropped connection answers nothing
        {"match": "*", "drop": True, "accepted": True},  # nothing to accept at RCPT
        {"match": "*", "stage": "data", "accepted": True, "delay_seconds": 1},
        {"match": "*", "stage": "auth", "drop": True},
        {"match": "*", "stage": "auth", "code": 535, "delay_seconds": 1},
        {"match": "*", "delay_seconds": 601},
    ],
)
async def test_invalid_rules_are_400(sandbox, http: httpx.AsyncClient, rule: dict) -> None:
    assert (await http.post("/smtp/faults", json=rule)).status_code == 400
    assert (await http.get("/smtp/faults")).json() == []


async def test_an_outage_refuses_every_attempt_for_its_seconds_then_recovers(
    sandbox, http: httpx.AsyncClient
) -> None:
    rule = {"match": "*", "code": 421, "message": "4.3.2 try again later", "seconds": 0.5, "times": 1}
    assert (await http.post("/smtp/faults", json=rule)).status_code == 201
    for _ in range(3):  # ``times`` is ignored during an outage: every attempt is refused
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await send(sandbox, message("ada@example.com"))
        assert [error.code for error in refused.value.recipients] == [421]
    await asyncio.sleep(0.6)
    await send(sandbox, message("ada@example.com"))
    assert (await http.get("/smtp/faults")).json() == []


@pytest.mark.parametrize("stage", ["rcpt", "data"])
async def test_a_slow_answer_comes_after_its_delay_and_the_message_is_accepted(
    sandbox, http: httpx.AsyncClient, stage: str
) -> None:
    rule = {"match": "ada@example.com", "stage": stage, "delay_seconds": 0.6}
    assert (await http.post("/smtp/faults", json=rule)).status_code == 201
    loop = asyncio.get_running_loop()
    started = loop.time()
    await send(sandbox, message("ada@example.com"))
    assert loop.time() - started >= 0.6

    started = loop.time()
    await send(sandbox, message("ada@example.com"))  # the rule was used up
    assert loop.time() - started < 0.5
    assert [m["rcpt_tos"] for m in (await http.get("/inbox")).json()] == [["ada@example.com"]] * 2


async def test_a_slow_answer_applies_only_to_matching_recipients(sandbox, http: httpx.AsyncClient) -> None:
    await http.post("/smtp/faults", json={"match": "slow.example", "delay_seconds": 2, "times": None})
    loop = asyncio.get_running_loop()
    started = loop.time()
    await send(sandbox, message("ada@fast.example"))
    assert loop.time() - started < 1


async def test_a_drop_at_rcpt_closes_the_connection_without_a_reply(sandbox, http: httpx.AsyncClient) -> None:
    assert (await http.post("/smtp/faults", json={"match": "example.com", "drop": True})).status_code == 201
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(sandbox, message("ada@example.com"))
    assert (await http.get("/inbox")).json() == []


@pytest.mark.parametrize(("accepted", "stored"), [(True, 1), (False, 0)])
async def test_a_drop_after_the_final_dot_keeps_the_message_only_when_accepted(
    sandbox, http: httpx.AsyncClient, accepted: bool, stored: int
) -> None:
    rule = {"match": "*", "stage": "data", "drop": True, "accepted": accepted}
    assert (await http.post("/smtp/faults", json=rule)).status_code == 201
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await send(sandbox, message("ada@example.com"))
    assert len((await http.get("/inbox")).json()) == stored


async def test_a_drop_for_n_attempts_then_the_server_accepts(sandbox, http: httpx.AsyncClient) -> None:
    rule = {"match": "ada@example.com", "drop": True, "times": 2}
    assert (await http.post("/smtp/faults", json=rule)).status_code == 201
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await send(sandbox, message("ada@example.com"))
    await send(sandbox, message("ada@example.com"))
    assert len((await http.get("/inbox")).json()) == 1
    assert (await http.get("/smtp/faults")).json() == []


@pytest.fixture
async def guarded(serve, sandbox_settings: Settings) -> AsyncIterator[Settings]:
    """A sandbox whose SMTP server requires the login restock / right-password."""
    credentials = {"smtp_username": "restock", "smtp_password": SecretStr("right-password")}
    settings = sandbox_settings.model_copy(update=credentials)
    async with serve(create_app(settings), http_port(settings)):
        yield settings


async def login_and_send(settings: Settings, username: str | None, password: str | None) -> None:
    await aiosmtplib.send(
        message("ada@example.com"),
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=username,
        password=password,
        timeout=5,
    )


@pytest.mark.parametrize(
    ("username", "password", "refusal"),
    [
        ("restock", "right-password", None),
        ("restock", "wrong-password", "535 5.7.8 Authentication credentials invalid"),
        ("someone", "right-password", "535 5.7.8 Authentication credentials invalid"),
        (None, None, "530 5.7.0 Authentication required"),
    ],
)
async def test_a_sandbox_with_credentials_refuses_any_other_login(
    guarded: Settings, username: str | None, password: str | None, refusal: str | None
) -> None:
    if refusal is None:
        await login_and_send(guarded, username, password)
        return
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await login_and_send(guarded, username, password)
    assert f"{refused.value.code} {refused.value.message}" == refusal


async def test_an_auth_outage_refuses_every_login_for_its_seconds_then_any_login_is_good(
    sandbox, http: httpx.AsyncClient
) -> None:
    rule = {
        "match": "*",
        "stage": "auth",
        "code": 535,
        "message": "5.7.8 Authentication credentials invalid",
        "seconds": 0.5,
    }
    assert (await http.post("/smtp/faults", json=rule)).status_code == 201
    await send(sandbox, message("ada@example.com"))  # a client that does not log in never meets it
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as refused:
        await login_and_send(sandbox.settings, "anyone", "anything")
    assert refused.value.code == 535
    await asyncio.sleep(0.6)
    await login_and_send(sandbox.settings, "anyone", "anything")
    assert len((await http.get("/inbox")).json()) == 2


async def test_stats_count_duplicate_message_ids(sandbox, http: httpx.AsyncClient) -> None:
    await send(sandbox, message("ada@example.com"))
    await send(sandbox, message("grace@example.org"))  # the same Message-ID: a duplicate send
    stats = (await http.get("/inbox/stats")).json()
    assert stats["messages"] == 2
    assert stats["distinct_message_ids"] == 1
    assert stats["duplicates"] == {"<0123456789abcdef@restock.localhost>": 2}
    ids = (await http.get("/inbox/message-ids")).json()
    assert ids == ["<0123456789abcdef@restock.localhost>"] * 2


async def test_health(sandbox, http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"smtp": "ok"}
