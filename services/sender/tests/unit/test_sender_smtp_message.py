"""The email the SMTP provider builds, how SMTP failures become data, the templates, the CLI."""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import subprocess
import sys
from email.utils import parseaddr

import aiosmtplib
import pytest

from restock_sender.delivery import ProviderError
from restock_sender.ports import EmailMessage, RenderError, TemplateRecord
from restock_sender.providers.smtp import compose, flatten, message_id, provider_error
from restock_sender.templates import BUILTIN_EMAIL, JinjaRenderer, restock_variables


def test_message_id_is_derived_from_the_notification_key() -> None:
    digest = hashlib.sha256(b"42:7:20000").hexdigest()[:32]
    assert message_id("42:7:20000", "s.myshopify.com") == f"<{digest}@restock.s.myshopify.com>"
    assert message_id("42:7:20000", "s.myshopify.com") != message_id("42:8:20000", "s.myshopify.com")


def test_compose_is_multipart_with_our_headers() -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    message = EmailMessage(
        to="a@example.com",
        subject="Shirt is back in stock",
        text="plain",
        html="<p>h</p>",
        notification_key="1:2:3",
        shop_domain="s.myshopify.com",
        traceparent=traceparent,
    )
    mime = compose(message, "Restock <alerts@restock.localhost>")
    assert mime["Message-ID"] == message_id("1:2:3", "s.myshopify.com")
    assert mime["traceparent"] == traceparent
    assert mime["From"] == "Restock <alerts@restock.localhost>"
    assert mime.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in mime.get_payload()]
    assert parts == ["text/plain", "text/html"]


LONG_URL = "https://restock.example/u/" + "WzEsIlFqV1U5bUpoUy13Il0.axZsUQ.-UHrY5wtPh9gv7flKwUpD_F27W8" * 2
LONG_SUBJECT = " ".join(
    ["Zurück auf Lager: Kapuzenpullover \u2013 Größe M, ein sehr langer Titel mit Ümläuten"] * 3
)


def round_trip(message: EmailMessage, sender: str) -> email.message.EmailMessage:
    raw = flatten(compose(message, sender), utf8=False, eight_bit=True)
    assert raw.isascii(), "7-bit clean: any server takes it, with or without 8BITMIME"
    assert max(len(line) for line in raw.split(b"\n")) <= 998  # RFC 5322's line limit
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


@pytest.mark.parametrize(
    ("to", "sender", "subject", "text", "html"),
    [
        ("a@example.com", "Restock <alerts@restock.localhost>", "Shirt is back", "plain", "<p>h</p>"),
        ("a@example.com", "alerts@restock.localhost", "Shirt is back", "plain only", None),
        (
            '"Dupont, Zoë" <zoe@example.com>',
            "Café Shop <a@cafe.example>",
            "Größe M \u2013 zurück",
            "12 €",
            "<p>€</p>",
        ),
        ("Ōkubo <o@example.jp>", "Shop <a@s.example>", LONG_SUBJECT, "x" * 2000, "<p>" + "é" * 3000 + "</p>"),
        (
            '"Quote \\"Q\\" Name" <q@example.com>',
            "Shop <a@s.example>",
            "Tom & <Jerry>",
            "l1\nl2\n",
            "<b>&amp;</b>",
        ),
    ],
)
def test_what_a_mail_client_reads_is_what_was_composed(
    to: str, sender: str, subject: str, text: str, html: str | None
) -> None:
    message = EmailMessage(to, subject, text, html, "1:2:3", "s.myshopify.com", None, LONG_URL)
    parsed = round_trip(message, sender)
    assert str(parsed["Subject"]) == subject
    assert parseaddr(str(parsed["To"])) == parseaddr(to)
    assert parseaddr(str(parsed["From"])) == parseaddr(sender)
    assert parsed["Message-ID"] == message_id("1:2:3", "s.myshopify.com")
    assert parsed["List-Unsubscribe"] == f"<{LONG_URL}>"  # a long token, not folded before it
    plain = parsed.get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content() == text
    rich = parsed.get_body(preferencelist=("html",))
    if html is None:
        assert parsed.get_content_type() == "text/plain"
    else:
        assert rich is not None
        assert rich.get_content() == html


@pytest.mark.parametrize("field", ["subject", "to"])
def test_a_line_break_in_a_header_is_refused_not_sent(field: str) -> None:
    values = {"to": "a@example.com", "subject": "Shirt"}
    values[field] += "\r\nBcc: victim@example.com"
    message = EmailMessage(values["to"], values["subject"], "t", None, "1:2:3", "s.myshopify.com", None)
    with pytest.raises(ValueError):
        compose(message, "Shop <a@s.example>")


def test_an_internationalized_address_is_written_as_utf8_for_smtputf8() -> None:
    message = EmailMessage(
        "Zoë <zoë@exämple.com>", "Größe M", "t", "<p>h</p>", "1:2:3", "s.myshopify.com", None
    )
    raw = flatten(compose(message, "Shop <a@s.example>"), utf8=True, eight_bit=True)
    assert "To: Zoë <zoë@exämple.com>".encode() in raw  # RFC 6531: the address itself, not encoded words
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(parsed["Subject"]) == "Größe M"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@x")]),
            ("response", "550"),
        ),
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), ("response", "535")),
        (aiosmtplib.SMTPDataError(451, "4.3.0 try later"), ("response", "451")),
        (aiosmtplib.SMTPReadTimeoutError("timed out"), ("timeout", None)),
        (aiosmtplib.SMTPServerDisconnected("gone"), ("connection", None)),
        (aiosmtplib.SMTPConnectError("refused"), ("connection", None)),
        (ConnectionRefusedError("refused"), ("connection", None)),
        (aiosmtplib.SMTPNotSupported("no SMTPUTF8"), ("protocol", None)),
    ],
)
def test_smtp_failures_become_provider_errors(error: Exception, expected: tuple[str, str | None]) -> None:
    converted = provider_error(error)
    assert isinstance(converted, ProviderError)
    assert (converted.kind, converted.code) == expected


def test_builtin_template_renders_with_escaping_in_html_only() -> None:
    variables = restock_variables("s.myshopify.com", 42, "Tom & <Jerry>")
    rendered = JinjaRenderer().render(BUILTIN_EMAIL, variables)
    assert rendered.subject == "Tom & <Jerry> is back in stock"
    assert "Tom & <Jerry>" in rendered.text
    assert rendered.html is not None
    assert "Tom &amp; &lt;Jerry&gt;" in rendered.html
    assert 'href="https://s.myshopify.com/variants/42"' in rendered.html


def test_subject_cannot_inject_headers() -> None:
    rendered = JinjaRenderer().render(BUILTIN_EMAIL, restock_variables("s", 1, "Shirt\r\nBcc: x@y"))
    assert "\n" not in rendered.subject
    assert "\r" not in rendered.subject


def test_undefined_variable_and_sandbox_escape_are_render_errors() -> None:
    renderer = JinjaRenderer()
    missing = TemplateRecord("t", 1, "{{ nope }}", "x", None)
    with pytest.raises(RenderError):
        renderer.render(missing, {})
    unsafe = TemplateRecord("t", 2, "s", "{{ ''.__class__.__mro__ }}", None)
    with pytest.raises(RenderError):
        renderer.render(unsafe, {})


def test_an_unknown_channel_exits_with_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "restock_sender", "--channel", "fax"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid choice: 'fax'" in result.stderr
