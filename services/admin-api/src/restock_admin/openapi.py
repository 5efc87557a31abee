"""What the admin-api's routes answer and read beyond their handlers' signatures, for their OpenAPI schema.

Litestar documents a route's success from its return annotation, as JSON unless the handler says otherwise;
every other answer (the guard's 401, the body cap's 413, a refusal's 4xx, the HTML pages, Twilio's TwiML) is
declared with the ``ResponseSpec``s made here. What a handler reads from the raw request itself (Twilio's
signed form, the App Proxy's signed query) is declared through an ``operation_class``, which documents it
without changing how the handler parses or verifies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.enums import MediaType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Parameter,
    Reference,
    RequestBody,
    Schema,
)
from litestar.openapi.spec.enums import OpenAPIType

FORM = "application/x-www-form-urlencoded"


class ErrorBody(msgspec.Struct):
    """Litestar's error body: ``detail`` says why; ``extra`` lists a validation error's fields."""

    status_code: int
    detail: str
    extra: list[dict[str, Any]] | dict[str, Any] | None = None


# Where Litestar registers ``ErrorBody``'s schema (every operation using ``error_too`` also has an ``error``).
ERROR_BODY_REF = "#/components/schemas/ErrorBody"


def error(description: str) -> ResponseSpec:
    """A refusal with Litestar's JSON error body."""
    return ResponseSpec(ErrorBody, description=description, generate_examples=False)


def text(description: str, media_type: str) -> ResponseSpec:
    """A text body of ``media_type``. Declared here, not as the handler's ``media_type``: Litestar would send
    the handler's error bodies (JSON) under that content type too."""
    return ResponseSpec(str, description=description, media_type=media_type, generate_examples=False)


def html(description: str) -> ResponseSpec:
    """One of the small HTML pages of ``restock_admin.public.pages``."""
    return text(description, MediaType.HTML)


TOO_LARGE = error("The body is over the route's cap: refused, nothing done.")
# The cap of a JSON body (signups, replays), far above any valid one; form bodies have their routers' own.
MAX_JSON_BODY_BYTES = 64 * 1024


def string(description: str, **constraints: Any) -> Schema:
    return Schema(type=OpenAPIType.STRING, description=description, **constraints)


def form_body(
    description: str, fields: dict[str, Schema | Reference], required: Sequence[str] = ()
) -> RequestBody:
    """A form-encoded body the handler reads itself (``request.form()``); other fields are allowed."""
    schema = Schema(
        type=OpenAPIType.OBJECT,
        properties=fields,
        required=list(required) or None,
        additional_properties=Schema(type=OpenAPIType.STRING),
    )
    return RequestBody(
        content={FORM: OpenAPIMediaType(schema=schema)}, description=description, required=True
    )


def header(name: str, description: str, *, required: bool = True) -> Parameter:
    return Parameter(name=name, param_in="header", schema=string(description), required=required)


def query(name: str, description: str, *, required: bool = True) -> Parameter:
    return Parameter(name=name, param_in="query", schema=string(description), required=required)


def operation_with(
    *,
    request_body: RequestBody | None = None,
    parameters: Sequence[Parameter] = (),
    error_too: Sequence[int] = (),
) -> type[Operation]:
    """An ``operation_class`` adding what the handler reads from the raw request to Litestar's operation.

    ``error_too``: statuses answered with a page or TwiML by the handler, but with Litestar's JSON error body
    when Litestar refuses first (a malformed multipart form is a 400 before the handler reads a field).
    ``ResponseSpec`` holds one media type; these responses get the JSON one beside it.
    """

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            if request_body is not None:
                self.request_body = request_body
            self.parameters = [*(self.parameters or []), *parameters]
            for status in error_too:
                response = (self.responses or {})[str(status)]  # a KeyError: declare it first
                if isinstance(response, OpenAPIResponse) and response.content is not None:
                    response.content[MediaType.JSON] = OpenAPIMediaType(schema=Reference(ERROR_BODY_REF))

    return Documented
