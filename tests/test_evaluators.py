"""The built-in text evaluators."""

from __future__ import annotations

from typing import Any

import pytest

from fleetbench._plugins import PluginHost
from fleetbench.records import GenerationSettings, ProviderResponse, Verdict, WorkItem


def _item(expected: str | None = "def fizzbuzz", references: tuple[str, ...] = ()) -> WorkItem:
    return WorkItem(key="r/s/p:m/t", index=0, repo_id="r", scenario="s", provider="p",
                    model="m", test_id="t", epoch=1, prompt="Write fizzbuzz",
                    settings=GenerationSettings(), stream=False, expected=expected,
                    references=references)


async def _judge(host: PluginHost, name: str, answer: str, item: WorkItem | None = None,
                 **options: Any) -> Verdict:
    evaluator = host.evaluators[name].factory(options)
    return await evaluator.evaluate(item or _item(), ProviderResponse(answer))


@pytest.mark.parametrize(("name", "answer", "options", "passed"), [
    ("contains", "Here: DEF FizzBuzz(n):", {}, True),
    ("contains", "Here: DEF FizzBuzz(n):", {"case_sensitive": True}, False),
    ("contains", "print(42)", {}, False),
    ("contains", "Straße", {"text": "STRASSE"}, True),  # casefold, not lower
    ("exact", "  def fizzbuzz \n", {}, True),
    ("exact", "def  fizzbuzz", {}, False),
    ("exact", "def  fizzbuzz", {"collapse_whitespace": True}, True),
    ("exact", "DEF FIZZBUZZ", {}, False),
    ("regex", "def fizzbuzz(n):", {"pattern": r"^def \w+\(n\)"}, True),
    ("regex", "x = 1", {"pattern": r"^def"}, False),
    ("regex", "DEF X", {"pattern": "^def", "flags": "i"}, True),
    ("regex", "def x\nmore", {"pattern": "def x", "full_match": True}, False),
])
async def test_verdicts(host: PluginHost, name: str, answer: str, options: dict[str, Any],
                        passed: bool) -> None:
    verdict = await _judge(host, name, answer, **options)
    assert (verdict.evaluator, verdict.passed, verdict.error) == (name, passed, False)
    assert verdict.score == (1.0 if passed else 0.0)


async def test_contains_all_and_any_use_references(host: PluginHost) -> None:
    item = _item(references=("for i in range", "print"))
    both = await _judge(host, "contains_all", "for i in range(9): print(i)", item)
    one = await _judge(host, "contains_all", "for i in range(9): pass", item)
    anyone = await _judge(host, "contains_any", "for i in range(9): pass", item)
    assert (both.passed, one.passed, one.score, anyone.passed) == (True, False, 0.5, True)
    assert "missing ['print']" in one.detail


async def test_nothing_to_compare_is_an_evaluator_error_never_a_pass(host: PluginHost) -> None:
    for name in ("contains", "exact", "contains_all"):
        verdict = await _judge(host, name, "anything", _item(expected=None))
        assert verdict.error
        assert not verdict.passed


async def test_empty_and_unicode_answers(host: PluginHost) -> None:
    assert not (await _judge(host, "contains", "")).passed
    verdict = await _judge(host, "contains", "résumé: 日本語", _item(expected="日本語"))
    assert verdict.passed


@pytest.mark.parametrize(("name", "options", "message"), [
    ("regex", {}, "option 'pattern'"),
    ("regex", {"pattern": "("}, "invalid regular expression"),
    ("regex", {"pattern": "x", "flags": "q"}, "unknown regex flag 'q'"),
    ("contains", {"txt": "x"}, "unknown option(s) txt"),
    ("exact", {"strip": "yes"}, "option 'strip' must be true or false"),
    ("contains_any", {"values": [1]}, "must be a string or a list of strings"),
])
def test_bad_options_are_clear_errors(host: PluginHost, name: str, options: dict[str, Any],
                                      message: str) -> None:
    with pytest.raises(ValueError, match=r".*") as caught:
        host.evaluators[name].factory(options)
    assert message in str(caught.value)
