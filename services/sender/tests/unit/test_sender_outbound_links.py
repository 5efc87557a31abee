"""Public links in messages (one-click unsubscribe, confirmation, status callbacks); Twilio errors as data."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from twilio.base.exceptions import TwilioRestException

from restock_common.links import LinkSigner
from restock_sender.delivery import ProviderError
from restock_sender.outbound import PublicLinks
from restock_sender.ports import EmailMessage
from restock_sender.providers.smtp import compose
from restock_sender.providers.twilio import TwilioProvider, provider_error

LINKS = PublicLinks(LinkSigner("unit-secret"), "https://restock.example/")


def email(list_unsubscribe: str | None) -> EmailMessage:
    return EmailMessage(
        to="a@example.com",
        subject="s",
        text="t",
        html=None,
        notification_key="1:2:3",
        shop_domain="s.myshopify.com",
        traceparent=None,
        list_unsubscribe=list_unsubscribe,
    )


def test_an_alert_carries_rfc_8058_one_click_unsubscribe() -> None:
    url = LINKS.unsubscribe(42)
    mime = compose(email(url), "Restock <alerts@restock.localhost>")
    assert mime["List-Unsubscribe"] == f"<{url}>"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_message_without_an_unsubscribe_url_has_no_such_headers() -> None:
    mime = compose(email(None), "Restock <alerts@restock.localhost>")
    assert mime["List-Unsubscribe"] is None
    assert mime["List-Unsubscribe-Post"] is None


def test_public_links_verify_for_their_purpose_only() -> None:
    signer = LinkSigner("unit-secret")
    unsubscribe, confirm = LINKS.unsubscribe(42), LINKS.confirm(42)
    assert unsubscribe.startswith("https://restock.example/u/")
    assert confirm.startswith("https://restock.example/c/")
    assert signer.verify("unsubscribe", unsubscribe.rsplit("/", 1)[1]).subscription_id == 42
    assert signer.verify("confirm", confirm.rsplit("/", 1)[1]).subscription_id == 42
    assert LINKS.sms_status_callback(7, 2) == "https://restock.example/twilio/status?job=7&attempt=2"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TwilioRestException(400, "/Messages.json", "invalid", code=21211), ("response", "21211", 400)),
        (TwilioRestException(429, "/Messages.json", "slow down", code=20429), ("response", "20429", 429)),
        (TwilioRestException(401, "/Messages.json", "Authenticate", code=20003), ("response", "20003", 401)),
        (TimeoutError(), ("timeout", None, None)),
        (aiohttp.ServerDisconnectedError(), ("connection", None, None)),
        (aiohttp.ClientPayloadError("cut"), ("connection", None, None)),
        (ConnectionRefusedError("refused"), ("connection", None, None)),
        (ValueError("bad json"), ("protocol", None, None)),
    ],
)
def test_twilio_failures_become_provider_errors(
    error: Exception, expected: tuple[str, str | None, int | None]
) -> None:
    failure = provider_error(error)
    assert (failure.kind, failure.code, failure.status) == expected
    assert failure.provider == "twilio"


async def test_the_twilio_clients_request_log_never_carries_the_number(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider = TwilioProvider(
        account_sid="AC" + "0" * 32,
        auth_token="t",
        base_url="http://127.0.0.1:9/twilio",
        sender="+15005550006",
    )
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError):
            await provider.sent_to("+14155550123", 5)  # nobody listens on port 9: a connection error
    finally:
        await provider.close()
    assert "+14155550123" not in caplog.text
    assert "%2B14155550123" not in caplog.text
