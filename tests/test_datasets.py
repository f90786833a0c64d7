"""Dataset loading: test-bench's files unchanged, fleetbench's additions, JSONL, CSV, and a
table of bad inputs each reported at its exact location."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from fleetbench._datasets import CONFIG_MODEL_KEY, config_models, load_dataset
from fleetbench._templates import render_template
from fleetbench.errors import DatasetError, Problem
from fleetbench.records import EvaluatorRef, GenerationSettings

DATA = Path(__file__).parent / "data" / "datasets"


# ------------------------------------------------------------ test-bench's own files


def test_test_bench_coding_tasks_load_unchanged() -> None:
    path = DATA / "coding-tasks.json"
    dataset = load_dataset(path)

    assert (dataset.name, dataset.version) == ("coding-tasks", "1.0.0")
    assert dataset.description == "Programming challenges in multiple languages"
    assert dataset.defaults == GenerationSettings(temperature=0.0, max_tokens=500)
    assert len(dataset.test_cases) == 7
    fizzbuzz = dataset.test_cases[0]
    assert fizzbuzz.id == "fizzbuzz-python"
    assert fizzbuzz.category == "coding"
    assert fizzbuzz.variables == {"n": "100"}
    assert fizzbuzz.expected == "def fizzbuzz"
    assert fizzbuzz.references == ("for i in range", "if i % 15", "FizzBuzz")
    assert fizzbuzz.config == GenerationSettings()
    assert dataset.source == str(path)
    assert dataset.content_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_test_bench_prompts_render_with_their_variables() -> None:
    cases = {case.id: case for case in load_dataset(DATA / "coding-tasks.json").test_cases}

    def rendered(test_id: str) -> str:
        case = cases[test_id]
        return render_template(case.prompt, case.variables, test_id=case.id)

    assert rendered("fizzbuzz-python").endswith("for numbers 1 to 100.")
    assert rendered("fibonacci-javascript").startswith("Implement a JavaScript function")
    assert rendered("reverse-string-rust") == cases["reverse-string-rust"].prompt


def test_test_bench_reasoning_tasks_yaml_load_unchanged() -> None:
    dataset = load_dataset(DATA / "reasoning-tasks.yaml")

    assert [case.id for case in dataset.test_cases] == [
        "logic-puzzle-truthtellers", "math-word-problem-distance", "pattern-recognition",
        "age-problem", "river-crossing",
    ]
    assert dataset.defaults == GenerationSettings(temperature=0.7, max_tokens=300)
    puzzle, distance = dataset.test_cases[0], dataset.test_cases[1]
    assert puzzle.prompt.startswith("Three people are in a room: Alice, Bob, and Carol.\n")
    assert puzzle.references == ("Alice tells the truth", "logical contradiction")
    assert distance.variables == {"distance": "240", "speed": "80"}
    assert dataset.test_cases[4].expected is None


def test_test_bench_quick_start_loads_unchanged() -> None:
    dataset = load_dataset(DATA / "quick-start.json")

    assert [case.category for case in dataset.test_cases] == ["basic", "basic", "creative"]
    greeting = dataset.test_cases[2]
    assert render_template(greeting.prompt, greeting.variables, test_id=greeting.id) == (
        "Write a creative greeting for someone named Alice."
    )


# ----------------------------------------------------------------- fleetbench additions


def test_additions_tags_evaluators_system_params_and_config_model() -> None:
    dataset = load_dataset(DATA / "extended.yaml")
    capital, year = dataset.test_cases

    assert dataset.version is None
    assert dataset.defaults == GenerationSettings(
        temperature=0.2, max_tokens=256, top_p=0.9, stop=("###",),
        system="You are a terse assistant.", params={"seed": 7},
    )
    assert capital.tags == ("smoke", "geo")
    assert capital.evaluators == (
        EvaluatorRef("contains"), EvaluatorRef("regex", {"pattern": "(?i)paris"}),
    )
    assert capital.config == GenerationSettings(
        temperature=0.0, stop=("\n\n", "END"), system="Answer with one word.",
        params={"top_k": 40},
    )
    assert capital.metadata == {"difficulty": "easy", CONFIG_MODEL_KEY: "gpt-4"}
    assert config_models(dataset) == {"capital-france": "gpt-4"}
    assert (year.tags, year.evaluators, year.metadata) == ((), (), {})


def test_a_value_that_looks_like_a_placeholder_is_not_expanded() -> None:
    year = load_dataset(DATA / "extended.yaml").test_cases[1]
    assert render_template(year.prompt, year.variables, test_id=year.id) == (
        "In which year did the moon landing happen? Reply like {{year}}."
    )


def test_numbers_in_yaml_become_strings_where_text_is_expected(tmp_path: Path) -> None:
    path = tmp_path / "numbers.yaml"
    path.write_text("name: numbers\nversion: 1.0\ntest_cases:\n"
                    "  - id: 1\n    prompt: Count to {{n}}\n    variables: {n: 100}\n")
    dataset = load_dataset(path)
    assert dataset.version == "1.0"
    assert dataset.test_cases[0].id == "1"
    assert dataset.test_cases[0].variables == {"n": "100"}


def test_evaluators_given_as_a_string_or_a_mapping_with_sibling_options(tmp_path: Path) -> None:
    path = tmp_path / "evals.json"
    path.write_text(json.dumps({"name": "e", "test_cases": [{
        "id": "a", "prompt": "p",
        "evaluators": ["exact", {"name": "llm_judge", "threshold": 0.7, "rubric": "kind"}],
    }]}))
    assert load_dataset(path).test_cases[0].evaluators == (
        EvaluatorRef("exact"), EvaluatorRef("llm_judge", {"threshold": 0.7, "rubric": "kind"}),
    )


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_valid()).encode())
    assert load_dataset(path).name == "valid"


# ------------------------------------------------------------------------ JSONL, CSV


def test_jsonl_has_one_case_per_line_and_is_named_after_its_file() -> None:
    dataset = load_dataset(DATA / "support-tickets.jsonl")

    assert dataset.name == "support-tickets"
    assert dataset.version is None
    assert [case.id for case in dataset.test_cases] == ["refund", "password-reset", "tone"]
    refund, reset, tone = dataset.test_cases
    assert refund.tags == ("billing",)
    assert refund.variables == {"product": "a kettle"}
    assert reset.evaluators == (EvaluatorRef("references_all"),)
    assert tone.config == GenerationSettings(temperature=0.5, max_tokens=64)


def test_csv_columns_lists_and_variables() -> None:
    dataset = load_dataset(DATA / "coding-grid.csv")

    assert dataset.name == "coding-grid"
    fizzbuzz, hello, quoted = dataset.test_cases
    assert fizzbuzz.category == "coding"
    assert fizzbuzz.expected == "def fizzbuzz"
    assert fizzbuzz.references == ("for i in range", "if i % 15")
    assert fizzbuzz.tags == ("smoke", "coding")
    assert fizzbuzz.variables == {"lang": "Python", "n": "100"}
    assert (hello.expected, hello.references, hello.tags, hello.variables) == (None, (), (), {})
    assert quoted.prompt.startswith('Write a {{lang}} function that prints "a, b" on two')
    assert quoted.prompt.endswith("one per line.")
    assert quoted.references == ("a | b", "c")
    assert quoted.variables == {"lang": "Rust"}


def test_an_empty_csv_variable_cell_means_not_supplied(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    path.write_text("id,prompt,var.lang\na,In {{lang}},\nb,In {{lang}},Go\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert caught.value.problems == (
        Problem(f"{path}:2: prompt", "test 'a': missing template variable(s): lang"),
    )


# ------------------------------------------------------------------------ bad inputs


def _valid(**top: Any) -> dict[str, Any]:
    return {"name": "valid", "version": "1", "test_cases": [{"id": "a", "prompt": "Hi"}], **top}


def _case(**fields: Any) -> dict[str, Any]:
    return _valid(test_cases=[{"id": "a", "prompt": "Hi", **fields}])


def _j(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1)


# (file name, content, location after the path, key phrase, number of problems)
BAD: list[tuple[str, str, str, str, int]] = [
    ("syntax.json", '{"name": "x",\n  "test_cases": [}', ":2:18", "invalid JSON: Expecting",
     1),
    ("syntax.yaml", "name: x\ntest_cases: [\n", ":3:1", "invalid YAML", 1),
    ("list.json", "[]", "", "expected a mapping with 'name' and 'test_cases', got a list", 1),
    ("empty.yaml", "", "", "got an empty file", 1),
    ("typo.json", _j({"name": "x", "test_case": []}), ": test_case",
     "unknown key; did you mean 'test_cases'?", 2),
    ("promt.json", _j(_valid(test_cases=[{"id": "a", "promt": "Hi"}])), ": test_cases[0].promt",
     "unknown key; did you mean 'prompt'?", 2),
    ("noprompt.json", _j(_valid(test_cases=[{"id": "a"}])), ": test_cases[0].prompt",
     "required key is missing", 1),
    ("temprature.json", _j(_case(config={"temprature": 0.1})),
     ": test_cases[0].config.temprature", "unknown key; did you mean 'temperature'?", 1),
    ("blankname.json", _j(_valid(name=" ")), ": name", "dataset name must not be blank", 1),
    ("nocases.json", _j(_valid(test_cases=[])), ": test_cases",
     "a dataset needs at least one test case", 1),
    ("blankid.json", _j(_case(id="  ")), ": test_cases[0].id", "test id must not be blank", 1),
    ("slash.json", _j(_case(id="a/b")), ": test_cases[0].id", "must not contain '/'", 1),
    ("hash.json", _j(_case(id="a#r2")), ": test_cases[0].id", "must not contain '#'", 1),
    ("blankprompt.yaml", "name: x\ntest_cases:\n  - id: a\n    prompt: '  '\n",
     ": test_cases[0].prompt", "prompt must not be blank", 1),
    ("dup.json", _j(_valid(test_cases=[{"id": "a", "prompt": "1"}, {"id": "b", "prompt": "2"},
                                       {"id": "a", "prompt": "3"}])),
     ": test_cases[2].id", "duplicate test id 'a': also used by test_cases[0]", 1),
    ("missingvar.json", _j(_case(prompt="In {{lang}} up to {{ n }}", variables={"n": "3"})),
     ": test_cases[0].prompt", "test 'a': missing template variable(s): lang", 1),
    ("hot.json", _j(_valid(defaults={"temperature": 3})), ": defaults.temperature",
     "less than or equal to 2", 1),
    ("topp.json", _j(_case(config={"top_p": 1.5})), ": test_cases[0].config.top_p",
     "less than or equal to 1", 1),
    ("zero.json", _j(_case(config={"max_tokens": 0})), ": test_cases[0].config.max_tokens",
     "greater than or equal to 1", 1),
    ("strtokens.yaml", "name: x\ndefaults: {max_tokens: '100'}\ntest_cases: [{id: a, prompt: p}]",
     ": defaults.max_tokens", "valid integer", 1),
    ("booltemp.json", _j(_valid(defaults={"temperature": True})), ": defaults.temperature",
     "valid number", 1),
    ("nan.json", '{"name": "x", "defaults": {"top_p": NaN}, "test_cases": [{"id": "a", '
     '"prompt": "p"}]}', ": defaults.top_p", "finite number", 1),
    ("boolvar.json", _j(_case(variables={"flag": True})), ": test_cases[0].variables.flag",
     "valid string", 1),
    ("stop.json", _j(_valid(defaults={"stop": 5})), ": defaults.stop", "valid list", 1),
    ("defaults.json", _j(_valid(defaults="hot")), ": defaults", "Input should be a mapping", 1),
    ("notmap.json", _j(_valid(test_cases=["hello"])), ": test_cases[0]",
     "a test case must be a mapping, got a string", 1),
    ("evalname.json", _j(_case(evaluators=[{"name": ""}])), ": test_cases[0].evaluators[0].name",
     "evaluator name must not be blank", 1),
    ("blanktag.json", _j(_case(tags=["ok", " "])), ": test_cases[0].tags",
     "tags must not be blank", 1),
    ("reserved.json", _j(_case(metadata={"config_model": "x"})), ": test_cases[0].metadata",
     "key 'config_model' is reserved for config.model", 1),
    ("dupkey.json", '{"name": "x", "name": "y", "test_cases": []}', "",
     "duplicate key 'name' in a JSON object", 1),
    ("dupkey.yaml", "name: x\ntest_cases:\n  - id: a\n    id: b\n    prompt: p\n", ":4:5",
     "invalid YAML: found duplicate key 'id'", 1),
    ("lines.jsonl", '{"id": "a", "prompt": "p"}\n{"id": "b", "prompt": }\n', ":2:23",
     "invalid JSON: Expecting value", 1),
    ("array.jsonl", '["id", "a"]\n', ":1", "a test case must be a mapping, got a list", 1),
    ("dup.jsonl", '{"id": "a", "prompt": "p"}\n\n{"id": "a", "prompt": "q"}\n', ":3: id",
     "duplicate test id 'a': also used by line 1", 1),
    ("blank.jsonl", "\n  \n", "", "a dataset needs at least one test case", 1),
    ("nocol.csv", "id,text\na,b\n", ":1", "required column 'prompt' is missing", 2),
    ("promt.csv", "id,promt\na,b\n", ":1", "unknown column 'promt'; did you mean 'prompt'?", 2),
    ("twice.csv", "id,prompt,id\na,b,c\n", ":1", "column 'id' appears twice", 1),
    ("cells.csv", "id,prompt\na,b,c\n", ":2", "row has 3 cells but the header has 2 columns", 1),
    ("var.csv", "id,prompt,var.lang\nx,Say {{lang}},\n", ":2: prompt",
     "test 'x': missing template variable(s): lang", 1),
    ("multiline.csv", 'id,prompt\n\na,"two\nlines {{x}}"\nb,ok\n', ":3: prompt",
     "test 'a': missing template variable(s): x", 1),
    ("refs.csv", 'id,prompt,references\na,p,"[1, 2]"\n', ":2: references",
     "must be a JSON array of strings", 1),
    ("quote.csv", 'id,prompt\na,"unterminated\n', ":2", "invalid CSV", 1),
    ("blank.csv", "\n\n", "", "empty CSV file", 1),
    ("notes.txt", "hello", "", "unsupported dataset format '.txt'", 1),
]


@pytest.mark.parametrize(("name", "content", "where", "phrase", "count"), BAD,
                         ids=[row[0] for row in BAD])
def test_bad_input_is_reported_at_its_location(
    tmp_path: Path, name: str, content: str, where: str, phrase: str, count: int
) -> None:
    path = tmp_path / "datasets" / name
    path.parent.mkdir()
    path.write_text(content)

    with pytest.raises(DatasetError) as caught:
        load_dataset(path)

    problems = caught.value.problems
    assert all(p.location.startswith(str(path)) for p in problems), problems
    assert [p for p in problems if p.location == f"{path}{where}" and phrase in p.message], (
        f"no problem at {path}{where} containing {phrase!r}: {problems}"
    )
    assert len(problems) == count, problems


def test_all_problems_are_reported_at_once_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "name: many\n"
        "descripton: typo\n"
        "test_cases:\n"
        "  - {id: a, prompt: 'Hi {{who}}'}\n"
        "  - {id: b, prompt: ok, config: {temperature: -1}}\n"
        "  - {id: a, prompt: again}\n"
    )
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert [(p.location.removeprefix(str(path)), p.message) for p in caught.value.problems] == [
        (": descripton", "unknown key; did you mean 'description'?"),
        (": test_cases[0].prompt", "test 'a': missing template variable(s): who"),
        (": test_cases[1].config.temperature", "Input should be greater than or equal to 0"),
        (": test_cases[2].id", "duplicate test id 'a': also used by test_cases[0]"),
    ]


def test_an_unreadable_file_is_a_dataset_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert caught.value.problems == (Problem(str(path), "cannot read file: No such file or "
                                                        "directory"),)


def test_non_utf8_bytes_are_a_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert caught.value.problems == (Problem(str(path), "not UTF-8 text (invalid byte at "
                                                        "offset 9)"),)
