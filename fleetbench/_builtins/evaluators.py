"""The built-in evaluators, registered through the same hook as third-party ones.

Each judges an answer against the test case (``expected``, ``references``) or its own
options and returns a verdict with a score in [0, 1] and a short detail; what it cannot
judge (no expected text, say, or a judge's unreadable answer) is an evaluator error,
never a pass. Implementations live in :mod:`fleetbench._builtins._evaluators`; user
documentation in docs/evaluators.md.
"""

from __future__ import annotations

from fleetbench._builtins._evaluators._judge import judge_factory
from fleetbench._builtins._evaluators._structured import (
    json_schema_factory,
    json_valid_factory,
    numeric_factory,
)
from fleetbench._builtins._evaluators._text import (
    contains_factory,
    exact_factory,
    length_factory,
    regex_factory,
    similarity_factory,
)
from fleetbench.plugin import EvaluatorSpec, hookimpl


@hookimpl
def fleetbench_register_evaluators() -> list[EvaluatorSpec]:
    return [
        EvaluatorSpec("contains", contains_factory("contains", True),
                      "answer contains the expected text (option text: another needle)"),
        EvaluatorSpec("contains_all", contains_factory("contains_all", True),
                      "answer contains every reference (option values)"),
        EvaluatorSpec("contains_any", contains_factory("contains_any", False),
                      "answer contains at least one reference (option values)"),
        EvaluatorSpec("exact", exact_factory,
                      "answer equals the expected text (case_sensitive, strip, "
                      "collapse_whitespace)"),
        EvaluatorSpec("regex", regex_factory,
                      "answer matches a regular expression (pattern, flags, full_match)"),
        EvaluatorSpec("similarity", similarity_factory,
                      "answer is similar to the expected text or a reference (method "
                      "token_f1 | char_ratio, threshold)"),
        EvaluatorSpec("length", length_factory,
                      "answer length within bounds (min/max_chars, _words, _tokens)"),
        EvaluatorSpec("json_valid", json_valid_factory,
                      "answer is JSON (type, allow_fences, extract)"),
        EvaluatorSpec("json_schema", json_schema_factory,
                      "answer is JSON valid against a JSON Schema (schema, check_formats)"),
        EvaluatorSpec("numeric", numeric_factory,
                      "answer's number equals the expected one (value, abs_tol, rel_tol, "
                      "pick)"),
        EvaluatorSpec("llm_judge", judge_factory,
                      "a manifest provider grades the answer against a rubric (provider, "
                      "rubric, threshold, scale, max_cost_usd)"),
    ]
