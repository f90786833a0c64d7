"""What the built-in evaluators share: checked options, text normalisation, word
splitting and finding JSON in an answer."""

from __future__ import annotations

import contextlib
import json
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fleetbench.records import WorkItem

__all__ = ["Options", "fold", "json_values", "parse_json", "targets", "words"]


class Options:
    """An evaluator's options, read with checks: an unknown name or a value of the wrong
    kind raises ``ValueError`` naming the option (validation reports it with the
    evaluator's manifest location)."""

    def __init__(self, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(allowed)) or 'none'}")
        self._values = dict(options)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._values.get(name, default)
        if not isinstance(value, bool):
            raise ValueError(f"option {name!r} must be true or false")
        return value

    def strings(self, name: str) -> tuple[str, ...] | None:
        """A string or a list of strings, as a tuple; ``None`` when not set."""
        value = self._values.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError(f"option {name!r} must be a string or a list of strings")

    def text(self, name: str) -> str:
        """A required non-blank string."""
        value = self._values.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"option {name!r} must be a non-blank string"
                             + (" (it is required)" if value is None else ""))
        return value

    def number(self, name: str, default: float, *, low: float | None = None,
               high: float | None = None, above: float | None = None) -> float:
        """:meth:`maybe_number`, or ``default`` when not set."""
        value = self.maybe_number(name, low=low, high=high, above=above)
        return default if value is None else value

    def maybe_number(self, name: str, *, low: float | None = None, high: float | None = None,
                     above: float | None = None) -> float | None:
        """A finite number within ``[low, high]`` and greater than ``above``; ``None``
        when not set."""
        value = self._values.get(name)
        if value is None:
            return None
        bounds = [f">= {low:g}" if low is not None else "",
                  f"> {above:g}" if above is not None else "",
                  f"<= {high:g}" if high is not None else ""]
        wanted = " and ".join(b for b in bounds if b)
        problem = ValueError(f"option {name!r} must be a number" + (f" {wanted}" if wanted
                                                                     else ""))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise problem
        number = float(value)
        if not math.isfinite(number) or (low is not None and number < low) or \
                (high is not None and number > high) or (above is not None and number <= above):
            raise problem
        return number

    def count(self, name: str, *, minimum: int = 0) -> int | None:
        """A whole number of at least ``minimum``; ``None`` when not set."""
        value = self._values.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"option {name!r} must be a whole number >= {minimum}")
        return value

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        value = self._values.get(name, default)
        if value not in choices:
            raise ValueError(f"option {name!r} must be one of {', '.join(choices)}")
        return str(value)

    def raw(self, name: str) -> Any:
        """The value as written, for options an evaluator checks itself."""
        return self._values.get(name)


def fold(text: str, case_sensitive: bool) -> str:
    """NFC-normalised and, unless ``case_sensitive``, case-folded (``ß`` → ``ss``)."""
    text = unicodedata.normalize("NFC", text)
    return text if case_sensitive else text.casefold()


def targets(item: WorkItem) -> tuple[str, ...]:
    """What an answer is compared with: the test's ``expected`` text, then its
    ``references``."""
    return ((item.expected,) if item.expected is not None else ()) + item.references


# Scripts written without spaces between words: each character counts as a word.
_UNSPACED = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_UNSPACED}]|[^\W_{_UNSPACED}]+")


def words(text: str) -> list[str]:
    """The words of ``text``: runs of letters and digits (punctuation and ``_`` split
    them), and each Chinese or Japanese character on its own."""
    return _WORD.findall(text)


# ---------------------------------------------------------------------------- JSON

_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_MAX_STARTS = 64
"""Places inside prose where a JSON value is looked for, at most (each may scan far)."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def parse_json(text: str) -> Any:
    """Strict JSON (no ``NaN`` or ``Infinity``, no trailing text).

    :raises ValueError: with the parser's message, position included.
    """
    try:
        value, end = _DECODER.raw_decode(text.strip())
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if end != len(text.strip()):
        raise ValueError(f"extra text after the JSON value at character {end + 1}")
    return value


def json_values(text: str, *, fences: bool, extract: bool) -> Iterator[Any]:
    """The JSON values found in an answer, most deliberate first: the whole answer,
    then (``fences``) each fenced code block, then (``extract``) each object or array
    that starts somewhere in the prose."""
    for candidate in [text, *(_FENCE.findall(text) if fences else ())]:
        with contextlib.suppress(ValueError):
            yield parse_json(candidate)
    if not extract:
        return
    position, tried = 0, 0
    while tried < _MAX_STARTS:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            return
        start, tried = min(starts), tried + 1
        try:
            value, position = _DECODER.raw_decode(text, start)
        except (ValueError, RecursionError):
            position = start + 1
            continue
        yield value
