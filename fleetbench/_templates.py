"""``{{var}}`` prompt templates: one pass, no re-expansion, loud about missing variables.

A placeholder is ``{{`` + optional whitespace + a *name* + optional whitespace + ``}}``,
where a name is letters, digits, ``_``, ``-`` and ``.`` (``{{lang}}``, ``{{ user.name }}``).
Anything else between braces (``{{ a b }}``, ``{"k": {{}}}``) is ordinary text, so code
and JSON in prompts need no escaping. To write a placeholder literally, put a backslash
in front of it: ``\\{{name}}`` renders as ``{{name}}`` and is not a variable.

Rendering is a single left-to-right pass over the template. A value is inserted as is
and never scanned again, so a value containing ``{{y}}`` stays literal — unlike
test-bench, which re-expanded values with repeated string replacement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fleetbench.errors import DatasetError, Problem

__all__ = ["render_template", "template_variables"]

_PLACEHOLDER = re.compile(r"(?P<escape>\\)?\{\{\s*(?P<name>[A-Za-z0-9_.\-]+)\s*\}\}")


def template_variables(template: str) -> list[str]:
    """The variable names ``template`` uses, unique, in order of first use.

    Escaped placeholders (``\\{{name}}``) are text, not variables.
    """
    names: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(template):
        if not match.group("escape"):
            names.setdefault(match.group("name"), None)
    return list(names)


def render_template(template: str, variables: Mapping[str, str], *, test_id: str) -> str:
    """Substitute every placeholder of ``template`` from ``variables`` in one pass.

    Extra variables are ignored. ``test_id`` only serves the error message.

    :raises DatasetError: naming the test and each missing variable once, when the
        template uses variables that ``variables`` does not supply.
    """
    if "{{" not in template:
        return template  # the common case: nothing to substitute
    missing = [name for name in template_variables(template) if name not in variables]
    if missing:
        raise DatasetError(
            [
                Problem(
                    location=f"test {test_id!r}",
                    message=f"missing template variable(s): {', '.join(missing)}",
                )
            ]
        )

    def substitute(match: re.Match[str]) -> str:
        if match.group("escape"):
            return match.group(0)[1:]  # drop the backslash, keep the braces verbatim
        return variables[match.group("name")]

    return _PLACEHOLDER.sub(substitute, template)
