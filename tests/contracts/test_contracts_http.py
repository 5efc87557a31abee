"""Every HTTP service fuzzed on the real processes: schemathesis from each service's own OpenAPI schema where
the schema describes the input, hand-written Hypothesis strategies where it does not.

- Every answer is documented: its status (``status_code_conformance``), its content type (JSON, the
  public links' HTML pages, Twilio's TwiML; ``content_type_conformance``) and its body
  (``response_schema_conformance``). The schemas also document what the handlers read from the raw request
  (the Shopify webhook's signed JSON and headers, Twilio's signed forms, the App Proxy's signed query), so
  the fuzzer sends those too.
- Unsigned, the fuzzer meets the signature checks: 401 on the App Proxy routes, 403 on Twilio's webhooks,
  401 on Shopify's webhook and on the admin API (no session token); a forged public link token is a 400
  page. With an operator's session token, the admin API's query and body validation is fuzzed. Never a
  5xx; data the schema forbids is refused (``negative_data_rejection``).
- Signed as Shopify's App Proxy signs (``restock_sandbox.shopify.proxy.signed_params``, per case, now), the
  fuzzer reaches the signup validation, and a hand-written strategy aims at it: bad emails and phones,
  wrong types, huge fields -> a 4xx with a reason, never a 5xx; a refused signup writes nothing. Signed
  Shopify webhooks and Twilio callbacks with fuzzed payloads likewise reach their validation; forged ones
  are refused.
- The probes ``/healthz`` and ``/readyz`` are in every process's own schema and answer as it documents; the
  senders' ``/metrics`` (left out of their schema) is held to a hand-written one. The workers refuse unknown
  requests with a 4xx.
- After all of it every process still answers its readiness probe (and the package's stack asserts that
  each still stops gracefully).

schemathesis 4.32's pytest integration (``from_fixture``) does not run under pytest 9 (it assigns
``Node._nodeid``), so each operation is fuzzed through ``APIOperation.as_strategy`` under Hypothesis' own
``@given``. The operations are listed here: a route missing from its service's schema fails the test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from restock_common.settings import Settings
from restock_common.signatures import shopify_webhook_hmac, twilio_signature
from restock_sandbox.shopify.proxy import signed_params
from restock_sandbox.stack import Stack

if TYPE_CHECKING:
    from typing import TypeAlias

    Case: TypeAlias = schemathesis.Case[Any]

pytestmark = pytest.mark.e2e

FUZZ_SHOP = "contracts-fuzz.myshopify.com"  # see conftest: empty catalogue, double opt-in
WEBHOOK_SHOP = "contracts-webhooks.myshopify.com"

EXAMPLES = 30
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a loaded machine answers slowly; behaviour is asserted, not time
    database=None,  # nothing written into the checkout
    suppress_health_check=list(HealthCheck),
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
MODE_IDS = [mode.value for mode in MODES]
# Signed signups: created (201), already there (200), or refused by the signup's rules.
ACCEPTED_OR_REFUSED = {200, 201, 204, 400, 404, 409, 413, 415, 422}

Expectation = Callable[["Case", schemathesis.Response], None]


def load_schema(port: int) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/schema/openapi.json", timeout=10)


def fuzz_strategy(strategy: Any, expect: Expectation, prepare: Callable[[Case], None]) -> None:
    """Run the checks and ``expect`` on every case the strategy draws (``prepare`` edits it first)."""

    @FUZZ
    @given(case=strategy)
    def run(case: Case) -> None:
        prepare(case)
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        expect(case, response)

    run()


def operation_of(schema: schemathesis.BaseSchema, operation: str) -> Any:
    """``"POST /path"`` of the schema; fails when the service does not document it."""
    method, path = operation.split(" ", 1)
    try:
        return schema[path][method]
    except (KeyError, LookupError) as missing:
        raise AssertionError(f"{operation} is not in the service's OpenAPI schema") from missing


def refused_with(*statuses: int) -> Expectation:
    def expect(case: Case, response: schemathesis.Response) -> None:
        assert response.status_code in statuses, (response.status_code, response.text[:300], case.body)

    return expect


def _unchanged(_: Case) -> None:
    return None


def reason_of(response: schemathesis.Response | httpx.Response) -> str:
    """The ``detail`` of a Litestar error body ('' when there is none)."""
    try:
        body = json.loads(response.text)
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else ""


@pytest.fixture(scope="package")
def admin_schema(stack: Stack) -> schemathesis.BaseSchema:
    return load_schema(stack.ports.admin)


@pytest.fixture(scope="package")
def detector_schema(stack: Stack) -> schemathesis.BaseSchema:
    return load_schema(stack.ports.detector)


@pytest.fixture(scope="package")
def shopify_secret(contracts_env: dict[str, str]) -> str:
    return contracts_env["RESTOCK_SHOPIFY_API_SECRET"]


# ------------------------------------------------------------------------------------------- unsigned


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("operation", ["POST /proxy/subscriptions", "POST /proxy/views"])
def test_app_proxy_refuses_unsigned_requests(
    admin_schema: schemathesis.BaseSchema, operation: str, mode: GenerationMode
) -> None:
    strategy = operation_of(admin_schema, operation).as_strategy(generation_mode=mode)
    # 413: a body over the cap is refused before anything reads it.
    fuzz_strategy(strategy, refused_with(401, 413), _unchanged)


@pytest.mark.parametrize("operation", ["GET /c/{token}", "GET /u/{token}", "POST /u/{token}"])
def test_public_links_refuse_forged_tokens(admin_schema: schemathesis.BaseSchema, operation: str) -> None:
    # Positive only, here and below: a string path parameter, or no documented input at all, leaves the
    # negative mode nothing to negate (Hypothesis: Unsatisfiable).
    # A fuzzed token is never a signed one: 400 "not valid", nothing changed (404: no such route, e.g. a
    # token with a slash; 413: form over the cap).
    strategy = operation_of(admin_schema, operation).as_strategy(generation_mode=GenerationMode.POSITIVE)
    fuzz_strategy(strategy, refused_with(400, 404, 413), _unchanged)


@pytest.mark.parametrize("operation", ["POST /twilio/inbound", "POST /twilio/status"])
def test_twilio_webhooks_refuse_unsigned_requests(
    admin_schema: schemathesis.BaseSchema, operation: str
) -> None:
    strategy = operation_of(admin_schema, operation).as_strategy(generation_mode=GenerationMode.POSITIVE)
    fuzz_strategy(strategy, refused_with(403, 413), _unchanged)


ADMIN_API = ["GET /admin/api/jobs", "POST /admin/api/jobs/replay"]


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("operation", ADMIN_API)
def test_admin_api_refuses_requests_without_a_session_token(
    admin_schema: schemathesis.BaseSchema, operation: str, mode: GenerationMode
) -> None:
    # The guard answers before the query or body is read: 401 whatever they hold (413: over the body cap).
    strategy = operation_of(admin_schema, operation).as_strategy(generation_mode=mode)
    fuzz_strategy(strategy, refused_with(401, 413), _unchanged)


def test_shopify_webhook_refuses_unsigned_requests(detector_schema: schemathesis.BaseSchema) -> None:
    operation = operation_of(detector_schema, "POST /webhooks/shopify")
    strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    fuzz_strategy(strategy, refused_with(401, 413), _unchanged)


DOCUMENTED = [status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("operation", ["POST /u/{token}", "POST /twilio/inbound", "POST /twilio/status"])
@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data; boundary=xyz", "multipart/form-data"],
    ids=["broken", "no-boundary"],
)
def test_an_unreadable_form_is_the_documented_json_400(
    stack: Stack, admin_schema: schemathesis.BaseSchema, operation: str, content_type: str
) -> None:
    """Litestar refuses a multipart body it cannot parse before the handler (or the signature check) reads
    a field: its JSON 400, documented beside the route's page or TwiML. (The fuzzer only sends the
    documented form encoding, so it never meets this answer.)"""
    token = {"token": "not-a-token"} if "{token}" in operation else {}
    case = operation_of(admin_schema, operation).Case(path_parameters=token)
    url = f"http://127.0.0.1:{stack.ports.admin}{case.formatted_path}"
    response = httpx.post(url, content=b"--xyz\r\nbroken", headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 400, response.text
    case.validate_response(response, checks=DOCUMENTED)


# ---------------------------------------------------------------------------------------------- signed


def _reached_validation(case: Case, response: schemathesis.Response) -> None:
    """Past the signature: accepted, or refused by the signup's own rules with a reason."""
    assert response.status_code in ACCEPTED_OR_REFUSED, (response.status_code, response.text[:300], case.body)
    if response.status_code >= 400:
        assert reason_of(response), (response.status_code, response.text[:300])


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("operation", ["POST /proxy/subscriptions", "POST /proxy/views"])
def test_app_proxy_signed_fuzz_reaches_validation(
    admin_schema: schemathesis.BaseSchema, shopify_secret: str, operation: str, mode: GenerationMode
) -> None:
    # The query is fixed (and then signed): the body is what is fuzzed.
    strategy = operation_of(admin_schema, operation).as_strategy(
        generation_mode=mode, query={"shop": FUZZ_SHOP}
    )

    def sign(case: Case) -> None:
        case.query = dict(signed_params(shopify_secret, FUZZ_SHOP, datetime.now(UTC)))

    fuzz_strategy(strategy, _reached_validation, sign)


ADMIN_STAFF = "contracts-operator"


@pytest.fixture(scope="package")
def operator_token(stack: Stack, contracts_env: dict[str, str]) -> Callable[[], str]:
    """``operator_token()``: a fresh Shopify session token of an operator of ``FUZZ_SHOP``."""

    async def grant() -> None:
        db = await asyncpg.connect(contracts_env["RESTOCK_DATABASE_URL"])
        try:
            await db.execute(
                "INSERT INTO staff_permissions (tenant, user_id, role) SELECT id, $2, 'operator' FROM tenants"
                " WHERE shop_domain = $1 ON CONFLICT DO NOTHING",
                FUZZ_SHOP,
                ADMIN_STAFF,
            )
        finally:
            await db.close()

    asyncio.run(grant())
    secret = contracts_env["RESTOCK_SHOPIFY_API_SECRET"]
    api_key = contracts_env.get("RESTOCK_SHOPIFY_API_KEY", Settings.model_fields["shopify_api_key"].default)

    def token() -> str:
        now = int(time.time())
        claims = {
            "iss": f"https://{FUZZ_SHOP}/admin",
            "dest": f"https://{FUZZ_SHOP}",
            "aud": api_key,
            "sub": ADMIN_STAFF,
            "exp": now + 60,
            "nbf": now - 5,
        }
        return "Bearer " + jwt.encode(claims, secret, algorithm="HS256")

    return token


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("operation", ADMIN_API)
def test_admin_api_with_a_session_token_reaches_validation(
    admin_schema: schemathesis.BaseSchema,
    operator_token: Callable[[], str],
    operation: str,
    mode: GenerationMode,
) -> None:
    """Past the guard (an operator of the shop): answered, or refused 400 with a reason; never a 5xx. Fuzzed
    job ids are answered ``not-found`` (none of the shop's jobs is replayable)."""

    def authorize(case: Case) -> None:
        case.headers = {**(case.headers or {}), "Authorization": operator_token()}

    def answered(case: Case, response: schemathesis.Response) -> None:
        assert response.status_code in {200, 400, 413}, (response.status_code, response.text[:300], case.body)
        if response.status_code == 400:
            assert reason_of(response), response.text[:300]

    fuzz_strategy(
        operation_of(admin_schema, operation).as_strategy(generation_mode=mode), answered, authorize
    )


HUGE = 70 * 1024  # over the App Proxy routes' 64 KiB body cap
# Wider than any column on purpose: U+0000 in a stored text field, ids beyond int64 and levels beyond int32
# must be refused with a reason (test_contracts_known_bugs pins each one), never reach PostgreSQL.
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=50)
ids = st.integers(min_value=-(2**64), max_value=2**64)
levels = st.integers(min_value=-(2**40), max_value=2**40)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False),
    text,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(text, st.integers(), max_size=2),
)
bad_emails = st.one_of(
    text,
    st.emails().map(lambda email: email.replace("@", "@@", 1)),
    st.emails().map(lambda email: " " + email + "\x00"),
    st.sampled_from(["", "@", "a@", "@b.com", "a@@b.com", "a b@c.com", "a@b", "a@-b.com", "<a@b.com>"]),
    st.builds(lambda n: "a" * n + "@example.com", st.integers(min_value=300, max_value=5000)),
)
bad_phones = st.one_of(
    text,
    st.sampled_from(["", "+", "+1", "123", "+1555", "+99999999999999999", "00", "phone", "+1 (415) 555"]),
    st.from_regex(r"\+[0-9]{1,20}", fullmatch=True),
    st.from_regex(r"[0-9 ()-]{1,25}", fullmatch=True),
)
signup_bodies = st.one_of(
    st.fixed_dictionaries(
        {"variant_id": st.integers(min_value=1, max_value=2**40), "email": bad_emails},
        optional={"channel": st.sampled_from(["email", "sms", "fax", ""]), "consent": junk},
    ),
    st.fixed_dictionaries(
        {
            "variant_id": st.integers(min_value=1, max_value=2**40),
            "channel": st.just("sms"),
            "phone": bad_phones,
            "consent": st.just(True),
        },
        optional={"country": st.sampled_from(["US", "GB", "DE", "XX", "usa", ""])},
    ),
    st.fixed_dictionaries(
        {"variant_id": junk, "email": st.just("ok@example.com")},
        optional={"quantity": junk, "locale": junk, "product_id": junk, "consent_text_version": junk},
    ),
    st.builds(lambda n: {"variant_id": 1, "email": "ok@example.com", "note": "x" * n}, st.just(HUGE)),
    junk,
)
MANY = settings(FUZZ, max_examples=150)  # the hand-written strategies: cheap, and aimed


def test_signed_signup_refuses_bad_contacts_with_a_reason(stack: Stack, shopify_secret: str) -> None:
    url = f"http://127.0.0.1:{stack.ports.admin}/proxy/subscriptions"

    @MANY
    @given(body=signup_bodies)
    def run(body: Any) -> None:
        params = tuple(signed_params(shopify_secret, FUZZ_SHOP, datetime.now(UTC)))
        content = json.dumps(body).encode()
        response = client.post(
            url, params=params, content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code in ACCEPTED_OR_REFUSED, (response.status_code, response.text[:300], body)
        if response.status_code >= 400:
            assert reason_of(response), (response.status_code, response.text[:300])

    with httpx.Client(timeout=30) as client:
        run()


# (form, status, a word of the reason): each refusal names what is wrong.
SIGNUP_REFUSALS = [
    ({"variant_id": 1, "email": "not-an-email"}, 400, "email"),
    ({"variant_id": 1, "email": "a" * 400 + "@example.com"}, 400, "email"),
    ({"variant_id": 1}, 400, "email"),
    ({"variant_id": 1, "channel": "sms", "phone": "+1555", "consent": True}, 400, "phone"),
    ({"variant_id": 1, "channel": "sms", "phone": "call me", "consent": True}, 400, "phone"),
    ({"variant_id": 1, "channel": "sms", "phone": "+14155552671"}, 422, "consent"),
    ({"variant_id": 1, "channel": "fax", "email": "ok@example.com"}, 400, "channel"),
    ({"variant_id": 0, "email": "ok@example.com"}, 400, "variant_id"),
    ({"variant_id": 2**64, "email": "ok@example.com"}, 400, "variant_id"),
    ({"variant_id": 1, "email": "ok@example.com", "consent": False}, 422, "consent"),
    ({"variant_id": 1, "email": ["ok@example.com"]}, 400, "email"),
    ({"variant_id": 1, "email": "ok@example.com", "quantity": 10**6}, 400, "quantity"),
]


# What a signup writes (``confirmation-sent`` events come later from the sender, for earlier signups).
_WRITTEN = (
    "SELECT (SELECT count(*) FROM subscriptions s JOIN tenants t ON t.id = s.tenant WHERE t.shop_domain = $1)"
    " + (SELECT count(*) FROM consent_events e JOIN tenants t ON t.id = e.tenant"
    "    WHERE t.shop_domain = $1 AND e.kind <> 'confirmation-sent')"
)


@pytest.mark.parametrize(("form", "status", "word"), SIGNUP_REFUSALS)
async def test_signed_signup_refusal_names_the_problem_and_writes_nothing(
    stack: Stack, shopify_secret: str, db: asyncpg.Connection, form: dict[str, Any], status: int, word: str
) -> None:
    before = await db.fetchval(_WRITTEN, FUZZ_SHOP)
    params = tuple(signed_params(shopify_secret, FUZZ_SHOP, datetime.now(UTC)))
    async with httpx.AsyncClient(timeout=30) as client:
        url = f"http://127.0.0.1:{stack.ports.admin}/proxy/subscriptions"
        response = await client.post(url, params=params, json=form)
    assert response.status_code == status, response.text
    assert word in reason_of(response).lower() + json.dumps(response.json().get("extra")), response.text
    assert await db.fetchval(_WRITTEN, FUZZ_SHOP) == before  # no half-written signup


def test_signed_signup_over_the_body_cap_is_413(stack: Stack, shopify_secret: str) -> None:
    params = tuple(signed_params(shopify_secret, FUZZ_SHOP, datetime.now(UTC)))
    form = {"variant_id": 1, "email": "ok@example.com", "note": "x" * HUGE}
    response = httpx.post(
        f"http://127.0.0.1:{stack.ports.admin}/proxy/subscriptions", params=params, json=form, timeout=30
    )
    assert response.status_code == 413, response.text


TOPICS = [
    "inventory_levels/update",
    "products/create",
    "products/update",
    "orders/create",
    "app/uninstalled",
    "customers/data_request",
    "customers/redact",
    "shop/redact",
]
# What an HTTP header value can be (visible ASCII, no surrounding blanks): anything else never reaches the
# app (the client or h11 refuses it).
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(
    str.strip
)
# Within the known-bug bounds above (``junk`` carries larger ints: only where the payload refuses them).
webhook_junk = st.one_of(
    st.none(), st.booleans(), levels, st.floats(allow_nan=False), text, st.lists(levels, max_size=3)
)
timestamps = st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
shaped_payloads = st.one_of(
    st.fixed_dictionaries(
        {
            "inventory_item_id": ids | webhook_junk,
            "location_id": ids | webhook_junk,
            "available": levels | webhook_junk,
            "updated_at": timestamps | text,
        }
    ),
    st.fixed_dictionaries(
        {
            "id": ids | webhook_junk,
            "title": text | webhook_junk,
            "variants": st.lists(
                st.fixed_dictionaries({"id": ids, "title": text, "inventory_item_id": ids}),
                max_size=3,
            )
            | webhook_junk,
        }
    ),
    st.fixed_dictionaries(
        {
            "id": ids | webhook_junk,
            "created_at": timestamps | webhook_junk,
            "email": text | webhook_junk,
            "line_items": st.lists(
                st.fixed_dictionaries(
                    {
                        "variant_id": ids | webhook_junk,
                        "quantity": ids | webhook_junk,
                        "price": text | webhook_junk,
                    }
                ),
                max_size=3,
            )
            | webhook_junk,
        }
    ),
    st.fixed_dictionaries(
        {
            "shop_id": ids | webhook_junk,
            "shop_domain": text | webhook_junk,
            "customer": st.fixed_dictionaries({"id": ids, "email": text, "phone": text}) | webhook_junk,
            "orders_to_redact": st.lists(ids, max_size=3) | webhook_junk,
        }
    ),
)
webhook_bodies = st.one_of(
    shaped_payloads.map(lambda payload: json.dumps(payload).encode()),
    st.recursive(webhook_junk, lambda inner: st.lists(inner, max_size=3), max_leaves=8).map(
        lambda value: json.dumps(value).encode()
    ),
    st.binary(max_size=200),
)


def test_signed_shopify_webhooks_refuse_bad_payloads_with_a_reason(stack: Stack, shopify_secret: str) -> None:
    """Signed: the payload validation is reached (never a 5xx; a 4xx says why). Forged: 401, whatever the
    payload (schemathesis sends the documented body and headers, but cannot sign them)."""
    url = f"http://127.0.0.1:{stack.ports.detector}/webhooks/shopify"

    @MANY
    @given(
        topic=st.sampled_from(TOPICS) | st.sampled_from(TOPICS) | header_text,
        body=webhook_bodies,
        forged=st.booleans(),
    )
    def run(topic: str, body: bytes, forged: bool) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": WEBHOOK_SHOP,
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": datetime.now(UTC).isoformat(),
            "X-Shopify-Hmac-Sha256": shopify_webhook_hmac(shopify_secret if not forged else "forged", body),
        }
        response = client.post(url, content=body, headers=headers)
        if forged:
            assert response.status_code == 401, (response.status_code, response.text[:300])
            return
        assert response.status_code < 500, (response.status_code, response.text[:300], topic, body[:300])
        assert response.status_code != 401, response.text  # the HMAC was right: validation was reached
        if response.status_code >= 400:
            assert reason_of(response), (response.status_code, response.text[:300])

    with httpx.Client(timeout=30) as client:
        run()


form_values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
twilio_forms = st.one_of(
    st.fixed_dictionaries(
        {
            "MessageSid": st.from_regex(r"SM[0-9a-f]{32}", fullmatch=True) | form_values,
            "From": st.sampled_from(["+14155552671", "+1555", "", "not a phone"]) | form_values,
            "To": st.just("+15005550006") | form_values,
            "Body": st.sampled_from(["STOP", "START", "YES", "stop all", "HELP", ""]) | form_values,
        },
        optional={"AccountSid": form_values, "NumSegments": form_values},
    ),
    st.fixed_dictionaries(
        {
            "MessageSid": st.from_regex(r"SM[0-9a-f]{32}", fullmatch=True) | form_values,
            "MessageStatus": st.sampled_from(["delivered", "failed", "undelivered", "sent", "??"])
            | form_values,
        },
        optional={"ErrorCode": st.sampled_from(["30003", "21610", "x", ""]) | form_values},
    ),
    st.dictionaries(form_values.filter(bool), form_values, max_size=5),
)


@pytest.mark.parametrize("route", ["/twilio/inbound", "/twilio/status"])
def test_twilio_webhooks_with_fuzzed_forms(stack: Stack, contracts_env: dict[str, str], route: str) -> None:
    """Signed forms reach the services (never a 5xx; a 4xx says why); forged signatures are a 403."""
    token = contracts_env["RESTOCK_TWILIO_AUTH_TOKEN"]
    url = f"http://127.0.0.1:{stack.ports.admin}{route}"  # RESTOCK_PUBLIC_BASE_URL: the URL Twilio signs

    @FUZZ
    @given(form=twilio_forms, forged=st.booleans())
    def run(form: dict[str, str], forged: bool) -> None:
        signature = twilio_signature(token if not forged else "not-the-token", url, form)
        response = client.post(url, data=form, headers={"X-Twilio-Signature": signature})
        if forged:
            assert response.status_code == 403, (response.status_code, response.text[:300])
            return
        assert response.status_code < 500, (response.status_code, response.text[:300], form)
        assert response.status_code != 403, response.text  # the signature was right
        if response.status_code >= 400:
            assert reason_of(response), (response.status_code, response.text[:300])

    with httpx.Client(timeout=30) as client:
        run()


# -------------------------------------------------------------------------------------------- probes

# The probes every process serves (README: "answers /healthz and /readyz"), each documented in the process's
# own schema. The senders' Prometheus text on /metrics is left out of theirs (``restock_sender.metrics``:
# ``include_in_schema=False``), so it is held to this one instead.
METRICS_SCHEMA: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Restock sender metrics", "version": "1"},
    "paths": {
        "/metrics": {
            "get": {
                "responses": {
                    "200": {
                        "description": "Prometheus text",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                }
            }
        },
    },
}
PROBE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
PROBES = {
    "admin": ["/healthz", "/readyz"],
    "detector": ["/healthz", "/readyz"],
    "dispatcher": ["/healthz", "/readyz"],
    "sender-email": ["/healthz", "/readyz", "/metrics"],
    "sender-sms": ["/healthz", "/readyz", "/metrics"],
}
PROBE_CASES = [(process, path) for process, paths in PROBES.items() for path in paths]


def probe_operation(stack: Stack, process: str, path: str) -> Any:
    """The probe's operation in the process's own schema (``/metrics``: in ``METRICS_SCHEMA``)."""
    if path == "/metrics":
        return schemathesis.openapi.from_dict(METRICS_SCHEMA)[path]["GET"]
    return operation_of(load_schema(stack.specs[process].port), f"GET {path}")


@pytest.mark.parametrize(("process", "path"), PROBE_CASES)
def test_probes_answer_as_documented(stack: Stack, process: str, path: str) -> None:
    case = probe_operation(stack, process, path).Case()
    base_url = f"http://127.0.0.1:{stack.specs[process].port}"
    response = case.call_and_validate(base_url=base_url, checks=PROBE_CHECKS, timeout=30)
    assert response.status_code == 200, response.text  # the stack is up: ready


@pytest.mark.parametrize(("process", "path"), PROBE_CASES)
def test_probes_refuse_other_methods(stack: Stack, process: str, path: str) -> None:
    url = f"http://127.0.0.1:{stack.specs[process].port}{path}"
    with httpx.Client(timeout=30) as client:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = client.request(method, url, content=b'{"ready": false}')
            assert response.status_code == 405, (method, response.status_code, response.text[:200])


url_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?"))


@pytest.mark.parametrize("process", ["dispatcher", "sender-email", "sender-sms"])
def test_workers_refuse_unknown_requests(stack: Stack, process: str) -> None:
    """Paths, query strings, methods and bodies no route takes: a 4xx, never a 5xx."""
    base = f"http://127.0.0.1:{stack.specs[process].port}"

    @FUZZ
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
        path=url_text.map(lambda text: "/" + text),
        query=st.dictionaries(url_text, st.text(max_size=20), max_size=3),
        body=st.binary(max_size=100),
    )
    def run(method: str, path: str, query: dict[str, str], body: bytes) -> None:
        response = client.request(method, base + path, params=query, content=body)
        assert response.status_code < 500, (method, path, response.status_code, response.text[:200])

    with httpx.Client(timeout=30) as client:
        run()


# ----------------------------------------------------------------------------------------------- after


def test_every_process_is_still_ready_after_the_fuzzing(stack: Stack) -> None:
    assert stack.first_exited() is None
    with httpx.Client(timeout=10) as client:
        for name, spec in stack.specs.items():
            response = client.get(f"http://127.0.0.1:{spec.port}{spec.ready_path}")
            assert response.status_code == 200, (name, response.text)
