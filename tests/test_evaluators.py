"""The built-in evaluators, one by one (tests/test_llm_judge.py runs judges in fleets)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from fleetbench._builtins._evaluators._judge import Judgement, read_judgement
from fleetbench._builtins._evaluators._structured import numbers
from fleetbench._evalcontext import (
    FRAMING_TOKENS_PER_MESSAGE,
    RunEvaluatorContext,
    worst_case_usage,
)
from fleetbench._plugins import PluginHost
from fleetbench._pricing import Price
from fleetbench.plugin import ModelEvaluator
from fleetbench.records import (
    GenerationSettings,
    ProviderRequest,
    ProviderResponse,
    Usage,
    Verdict,
    WorkItem,
)


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
    ("similarity", {"threshold": 1.5}, "option 'threshold' must be a number >= 0 and <= 1"),
    ("similarity", {"method": "cosine"}, "must be one of token_f1, char_ratio"),
    ("length", {}, "set at least one bound"),
    ("length", {"min_words": 5, "max_words": 2}, "min_words 5 is greater than max_words 2"),
    ("length", {"max_chars": -1}, "option 'max_chars' must be a whole number >= 0"),
    ("length", {"max_tokens": 2.5}, "option 'max_tokens' must be a whole number"),
    ("json_valid", {"type": "integer"}, "option 'type' must be one of any, object"),
    ("json_schema", {}, "option 'schema' (a JSON Schema: a mapping) is required"),
    ("json_schema", {"schema": {"type": "strang"}}, "is not a valid JSON Schema"),
    ("numeric", {"value": True}, "option 'value' must be a number"),
    ("numeric", {"abs_tol": -0.1}, "option 'abs_tol' must be a number >= 0"),
    ("numeric", {"pick": "middle"}, "option 'pick' must be one of last, first, any"),
    ("llm_judge", {"rubric": "r"}, "option 'provider' must be a non-blank string (it is req"),
    ("llm_judge", {"provider": "openai:j"}, "option 'rubric' must be a non-blank string"),
    ("llm_judge", {"provider": "judge", "rubric": "r"}, "must be a 'provider:model' key"),
    ("llm_judge", {"provider": "a:b", "rubric": "r", "scale": 0}, "'scale' must be a number > 0"),
    ("llm_judge", {"provider": "a:b", "rubric": "r", "max_cost_usd": 0}, "must be a number > 0"),
    ("llm_judge", {"provider": "a:b", "rubric": "r", "max_tokens": 0}, "whole number >= 1"),
])
def test_bad_options_are_clear_errors(host: PluginHost, name: str, options: dict[str, Any],
                                      message: str) -> None:
    with pytest.raises(ValueError, match=r".*") as caught:
        host.evaluators[name].factory(options)
    assert message in str(caught.value)


# --------------------------------------------------------------------------- similarity


@pytest.mark.parametrize(("answer", "options", "score"), [
    ("def fizzbuzz", {}, 1.0),
    ("The def fizzbuzz.", {}, 0.8),  # P = 2/3, R = 1: punctuation and case do not count
    ("", {}, 0.0),
    ("kitten", {"method": "char_ratio", "text": "sitting"}, 8 / 13),  # LCS "ittn"
    ("ＤＥＦ　ＦＩＺＺＢＵＺＺ", {}, 1.0),  # NFKC folds full-width letters and spaces
    ("日本語のテスト", {"text": "日本語"}, 0.6),  # each kanji/kana a word: P 3/7, R 1
    ("DEF fizzbuzz", {"case_sensitive": True}, 0.5),
])
async def test_similarity_scores(host: PluginHost, answer: str, options: dict[str, Any],
                                 score: float) -> None:
    verdict = await _judge(host, "similarity", answer, **options)
    assert verdict.score == pytest.approx(score)
    assert verdict.passed is (score >= 0.5)
    assert not verdict.error


async def test_similarity_takes_the_best_reference(host: PluginHost) -> None:
    item = _item(expected="a b c d", references=("x y", "fizz buzz"))
    verdict = await _judge(host, "similarity", "fizz buzz", item, threshold=0.9)
    assert (verdict.passed, verdict.score) == (True, 1.0)
    assert "reference 3 of 3" in verdict.detail
    none = await _judge(host, "similarity", "x", _item(expected=None))
    assert (none.error, none.passed) == (True, False)


# ------------------------------------------------------------------------------- length


async def test_length_counts_chars_words_and_reported_tokens(host: PluginHost) -> None:
    evaluator = host.evaluators["length"].factory({"min_words": 2, "max_chars": 12,
                                                   "max_tokens": 3})
    ok = await evaluator.evaluate(_item(), ProviderResponse(" nai\u0308ve 日本 ", Usage(5, 3)))
    assert (ok.passed, ok.score) == (True, 1.0)  # NFC: "naïve" is 5 chars; 日 and 本 words
    assert ok.detail == "8 chars, 3 words, 3 tokens"
    long = await evaluator.evaluate(_item(), ProviderResponse("one two three four", Usage(5, 9)))
    assert (long.passed, long.error) == (False, False)
    assert "more than max_chars 12; more than max_tokens 3" in long.detail
    empty = await evaluator.evaluate(_item(), ProviderResponse("", Usage(5, 0)))
    assert not empty.passed
    assert "fewer than min_words 2" in empty.detail
    for usage in (None, Usage(5, 3, estimated=True)):  # no reported usage: cannot judge
        unknown = await evaluator.evaluate(_item(), ProviderResponse("a b", usage))
        assert (unknown.error, unknown.passed) == (True, False)


# --------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize(("answer", "options", "passed"), [
    ('{"a": [1, 2, {"b": null}]}', {}, True),
    ('```json\n{"a": "é✓"}\n```', {}, True),
    ('```json\n{"a": 1}\n```', {"allow_fences": False}, False),
    ('Here you go: {"a": 1} hope it helps', {}, False),
    ('Here you go: {"a": 1} hope it helps', {"extract": True}, True),
    ('{"a": NaN}', {}, False),  # not JSON, though Python's parser takes it
    ('{"a": 1} {"b": 2}', {}, False),
    ("", {}, False),
    ("[" * 100_000 + "]" * 100_000, {}, False),  # too deep for the parser: not a crash
    ("[1, 2]", {"type": "object"}, False),
    ("true", {"type": "number"}, False),
    ("3.5", {"type": "number"}, True),
])
async def test_json_valid(host: PluginHost, answer: str, options: dict[str, Any],
                          passed: bool) -> None:
    verdict = await _judge(host, "json_valid", answer, **options)
    assert (verdict.passed, verdict.error) == (passed, False)


async def test_json_valid_says_why_not(host: PluginHost) -> None:
    verdict = await _judge(host, "json_valid", '{"a": 1,}')
    assert verdict.detail.startswith("not JSON: Expecting property name")
    typed = await _judge(host, "json_valid", "[1]", type="object")
    assert typed.detail == "valid JSON, but array, not object"


_PERSON = {"type": "object", "required": ["name", "age"],
           "properties": {"name": {"type": "string", "minLength": 1},
                          "age": {"type": "integer", "minimum": 0},
                          "email": {"type": "string", "format": "email"}}}


async def test_json_schema(host: PluginHost) -> None:
    good = await _judge(host, "json_schema", '```\n{"name": "Zoë", "age": 3}\n```',
                        schema=_PERSON)
    assert (good.passed, good.score, good.error) == (True, 1.0, False)
    bad = await _judge(host, "json_schema", '{"name": "", "age": -1}', schema=_PERSON)
    assert (bad.passed, bad.error) == (False, False)
    assert bad.detail.startswith("2 schema error(s): $.age: -1 is less than the minimum of 0; "
                                 "$.name: '' should be non-empty")
    prose = await _judge(host, "json_schema", "no JSON here", schema=_PERSON)
    assert not prose.passed
    assert prose.detail.startswith("not JSON")


async def test_json_schema_checks_formats_only_when_asked(host: PluginHost) -> None:
    answer = '{"name": "a", "age": 1, "email": "not an email"}'
    assert (await _judge(host, "json_schema", answer, schema=_PERSON)).passed
    checked = await _judge(host, "json_schema", answer, schema=_PERSON, check_formats=True)
    assert not checked.passed
    assert "is not a 'email'" in checked.detail


async def test_json_schema_never_fetches_a_remote_ref(host: PluginHost) -> None:
    verdict = await _judge(host, "json_schema", "{}",
                           schema={"$ref": "https://schemas.invalid/person.json"})
    assert (verdict.error, verdict.passed) == (True, False)
    assert "the schema cannot be used" in verdict.detail


# ------------------------------------------------------------------------------ numeric


@pytest.mark.parametrize(("text", "found"), [
    ("The answer is 42.", [42.0]),
    ("It costs $1,234.56 or 1,5 units", [1234.56, 1.0, 5.0]),
    ("\u22127 and -3.5e2 and .5", [-7.0, -350.0, 0.5]),
    ("４２ apples", [42.0]),  # full-width digits
    ("٤٢", [42.0]),  # Arabic-Indic digits
    ("from 3-4 items, version v1.2.3", [3.0, 4.0]),
    ("no digits at all", []),
])
def test_numbers_are_extracted_robustly(text: str, found: list[float]) -> None:
    assert numbers(text) == found


@pytest.mark.parametrize(("answer", "options", "passed"), [
    ("So 6 * 7 = 42", {}, True),  # the last number by default
    ("42 is wrong; it is 41", {}, False),
    ("42 is wrong; it is 41", {"pick": "first"}, True),
    ("maybe 40, 41 or 42", {"pick": "any"}, True),
    ("about 41.99", {"abs_tol": 0.01}, True),
    ("about 41.9", {"abs_tol": 0.01}, False),
    ("about 42.4", {"rel_tol": 0.01}, True),
    ("It is 3.14159", {"value": 3.14, "abs_tol": 0.002}, True),
    ("forty-two", {}, False),
    ("", {}, False),
])
async def test_numeric(host: PluginHost, answer: str, options: dict[str, Any],
                       passed: bool) -> None:
    verdict = await _judge(host, "numeric", answer, _item(expected="42"), **options)
    assert (verdict.passed, verdict.error, verdict.score) == (passed, False, float(passed))


async def test_numeric_without_one_expected_number_cannot_judge(host: PluginHost) -> None:
    none = await _judge(host, "numeric", "42", _item(expected=None))
    two = await _judge(host, "numeric", "42", _item(expected="between 41 and 43"))
    assert (none.error, two.error) == (True, True)
    assert "holds 2 numbers, not one" in two.detail


# ---------------------------------------------------------------------------- llm_judge


@pytest.mark.parametrize(("text", "score", "reason"), [
    ('{"score": 8, "reason": "good"}', 8.0, "good"),
    ('Sure!\n```json\n{"Score": "7.5", "Reasoning": "fine"}\n```\nHope that helps.', 7.5,
     "fine"),
    ('My verdict: {"rating": "4/5", "explanation": "ok"} — done', 8.0, "ok"),
    ('{"score": "80%"}', 8.0, ""),
    ('{"score": 6, "reason": "cut short by max_tok', 6.0, ""),  # truncated: read as prose
    ("Score: 9/10 because it is correct.", 9.0, ""),
    ('[{"score": 1}]', 1.0, ""),  # a list is no verdict; its text still has "score": 1
    ('{"score": 0}', 0.0, ""),
])
def test_judge_answers_are_read_leniently(text: str, score: float, reason: str) -> None:
    assert read_judgement(text, 10) == Judgement(score, reason)


@pytest.mark.parametrize(("text", "message"), [
    ('{"score": 11}', "the score 11 is outside 0..10"),
    ('{"score": -1}', "the score -1 is outside 0..10"),
    ('{"score": true}', "the score True is not a number"),
    ('{"score": "N/A"}', "the score 'N/A' is not a number"),
    ('{"score": "3/0"}', "has no valid scale"),
    ("I liked it.", "no JSON object with a score"),
    ('{"reason": "cut short before the sc', "no JSON object with a score"),
    ("", "no JSON object with a score"),
])
def test_unreadable_judge_answers_are_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        read_judgement(text, 10)


def test_a_judge_score_on_a_0_to_1_scale() -> None:
    assert read_judgement('{"score": 0.8}', 1).score == 0.8
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        read_judgement('{"score": 8}', 1)


def _context(prices: dict[str, Price | None]) -> RunEvaluatorContext:
    return RunEvaluatorContext(prices)


def test_binding_checks_the_judge_against_the_manifest_providers(host: PluginHost) -> None:
    factory = host.evaluators["llm_judge"].factory
    judge = factory({"provider": "openai:judge", "rubric": "correct?", "max_cost_usd": 1})
    assert isinstance(judge, ModelEvaluator)
    with pytest.raises(ValueError, match=r"'openai:judge' is not one of the manifest's "
                                         r"providers \(simulated:fast\)"):
        judge.bind(_context({"simulated:fast": None}))
    with pytest.raises(ValueError, match="max_cost_usd needs a price for openai:judge"):
        judge.bind(_context({"openai:judge": None}))
    assert judge.bind(_context({"openai:judge": Price(1.0, 2.0)})) is not judge


async def test_an_unbound_judge_or_an_empty_answer_never_passes(host: PluginHost) -> None:
    judge = host.evaluators["llm_judge"].factory({"provider": "openai:j", "rubric": "r"})
    unbound = await judge.evaluate(_item(), ProviderResponse("def fizzbuzz(): ..."))
    assert (unbound.error, unbound.passed) == (True, False)
    assert "not bound to a run" in unbound.detail
    assert isinstance(judge, ModelEvaluator)
    bound = judge.bind(_context({"openai:j": None}))  # validation only: it cannot call
    empty = await bound.evaluate(_item(), ProviderResponse(" \n"))
    assert (empty.passed, empty.score, empty.error, empty.cost_usd) == (False, 0.0, False, None)


def test_worst_case_counts_every_prompt_byte_and_the_whole_output_budget() -> None:
    request = ProviderRequest(model="m", prompt="日本", settings=GenerationSettings(
        max_tokens=100, system="hi"), stream=False, test_key="k")
    # 6 + 2 bytes, 8 framing tokens per message and 8 for the reply
    assert worst_case_usage(request) == Usage(6 + 2 + 3 * FRAMING_TOKENS_PER_MESSAGE, 100)
    unbounded = ProviderRequest(model="m", prompt="x", settings=GenerationSettings(),
                                stream=False, test_key="k")
    assert worst_case_usage(unbounded) is None


def test_docs_describe_every_builtin_evaluator_and_option(host: PluginHost) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "evaluators.md").read_text(
        encoding="utf-8")
    builtin = [info.name for info in host.evaluators.infos()
               if info.distribution == "fleetbench"]
    assert len(builtin) == 11
    headings = [line for line in docs.splitlines() if line.startswith("## ")]
    for name in builtin:
        assert any(f"`{name}`" in heading for heading in headings), name
        with pytest.raises(ValueError, match="allowed: ") as caught:
            host.evaluators[name].factory({"no_such_option": 1})
        for option in str(caught.value).split("allowed: ")[1].split(", "):
            assert f"`{option}`" in docs, (name, option)
