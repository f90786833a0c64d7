"""Turns pydantic validation errors into located, human problems.

Shared by the manifest and dataset loaders so that both speak the same language:
``repositories[2].scenarios[0]: unknown scenario 'codng'`` and, for a typo in a key,
``scenario_profile: unknown key; did you mean 'scenario_profiles'?``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import pydantic

from fleetbench.errors import Problem


def format_location(parts: Iterable[str | int], prefix: str = "") -> str:
    """``("repositories", 2, "scenarios", 0)`` → ``repositories[2].scenarios[0]``."""
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def problems_from_pydantic(
    exc: pydantic.ValidationError,
    model: type[pydantic.BaseModel],
    prefix: str = "",
) -> list[Problem]:
    """One :class:`Problem` per pydantic error, with unknown keys given a suggestion."""
    problems: list[Problem] = []
    for error in exc.errors(include_url=False):
        loc = [p for p in error["loc"] if not _is_union_tag(p)]
        location = format_location(loc, prefix)
        if error["type"] == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            choices = _field_names_at(model, loc[:-1])
            problems.append(Problem(location, "unknown key" + suggest(key, choices)))
        elif error["type"] == "missing":
            problems.append(Problem(location, "required key is missing"))
        else:
            problems.append(Problem(location, _message(error)))
    return problems


def _message(error: Any) -> str:
    msg = str(error["msg"])
    # Custom validators raise ValueError("...") which pydantic prefixes; keep only ours.
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the union member's name ("str", "ProviderEntry", "function-after[..]")
    # into locations of union fields; they mean nothing to a user.
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "list[str]", "dict[str,any]"}
        or part[:1].isupper()
        or "[" in part
    )


def _field_names_at(model: type[pydantic.BaseModel], path: Sequence[str | int]) -> list[str]:
    """The field names (and aliases) of the model found by walking ``path`` from ``model``."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields:
            return []
        field = fields.get(part)
        if field is None:
            continue  # a user-chosen key of a dict of models (scenario_profiles.<name>)
        current = _inner_model(field.annotation)
    return _names(current)


def _names(model: Any) -> list[str]:
    fields = getattr(model, "model_fields", None) or {}
    names = set(fields)
    names.update(f.alias for f in fields.values() if f.alias)
    return sorted(names)


def _inner_model(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``list[X]``, ``dict[str, X]``, ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in reversed(getattr(annotation, "__args__", ()) or ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
