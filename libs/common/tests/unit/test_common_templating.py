"""Template validation and rendering (the sandbox, StrictUndefined, autoescape), table-driven."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restock_common.templating import (
    ALLOWED_VARIABLES,
    Renderer,
    RenderError,
    TemplateRecord,
    kind_of,
    sample_variables,
    validate,
)


@pytest.mark.parametrize(
    ("name", "channel", "subject", "text", "html", "problems"),
    [
        ("restock", "email", "{{ product_title }} is back", "Get it: {{ product_url }}", "<p>x</p>", []),
        ("restock", "sms", "", "{{ product_title }} {{ product_url }}", None, []),
        ("confirmation", "email", "Confirm", "{{ confirm_url }}", None, []),
        (
            "restock",
            "email",
            "Back",
            "Hi {{ product_title }",
            None,
            ["text: syntax error on line 1: unexpected '}'"],
        ),
        (
            "restock",
            "email",
            "Back",
            "{% if product_title %}open",
            None,
            [
                "text: syntax error on line 1: Unexpected end of template."
            ],  # Jinja lists the tags in any order
        ),
        ("restock", "email", "Back", "{{ email }}", None, ["text: unknown variable 'email'"]),
        ("restock", "email", "{{ phone }}", "x", None, ["subject: unknown variable 'phone'"]),
        ("restock", "email", "Back", "{{ confirm_url }}", None, ["text: unknown variable 'confirm_url'"]),
        (
            "confirmation",
            "sms",
            "",
            "{{ unsubscribe_url }}",
            None,
            ["text: unknown variable 'unsubscribe_url'"],
        ),
        ("restock", "email", "Back", "x", "<a>{{ product_url.nope }}</a>", None),  # renders: checked below
        ("restock", "email", "Back", "{{ ''.__class__.__mro__ }}", None, None),
        ("restock", "email", "", "x", None, ["subject: an email template needs a subject"]),
        ("restock", "email", "Back", "  ", None, ["text: the text part is empty"]),
        ("restock", "sms", "", "x", "<p>x</p>", ["html: an SMS template has no HTML part"]),
        ("restock", "sms", "Hi", "x", None, ["subject: an SMS template has no subject"]),
        ("restock", "sms", "", "{{ product_url }}" * 40, None, None),
    ],
)
def test_validate(
    name: str, channel: str, subject: str, text: str, html: str | None, problems: list[str] | None
) -> None:
    found = validate(name, channel, subject, text, html)  # type: ignore[arg-type]
    if problems is None:  # a runtime failure: its wording is Jinja's, the part is ours
        assert len(found) == 1
        assert found[0].startswith(("html: does not render", "text: does not render", "text: 2"))
    else:  # each problem starts with the expected text
        assert len(found) == len(problems)
        assert all(problem.startswith(expected) for problem, expected in zip(found, problems, strict=True))


def test_an_sms_body_over_1600_characters_is_refused() -> None:
    [problem] = validate("restock", "sms", "", "{{ product_url }}" * 40)
    assert problem.endswith("more than 1600")


def test_html_is_autoescaped_and_text_and_subject_are_not() -> None:
    template = TemplateRecord(
        "t", 1, "{{ product_title }}", "{{ product_title }}", "<b>{{ product_title }}</b>"
    )
    rendered = Renderer().render(template, {"product_title": "Tom & <Jerry>"})
    assert rendered.subject == "Tom & <Jerry>"
    assert rendered.text == "Tom & <Jerry>"
    assert rendered.html == "<b>Tom &amp; &lt;Jerry&gt;</b>"


def test_a_subject_is_one_line() -> None:
    rendered = Renderer().render(TemplateRecord("t", 1, "{{ t }}", "x", None), {"t": "Shirt\r\nBcc: x@y"})
    assert rendered.subject == "Shirt Bcc: x@y"


@pytest.mark.parametrize(
    "source", ["{{ missing }}", "{{ ''.__class__.__mro__ }}", "{% set x = [] %}{{ x.append(1) }}"]
)
def test_undefined_variables_and_sandbox_escapes_are_render_errors(source: str) -> None:
    with pytest.raises(RenderError):
        Renderer().render(TemplateRecord("t", 1, "s", source, None), {})


def test_compiled_versions_are_cached_per_id_and_version() -> None:
    renderer = Renderer()
    first = TemplateRecord("t", 1, "s", "one {{ x }}", None, template_id=7)
    second = TemplateRecord("t", 2, "s", "two {{ x }}", None, template_id=8)
    assert renderer.render(first, {"x": 1}).text == "one 1"
    assert renderer.render(second, {"x": 1}).text == "two 1"
    assert renderer.render(first, {"x": 2}).text == "one 2"


@pytest.mark.parametrize(
    ("name", "kind"),
    [("restock", "alert"), ("confirmation", "confirmation"), ("builtin:confirmation-sms", "confirmation")],
)
def test_kind_of(name: str, kind: str) -> None:
    assert kind_of(name) == kind


def test_samples_cover_exactly_the_allowed_variables() -> None:
    for kind, allowed in ALLOWED_VARIABLES.items():
        assert set(sample_variables(kind)) == allowed


@given(st.text(max_size=200), st.sampled_from(["email", "sms"]), st.sampled_from(["restock", "confirmation"]))
@settings(max_examples=300, deadline=None)
def test_validate_never_raises_on_any_input(source: str, channel: str, name: str) -> None:
    problems = validate(name, channel, "Subject {{ shop_domain }}" if channel == "email" else "", source)  # type: ignore[arg-type]
    assert all(isinstance(problem, str) for problem in problems)


@given(st.text(alphabet=st.sampled_from(list("{}%#-+ab_ .()'\"[]|")), max_size=60))
@settings(max_examples=300, deadline=None)
def test_a_template_that_validates_renders_with_the_sample(source: str) -> None:
    if not validate("restock", "sms", "", source):
        Renderer().render(TemplateRecord("restock", 1, "", source, None), sample_variables("alert"))
