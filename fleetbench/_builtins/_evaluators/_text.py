"""Text evaluators: ``contains``, ``contains_all``, ``contains_any``, ``exact``,
``regex``, ``similarity`` and ``length``."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from fleetbench.plugin import Evaluator
from fleetbench.records import ProviderResponse, Verdict, WorkItem

from ._common import Options, fold, targets, words

__all__ = ["contains_factory", "exact_factory", "length_factory", "regex_factory",
           "similarity_factory"]

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


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
        answer = fold(response.text, self.case_sensitive)
        found = [n for n in needles if fold(n, self.case_sensitive) in answer]
        passed = len(found) == len(needles) if self.require_all else bool(found)
        missing = [n for n in needles if n not in found]
        detail = f"found {len(found)}/{len(needles)}" + (
            f"; missing {missing[:3]!r}" if missing and not passed else "")
        return Verdict(self.name, passed, len(found) / len(needles), detail)

    def _from_case(self, item: WorkItem) -> tuple[str, ...]:
        if self.name == "contains":
            return (item.expected,) if item.expected is not None else ()
        return item.references or ((item.expected,) if item.expected is not None else ())


def contains_factory(name: str, require_all: bool) -> Callable[[Mapping[str, Any]], Evaluator]:
    """The factory of ``contains`` (option ``text``) or ``contains_all/any`` (``values``)."""
    option = "text" if name == "contains" else "values"

    def factory(options: Mapping[str, Any]) -> Evaluator:
        opts = Options(options, (option, "case_sensitive"))
        return _Contains(name, opts.strings(option), require_all,
                         opts.boolean("case_sensitive", False))

    return factory


@dataclass(frozen=True, slots=True)
class _Exact:
    """Passes when the answer equals the expected text after normalisation."""

    case_sensitive: bool
    strip: bool
    collapse_whitespace: bool

    def normalise(self, text: str) -> str:
        text = fold(text, self.case_sensitive)
        if self.collapse_whitespace:
            text = " ".join(text.split())
        return text.strip() if self.strip else text

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        if item.expected is None:
            return Verdict("exact", False, 0.0, "the test case has no expected text", error=True)
        passed = self.normalise(response.text) == self.normalise(item.expected)
        return Verdict("exact", passed, 1.0 if passed else 0.0,
                       "equal" if passed else "differs from the expected text")


def exact_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = Options(options, ("case_sensitive", "strip", "collapse_whitespace"))
    return _Exact(opts.boolean("case_sensitive", True), opts.boolean("strip", True),
                  opts.boolean("collapse_whitespace", False))


@dataclass(frozen=True, slots=True)
class _Regex:
    """Passes when the pattern matches somewhere in the answer (or all of it)."""

    pattern: re.Pattern[str]
    full: bool

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        match = (self.pattern.fullmatch if self.full else self.pattern.search)(response.text)
        detail = f"/{self.pattern.pattern}/ " + ("matched" if match else "did not match")
        return Verdict("regex", match is not None, 1.0 if match else 0.0, detail)


def regex_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = Options(options, ("pattern", "flags", "full_match"))
    pattern = opts.raw("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise ValueError("option 'pattern' (a regular expression) is required")
    flags = 0
    for letter in str(opts.raw("flags") or ""):
        if letter not in _FLAGS:
            raise ValueError(f"unknown regex flag {letter!r}; use any of 'ims'")
        flags |= _FLAGS[letter]
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return _Regex(compiled, opts.boolean("full_match", False))


# --------------------------------------------------------------------------- similarity


def token_f1(answer: str, target: str) -> float:
    """The F1 of the two texts' words as multisets (SQuAD's answer-overlap score):
    ``2·P·R / (P + R)`` with P the share of the answer's words found in the target and
    R the share of the target's words found in the answer. Two texts without words
    score 1.0; one of them alone, 0.0."""
    mine, theirs = Counter(words(answer)), Counter(words(target))
    if not mine or not theirs:
        return float(mine == theirs)
    common = sum((mine & theirs).values())
    if common == 0:
        return 0.0
    precision, recall = common / mine.total(), common / theirs.total()
    return 2 * precision * recall / (precision + recall)


def char_ratio(answer: str, target: str) -> float:
    """``2·M / (len(answer) + len(target))`` with M the length of the longest common
    subsequence of characters (rapidfuzz's normalised Indel similarity; difflib's
    ``ratio`` approximates it). Two empty texts score 1.0."""
    return fuzz.ratio(answer, target) / 100.0


_METHODS: dict[str, Callable[[str, str], float]] = {"token_f1": token_f1,
                                                    "char_ratio": char_ratio}


@dataclass(frozen=True, slots=True)
class _Similarity:
    """Scores the answer by its best similarity to any target; passes at ``threshold``."""

    method: str
    threshold: float
    case_sensitive: bool
    texts: tuple[str, ...] | None

    def normalise(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        text = " ".join(text.split())
        return text if self.case_sensitive else text.casefold()

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        candidates = self.texts or targets(item)
        if not candidates:
            return Verdict("similarity", False, 0.0, "nothing to compare with: the test case "
                           "has no expected text or references and option text is not set",
                           error=True)
        score_of = _METHODS[self.method]
        answer = self.normalise(response.text)
        scores = [score_of(answer, self.normalise(t)) for t in candidates]
        best = max(range(len(scores)), key=scores.__getitem__)  # the first best
        score = scores[best]
        detail = f"{self.method} {score:.3f} (threshold {self.threshold:g})" + (
            f" against reference {best + 1} of {len(candidates)}" if len(candidates) > 1 else "")
        return Verdict("similarity", score >= self.threshold, score, detail)


def similarity_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = Options(options, ("method", "threshold", "case_sensitive", "text"))
    return _Similarity(opts.choice("method", tuple(_METHODS), "token_f1"),
                       opts.number("threshold", 0.5, low=0.0, high=1.0),
                       opts.boolean("case_sensitive", False), opts.strings("text"))


# ------------------------------------------------------------------------------ length

_UNITS = ("chars", "words", "tokens")


@dataclass(frozen=True, slots=True)
class _Length:
    """Passes when the answer's size is within every bound set."""

    bounds: tuple[tuple[str, int | None, int | None], ...]  # (unit, min, max)
    strip: bool

    async def evaluate(self, item: WorkItem, response: ProviderResponse) -> Verdict:
        text = unicodedata.normalize("NFC", response.text)
        text = text.strip() if self.strip else text
        sizes = {"chars": len(text), "words": len(words(text))}
        if response.usage is not None and not response.usage.estimated:
            sizes["tokens"] = response.usage.output_tokens
        broken, measured = [], []
        for unit, low, high in self.bounds:
            size = sizes.get(unit)
            if size is None:
                return Verdict("length", False, 0.0, "a tokens bound is set but the provider "
                               "reported no token usage", error=True)
            measured.append(f"{size} {unit}")
            if low is not None and size < low:
                broken.append(f"fewer than min_{unit} {low}")
            if high is not None and size > high:
                broken.append(f"more than max_{unit} {high}")
        detail = ", ".join(measured) + (f": {'; '.join(broken)}" if broken else "")
        return Verdict("length", not broken, 0.0 if broken else 1.0, detail)


def length_factory(options: Mapping[str, Any]) -> Evaluator:
    opts = Options(options, (*(f"{e}_{u}" for u in _UNITS for e in ("min", "max")), "strip"))
    bounds = []
    for unit in _UNITS:
        low, high = opts.count(f"min_{unit}"), opts.count(f"max_{unit}")
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_{unit} {low} is greater than max_{unit} {high}")
        if low is not None or high is not None:
            bounds.append((unit, low, high))
    if not bounds:
        raise ValueError("set at least one bound: min_chars, max_chars, min_words, max_words, "
                         "min_tokens or max_tokens")
    return _Length(tuple(bounds), opts.boolean("strip", True))
