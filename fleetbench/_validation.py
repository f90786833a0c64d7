"""Turns pydantic validation errors into located, human problems.

Shared by the manifest and dataset loaders so that both speak the same language:
``repositories[2].scenarios[0]: unknown scenario 'codng'`` and, for a typo in a key,
``scenario_profile: unknown key; did you mean 'scenario_profiles'?``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

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
        loc, parent = _walk(model, error["loc"])
        location = format_location(loc, prefix)
        if error["type"] == "extra_forbidden":
            key = str(loc[-1]) if loc else ""
            problems.append(Problem(location, "unknown key" + suggest(key, _names(parent))))
        elif error["type"] == "missing":
            problems.append(Problem(location, "required key is missing"))
        else:
            problems.append(Problem(location, _message(error)))
    return problems


def _message(error: Any) -> str:
    msg = str(error["msg"])
    # Custom validators raise ValueError("...") which pydantic prefixes; keep only ours.
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _walk(model: type[pydantic.BaseModel], loc: Sequence[str | int]
          ) -> tuple[list[str | int], Any]:
    """Follow an error location through the schema.

    Where the schema has a union, pydantic inserts the member's name (``str``,
    ``EvaluatorEntry``, ``constrained-str`` …) into the location; those parts mean nothing
    to a user and are dropped — exactly there, so a user's own key (a scenario called
    ``Coding``) is never mistaken for one. Returns the user's path and the annotation
    that holds the last part (the model whose keys a typo should be matched against).
    """
    path: list[str | int] = []
    current: Any = model
    parent: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        path.append(part)
        parent, current = current, _step(current, part)
        while (members := _union_members(current)) and parts:
            current = _member(members, parts.pop(0))
    return path, parent


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and from ``X | None`` (which pydantic does not tag)."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType):
            members = [m for m in get_args(annotation) if m is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _step(annotation: Any, part: str | int) -> Any:
    """The annotation of ``part`` inside ``annotation`` (a model, list or dict)."""
    annotation = _unwrap(annotation)
    fields = getattr(annotation, "model_fields", None)
    if fields is not None:
        for name, field in fields.items():
            if part in (name, field.alias):
                return field.annotation
        return Any
    args = get_args(annotation)
    if get_origin(annotation) in (list, tuple) and args:
        return args[0]
    if get_origin(annotation) is dict and len(args) == 2:
        return args[1]
    return Any


def _union_members(annotation: Any) -> list[Any]:
    """The members of a union pydantic tags (two or more besides ``None``), else []."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) not in (Union, UnionType):
        return []
    members = [m for m in get_args(annotation) if m is not type(None)]
    return members if len(members) > 1 else []


def _member(members: Sequence[Any], tag: str | int) -> Any:
    for member in members:
        if getattr(_unwrap(member), "__name__", None) == tag:
            return member
    return Any  # a scalar member (str, list[str] …): nothing below it to follow


def _names(annotation: Any) -> list[str]:
    fields = getattr(_unwrap(annotation), "model_fields", None) or {}
    names = set(fields)
    names.update(f.alias for f in fields.values() if f.alias)
    return sorted(names)
