"""Structured-answer evaluators: ``json_valid``, ``json_schema`` and ``numeric``."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import referencing.exceptions
from jsonschema.protocols import Validator

from fleetbench.plugin import Evaluator
from fleetbench.records import ProviderResponse, Verdict, WorkItem

from ._common import Options, json_values, parse_json

__all__ = ["json_schema_factory", "json_valid_factory", "numbers", "numeric_factory"]

_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict, "array": list, "string": str, "number": (int, float),
    "boolean": bool, "null": type(None),
}
_SHOWN = 80  # characters of a parse error or an answer quoted in a detail


def _json_options(opts: Options) -> tuple[bool, bool]:
    return opts.boolean("allow_fences", True), opts.boolean("extract", False)


def _find_json(text: str, fences: bool, extract: bool) -> tuple[bool, Any, str]:
    """(found, value, why not): the first JSON value the options accept."""
    for value in json_values(text, fences=fences, extract=extract):
        return True, value, ""
    try:
        parse_json(text)
    except ValueError as exc:
        return False, None, f"not JSON: {str(exc)[:_SHOWN]}"
    return False, None, "not JSON"  # pragma: no cover - parse_json accepted what failed


@dataclass(frozen=True, slots=True)
class _JsonValid:
    """Passes when the answer is JSON (of the type asked for)."""

    fences: bool
    extract: bool
    kind: str

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        found, value, why = _find_json(response.text, self.fences, self.extract)
        if not found:
            return Verdict("json_valid", False, 0.0, why)
        kind = _type_name(value)
        if self.kind not in ("any", kind):
            return Verdict("json_valid", False, 0.0, f"valid JSON, but {kind}, not {self.kind}")
        return Verdict("json_valid", True, 1.0, f"valid JSON ({kind})")


def _type_name(value: Any) -> str:
    """The JSON type of a parsed value (``true`` is a boolean, not a number)."""
    if isinstance(value, bool):
        return "boolean"
    return next(name for name, kinds in _TYPES.items() if isinstance(value, kinds))


def json_valid_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = Options(options, ("allow_fences", "extract", "type"))
    return _JsonValid(*_json_options(opts), opts.choice("type", ("any", *_TYPES), "any"))


@dataclass(frozen=True, slots=True)
class _JsonSchema:
    """Passes when the answer is JSON that the schema accepts."""

    validator: Validator
    fences: bool
    extract: bool

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        found, value, why = _find_json(response.text, self.fences, self.extract)
        if not found:
            return Verdict("json_schema", False, 0.0, why)
        try:
            errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.path))
        except referencing.exceptions.Unresolvable as exc:
            return Verdict("json_schema", False, 0.0, f"the schema cannot be used: {exc}",
                           error=True)
        if not errors:
            return Verdict("json_schema", True, 1.0, "valid against the schema")
        shown = "; ".join(f"{e.json_path}: {e.message[:_SHOWN]}" for e in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return Verdict("json_schema", False, 0.0, f"{len(errors)} schema error(s): {shown}{more}")


def json_schema_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = Options(options, ("schema", "allow_fences", "extract", "check_formats"))
    schema = opts.raw("schema")
    if not isinstance(schema, dict):
        raise ValueError("option 'schema' (a JSON Schema: a mapping) is required")
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = exc.json_path if exc.path else "the schema"
        raise ValueError(f"option 'schema' is not a valid JSON Schema: {where}: "
                         f"{exc.message}") from None
    checker = cls.FORMAT_CHECKER if opts.boolean("check_formats", False) else None
    return _JsonSchema(cls(schema, format_checker=checker), *_json_options(opts))


# ------------------------------------------------------------------------------ numeric

_NUMBER = re.compile(r"""
    (?<![\w.])                      # not the tail of a word, a number or a version
    ([-+\u2212]?)                   # sign (the Unicode minus too)
    ( \d{1,3}(?:,\d{3})+(?:\.\d+)?  # 1,234,567.89: commas only between groups of three
    | \d+(?:\.\d+)?                 # 42, 3.14
    | \.\d+ )                       # .5
    (?:[eE]([-+]?\d+))?             # exponent
    """, re.VERBOSE)
_PICKS = ("last", "first", "any")


def numbers(text: str) -> list[float]:
    """The numbers written in ``text``, in order. NFKC first, so full-width digits
    count; other scripts' decimal digits (``٤٢``) count too. ``,`` is a thousands
    separator only between groups of three digits (``1,5`` is two numbers)."""
    found = []
    for sign, digits, exponent in _NUMBER.findall(unicodedata.normalize("NFKC", text)):
        number = float(digits.replace(",", "") + (f"e{exponent}" if exponent else ""))
        found.append(-number if sign in ("-", "\u2212") else number)
    return found


@dataclass(frozen=True, slots=True)
class _Numeric:
    """Passes when the answer's number equals the expected one within tolerance."""

    value: float | None
    abs_tol: float
    rel_tol: float
    pick: str

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        expected = self._expected(item)
        if isinstance(expected, str):
            return Verdict("numeric", False, 0.0, expected, error=True)
        found = numbers(response.text)
        if not found:
            return Verdict("numeric", False, 0.0, f"no number in the answer; expected "
                                                  f"{expected:g}")
        chosen = found if self.pick == "any" else [found[-1 if self.pick == "last" else 0]]
        close = [n for n in chosen if math.isclose(n, expected, rel_tol=self.rel_tol,
                                                   abs_tol=self.abs_tol)]
        shown = close[0] if close else chosen[0]
        which = {"last": "the last", "first": "the first", "any": "a"}[self.pick]
        detail = (f"{which} number of {len(found)} is {shown:g}" if close or self.pick != "any"
                  else f"none of the {len(found)} numbers") + \
            f"; expected {expected:g}" + self._tolerance()
        return Verdict("numeric", bool(close), 1.0 if close else 0.0, detail)

    def _expected(self, item: WorkItem) -> float | str:
        """The expected number, or why there is none."""
        if self.value is not None:
            return self.value
        if item.expected is None:
            return "nothing to compare with: option value is not set and the test case " \
                   "has no expected text"
        found = numbers(item.expected)
        if len(found) != 1:
            return f"the expected text {item.expected[:_SHOWN]!r} holds {len(found)} " \
                   f"numbers, not one; set option value"
        return found[0]

    def _tolerance(self) -> str:
        parts = [f"abs {self.abs_tol:g}" if self.abs_tol else "",
                 f"rel {self.rel_tol:g}" if self.rel_tol else ""]
        return f" ± ({', '.join(p for p in parts if p)})" if any(parts) else ""


def numeric_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = Options(options, ("value", "abs_tol", "rel_tol", "pick"))
    return _Numeric(opts.maybe_number("value"), opts.number("abs_tol", 0.0, low=0.0),
                    opts.number("rel_tol", 1e-9, low=0.0), opts.choice("pick", _PICKS, "last"))
