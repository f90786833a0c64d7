"""`{{var}}` rendering: whitespace, names, no re-expansion, escapes, missing variables."""

from __future__ import annotations

import pytest

from fleetbench._templates import render_template, template_variables
from fleetbench.errors import DatasetError, Problem


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello {{name}}!", "Hello Ada!"),
        ("Hello {{ name }}!", "Hello Ada!"),
        ("Hello {{\tname  }}!", "Hello Ada!"),
        ("{{name}} and {{name}}", "Ada and Ada"),
        ("{{user.name}} / {{first-name}} / {{n_1}}", "Lovelace / Augusta / 1"),
        ("no placeholders", "no placeholders"),
        ("", ""),
    ],
)
def test_placeholders_are_substituted(template: str, expected: str) -> None:
    variables = {"name": "Ada", "user.name": "Lovelace", "first-name": "Augusta", "n_1": "1"}
    assert render_template(template, variables, test_id="t") == expected


def test_values_are_never_re_expanded() -> None:
    rendered = render_template("{{a}} {{b}}", {"a": "{{b}}", "b": "{{a}}"}, test_id="t")
    assert rendered == "{{b}} {{a}}"


def test_a_value_with_regex_replacement_syntax_is_inserted_verbatim() -> None:
    assert render_template("x={{v}}", {"v": r"\1 \g<0> $1"}, test_id="t") == r"x=\1 \g<0> $1"


@pytest.mark.parametrize(
    "text",
    ['{"k": {"nested": 1}}', "{{ not a var }}", "{{}}", "{{a b}}", "{ {x} }", "{{x}", "{x}}"],
)
def test_braces_that_are_not_placeholders_stay_literal(text: str) -> None:
    assert template_variables(text) == []
    assert render_template(text, {}, test_id="t") == text


def test_a_backslash_escapes_a_placeholder() -> None:
    template = r"Write \{{name}} or \{{ name }} literally, but {{name}} is Ada"
    assert template_variables(template) == ["name"]
    assert render_template(template, {"name": "Ada"}, test_id="t") == (
        "Write {{name}} or {{ name }} literally, but Ada is Ada"
    )
    assert render_template(r"\{{missing}}", {}, test_id="t") == "{{missing}}"


def test_extra_variables_are_ignored() -> None:
    assert render_template("{{a}}", {"a": "1", "unused": "2"}, test_id="t") == "1"


def test_variables_are_listed_unique_in_first_use_order() -> None:
    assert template_variables("{{b}} {{ a }} {{b}} {{c}} {{a}}") == ["b", "a", "c"]


def test_missing_variables_name_the_test_and_each_variable_once() -> None:
    with pytest.raises(DatasetError) as caught:
        render_template("{{lang}} {{n}} {{ lang }} {{ok}}", {"ok": "1"}, test_id="fizzbuzz")
    assert caught.value.problems == (
        Problem(location="test 'fizzbuzz'", message="missing template variable(s): lang, n"),
    )
    assert str(caught.value) == "test 'fizzbuzz': missing template variable(s): lang, n"
