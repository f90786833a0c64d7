"""Built-in text evaluators: ``contains``, ``contains_all``, ``contains_any``, ``exact``
and ``regex``.

Each judges an answer against the test case (``expected``, ``references``) or against
its own options, returns a verdict with a score in [0, 1] and a short detail, and
reports "cannot judge" (no expected text, say) as an evaluator error, never as a pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetbench.plugin import Evaluator, EvaluatorSpec, hookimpl
from fleetbench.records import ProviderResponse, Verdict, WorkItem

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


def _options(options: Mapping[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(allowed) or 'none'}")
    return dict(options)


def _bool(options: Mapping[str, Any], name: str, default: bool) -> bool:
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"option {name!r} must be true or false")
    return value


def _strings(options: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"option {name!r} must be a string or a list of strings")


def _fold(text: str, case_sensitive: bool) -> str:
    text = unicodedata.normalize("NFC", text)
    return text if case_sensitive else text.casefold()


@dataclass(frozen=True, slots=True)
class _Contains:
    """Passes when the answer contains the needles: all of them (``all``) or one."""

    name: str
    needles: tuple[str, ...] | None
    require_all: bool
    case_sensitive: bool

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        needles = self.needles or self._from_case(item)
        if not needles:
            return Verdict(self.name, False, 0.0, "nothing to look for: the test case has no "
                           "expected text or references and no option names any", error=True)
        answer = _fold(response.text, self.case_sensitive)
        found = [n for n in needles if _fold(n, self.case_sensitive) in answer]
        passed = len(found) == len(needles) if self.require_all else bool(found)
        missing = [n for n in needles if n not in found]
        detail = f"found {len(found)}/{len(needles)}" + (
            f"; missing {missing[:3]!r}" if missing and not passed else "")
        return Verdict(self.name, passed, len(found) / len(needles), detail)

    def _from_case(self, item: WorkItem) -> tuple[str, ...]:
        if self.name == "contains":
            return (item.expected,) if item.expected is not None else ()
        return item.references or ((item.expected,) if item.expected is not None else ())


def _contains_factory(name: str, require_all: bool) -> Any:
    option = "text" if name == "contains" else "values"

    def factory(options: Mapping[str, Any]) -> Evaluator:
        opts = _options(options, (option, "case_sensitive"))
        return _Contains(name, _strings(opts, option), require_all,
                         _bool(opts, "case_sensitive", False))

    return factory


@dataclass(frozen=True, slots=True)
class _Exact:
    """Passes when the answer equals the expected text after normalisation."""

    case_sensitive: bool
    strip: bool
    collapse_whitespace: bool

    def normalise(self, text: str) -> str:
        text = _fold(text, self.case_sensitive)
        if self.collapse_whitespace:
            text = " ".join(text.split())
        return text.strip() if self.strip else text

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        if item.expected is None:
            return Verdict("exact", False, 0.0, "the test case has no expected text", error=True)
        passed = self.normalise(response.text) == self.normalise(item.expected)
        return Verdict("exact", passed, 1.0 if passed else 0.0,
                       "equal" if passed else "differs from the expected text")


def _exact_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = _options(options, ("case_sensitive", "strip", "collapse_whitespace"))
    return _Exact(_bool(opts, "case_sensitive", True), _bool(opts, "strip", True),
                  _bool(opts, "collapse_whitespace", False))


@dataclass(frozen=True, slots=True)
class _Regex:
    """Passes when the pattern matches somewhere in the answer (or all of it)."""

    pattern: re.Pattern[str]
    full: bool

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        match = (self.pattern.fullmatch if self.full else self.pattern.search)(response.text)
        detail = f"/{self.pattern.pattern}/ " + ("matched" if match else "did not match")
        return Verdict("regex", match is not None, 1.0 if match else 0.0, detail)


def _regex_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = _options(options, ("pattern", "flags", "full_match"))
    pattern = opts.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("option 'pattern' (a regular expression) is required")
    flags = 0
    for letter in str(opts.get("flags", "")):
        if letter not in _FLAGS:
            raise ValueError(f"unknown regex flag {letter!r}; use any of 'ims'")
        flags |= _FLAGS[letter]
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return _Regex(compiled, _bool(opts, "full_match", False))


@hookimpl
def fleetbench_register_evaluators() -> list[EvaluatorSpec]:
    return [
        EvaluatorSpec("contains", _contains_factory("contains", True),
                      "answer contains the expected text (option text: another needle)"),
        EvaluatorSpec("contains_all", _contains_factory("contains_all", True),
                      "answer contains every reference (option values)"),
        EvaluatorSpec("contains_any", _contains_factory("contains_any", False),
                      "answer contains at least one reference (option values)"),
        EvaluatorSpec("exact", _exact_factory,
                      "answer equals the expected text (case_sensitive, strip, "
                      "collapse_whitespace)"),
        EvaluatorSpec("regex", _regex_factory,
                      "answer matches a regular expression (pattern, flags, full_match)"),
    ]
