"""Loads dataset files (JSON, YAML, JSONL, CSV) into validated :class:`Dataset` records.

JSON and YAML files use test-bench's dataset format unchanged, plus a few additions
(``tags``, ``evaluators``, ``system`` and ``params``); JSONL holds one test case per
line and CSV one per row (see docs/datasets.md). Whatever the format, a file either
loads completely or raises one :class:`DatasetError` listing *every* problem found, each
located as ``<file>: test_cases[3].prompt`` (JSON/YAML) or ``<file>:<line>: prompt``
(JSONL/CSV) — never a traceback and never a half-loaded dataset.

Prompts stay templates here: the loader only checks that every ``{{var}}`` a prompt
uses is supplied, so a bad dataset fails before a run starts; the planner renders them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from fleetbench._templates import render_template
from fleetbench._validation import format_location, problems_from_pydantic, suggest
from fleetbench._yaml import load_yaml
from fleetbench.errors import DatasetError, Problem
from fleetbench.records import Dataset, EvaluatorRef, GenerationSettings, TestCase

__all__ = [
    "CONFIG_MODEL_KEY",
    "DATASET_SUFFIXES",
    "config_models",
    "load_dataset",
]

DATASET_SUFFIXES: tuple[str, ...] = (".json", ".yaml", ".yml", ".jsonl", ".csv")
"""File suffixes a dataset may have, in the order adapters try them."""

CONFIG_MODEL_KEY = "config_model"
"""``TestCase.metadata`` key holding a test's ``config.model``.

fleetbench always sends the model the manifest names, so a dataset's per-test model is
not used; it is kept here (rather than dropped) so callers can warn about it."""

_CSV_COLUMNS = ("id", "prompt", "category", "expected", "references", "tags")
_CSV_VAR_PREFIX = "var."


# ------------------------------------------------------------------------ schema


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


_Temperature = Annotated[StrictFloat, Field(ge=0, le=2, allow_inf_nan=False)]
_TopP = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]
_MaxTokens = Annotated[StrictInt, Field(ge=1)]


class Defaults(_Model):
    """Dataset ``defaults``: test-bench's four settings plus ``system`` and ``params``."""

    temperature: _Temperature | None = None
    max_tokens: _MaxTokens | None = None
    top_p: _TopP | None = None
    stop: list[str] | None = None
    system: str | None = None
    params: dict[str, Any] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def to_settings(self) -> GenerationSettings:
        return GenerationSettings(
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_p=self.top_p,
            stop=None if self.stop is None else tuple(self.stop),
            system=self.system,
            params=dict(self.params or {}),
        )


class TestConfig(Defaults):
    """A test case's ``config``: the defaults' fields plus test-bench's ``model``."""

    __test__ = False  # not a pytest test class

    model: str | None = None


class EvaluatorEntry(_Model):
    """One entry of a test case's ``evaluators`` written as a mapping.

    The same shape as a manifest's evaluator entries: ``name`` plus the evaluator's
    options as sibling keys (``{name: regex, pattern: "^def"}``). A bare string is a
    name without options. The evaluator plugin validates the options.
    """

    model_config = ConfigDict(extra="allow")

    name: str

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("evaluator name must not be blank")
        return value

    def to_ref(self) -> EvaluatorRef:
        return EvaluatorRef(name=self.name, options=dict(self.model_extra or {}))


class TestCaseModel(_Model):
    """One test case as written in a file."""

    __test__ = False  # not a pytest test class

    id: str
    prompt: str
    category: str | None = None
    variables: dict[str, str] | None = None
    expected: str | None = None
    references: list[str] | None = None
    config: TestConfig | None = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None
    evaluators: list[EvaluatorEntry] | None = None

    @field_validator("id")
    @classmethod
    def _id_fits_in_a_test_key(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("test id must not be blank")
        for char in ("/", "#"):
            if char in value:
                raise ValueError(f"test id {value!r} must not contain {char!r} "
                                 "(test ids are part of test keys)")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be blank")
        return value

    @field_validator("tags")
    @classmethod
    def _tags_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not tag.strip() for tag in value):
            raise ValueError("tags must not be blank")
        return value

    @field_validator("metadata")
    @classmethod
    def _reserved_key_unused(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and CONFIG_MODEL_KEY in value:
            raise ValueError(f"key {CONFIG_MODEL_KEY!r} is reserved for config.model")
        return value

    @field_validator("evaluators", mode="before")
    @classmethod
    def _names_are_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


class DatasetModel(_Model):
    """The top level of a JSON or YAML dataset; test cases are validated one by one."""

    name: str
    version: str | None = None
    description: str | None = None
    defaults: Defaults | None = None
    test_cases: list[Any]
    metadata: dict[str, Any] | None = None

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("dataset name must not be blank")
        return value

    @field_validator("test_cases")
    @classmethod
    def _at_least_one(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("a dataset needs at least one test case")
        return value


# ----------------------------------------------------------------------- loading


@dataclass(frozen=True, slots=True)
class _Where:
    """Where one test case sits in its file, to build the locations of its problems.

    ``head`` is the file (``coding.yaml``) or file and line (``coding.jsonl:3``);
    ``prefix`` is the case's field path inside the file (``test_cases[3]``) or empty.
    """

    head: str
    prefix: str
    label: str

    def at(self, *parts: str | int) -> str:
        inner = format_location(parts, self.prefix)
        return f"{self.head}: {inner}" if inner else self.head


@dataclass(slots=True)
class _Parsed:
    """A file split into its dataset-level fields and its raw test cases."""

    header: DatasetModel | None
    cases: list[tuple[_Where, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def load_dataset(path: Path) -> Dataset:
    """Read, validate and convert the dataset file at ``path``.

    The format follows the suffix: ``.json``, ``.yaml``/``.yml``, ``.jsonl`` or ``.csv``.

    :raises DatasetError: listing every problem, each located in the file, when the
        file cannot be read or parsed or is not a valid dataset.
    """
    parse = _PARSERS.get(path.suffix.lower())
    if parse is None:
        raise DatasetError([Problem(str(path), f"unsupported dataset format {path.suffix!r}; "
                                    f"expected one of {', '.join(DATASET_SUFFIXES)}")])
    data = _read(path)
    parsed = parse(_decode(data, path), path)
    cases = _validate_cases(parsed)
    if parsed.problems or parsed.header is None:
        raise DatasetError(parsed.problems)
    return _to_dataset(parsed.header, cases, path, data)


def config_models(dataset: Dataset) -> dict[str, str]:
    """``{test id: model}`` for the tests whose ``config.model`` names a model.

    fleetbench sends the manifest's model regardless; callers use this to warn.
    """
    return {
        case.id: str(case.metadata[CONFIG_MODEL_KEY])
        for case in dataset.test_cases
        if CONFIG_MODEL_KEY in case.metadata
    }


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        problem = Problem(str(path), f"cannot read file: {exc.strerror or exc}")
        raise DatasetError([problem]) from None


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            [Problem(str(path), f"not UTF-8 text (invalid byte at offset {exc.start})")]
        ) from None


def _to_dataset(
    header: DatasetModel, cases: Sequence[TestCaseModel], path: Path, data: bytes
) -> Dataset:
    return Dataset(
        name=header.name,
        test_cases=tuple(_to_test_case(case) for case in cases),
        source=str(path),
        content_sha256=hashlib.sha256(data).hexdigest(),
        version=header.version,
        description=header.description,
        defaults=header.defaults.to_settings() if header.defaults else GenerationSettings(),
        metadata=dict(header.metadata or {}),
    )


def _to_test_case(model: TestCaseModel) -> TestCase:
    metadata = dict(model.metadata or {})
    if model.config is not None and model.config.model is not None:
        metadata[CONFIG_MODEL_KEY] = model.config.model
    return TestCase(
        id=model.id,
        prompt=model.prompt,
        category=model.category,
        variables=dict(model.variables or {}),
        expected=model.expected,
        references=tuple(model.references or ()),
        config=model.config.to_settings() if model.config else GenerationSettings(),
        metadata=metadata,
        tags=tuple(model.tags or ()),
        evaluators=tuple(entry.to_ref() for entry in model.evaluators or ()),
    )


# -------------------------------------------------------------------- validation


def _validate_cases(parsed: _Parsed) -> list[TestCaseModel]:
    """Validate every raw case, check id uniqueness and templates; collect problems."""
    valid: list[TestCaseModel] = []
    first_seen: dict[str, _Where] = {}
    for where, raw in parsed.cases:
        case = _validate_case(where, raw, parsed.problems)
        _check_duplicate(where, raw, first_seen, parsed.problems)
        if case is not None:
            _check_template(where, case, parsed.problems)
            valid.append(case)
    return valid


def _validate_case(where: _Where, raw: Any, problems: list[Problem]) -> TestCaseModel | None:
    if not isinstance(raw, dict):
        problems.append(Problem(where.at(), f"a test case must be a mapping, got {_kind(raw)}"))
        return None
    try:
        return TestCaseModel.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems.extend(_from_pydantic(exc, TestCaseModel, where.head, where.prefix))
        return None


def _check_duplicate(
    where: _Where, raw: Any, first_seen: dict[str, _Where], problems: list[Problem]
) -> None:
    test_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(test_id, int | float) and not isinstance(test_id, bool):
        test_id = str(test_id)
    if not isinstance(test_id, str) or not test_id.strip():
        return
    first = first_seen.setdefault(test_id, where)
    if first is not where:
        problems.append(Problem(
            where.at("id"), f"duplicate test id {test_id!r}: also used by {first.label}"
        ))


def _check_template(where: _Where, case: TestCaseModel, problems: list[Problem]) -> None:
    try:
        render_template(case.prompt, case.variables or {}, test_id=case.id)
    except DatasetError as exc:
        for problem in exc.problems:
            problems.append(Problem(where.at("prompt"), f"{problem.location}: {problem.message}"))


def _from_pydantic(
    exc: pydantic.ValidationError, model: type[BaseModel], head: str, prefix: str
) -> list[Problem]:
    """pydantic's errors as problems located in the file, without our class names."""
    return [
        Problem(f"{head}: {p.location}" if p.location else head,
                _MODEL_TYPE.sub("Input should be a mapping", p.message))
        for p in problems_from_pydantic(exc, model, prefix)
    ]


_MODEL_TYPE = re.compile(r"Input should be a valid dictionary or instance of \w+")


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


# ----------------------------------------------------------------- JSON and YAML


class _DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (the last would silently win)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(f"duplicate key {key!r} in a JSON object")
        out[key] = value
    return out


def _parse_json(text: str, path: Path) -> _Parsed:
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            [Problem(f"{path}:{exc.lineno}:{exc.colno}", f"invalid JSON: {exc.msg}")]
        ) from None
    except _DuplicateKeyError as exc:
        raise DatasetError([Problem(str(path), f"invalid JSON: {exc}")]) from None
    return _parse_document(document, path)


def _parse_yaml(text: str, path: Path) -> _Parsed:
    try:
        document = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        detail = exc.problem or exc.context or "malformed YAML"
        raise DatasetError([Problem(where, f"invalid YAML: {detail}")]) from None
    except yaml.YAMLError as exc:
        raise DatasetError([Problem(str(path), f"invalid YAML: {exc}")]) from None
    return _parse_document(document, path)


def _parse_document(document: Any, path: Path) -> _Parsed:
    """Split a JSON/YAML document into its validated header and its raw test cases."""
    if not isinstance(document, dict):
        found = "an empty file" if document is None else _kind(document)
        raise DatasetError([Problem(
            str(path), f"expected a mapping with 'name' and 'test_cases', got {found}"
        )])
    parsed = _Parsed(header=None)
    try:
        parsed.header = DatasetModel.model_validate(document)
    except pydantic.ValidationError as exc:
        parsed.problems.extend(_from_pydantic(exc, DatasetModel, str(path), ""))
    raw_cases = document.get("test_cases")
    if isinstance(raw_cases, list):
        for index, raw in enumerate(raw_cases):
            prefix = format_location(("test_cases", index))
            parsed.cases.append((_Where(str(path), prefix, prefix), raw))
    return parsed


# -------------------------------------------------------------------------- JSONL


def _parse_jsonl(text: str, path: Path) -> _Parsed:
    """One JSON object per line; blank lines are skipped. The name is the file stem."""
    parsed = _Parsed(header=_header_from_stem(path))
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            location = f"{path}:{lineno}:{exc.colno}"
            parsed.problems.append(Problem(location, f"invalid JSON: {exc.msg}"))
            continue
        except _DuplicateKeyError as exc:
            parsed.problems.append(Problem(f"{path}:{lineno}", f"invalid JSON: {exc}"))
            continue
        parsed.cases.append((_Where(f"{path}:{lineno}", "", f"line {lineno}"), raw))
    _require_cases(parsed, path)
    return parsed


def _header_from_stem(path: Path) -> DatasetModel:
    """The dataset-level fields of a JSONL or CSV file: just a name, the file stem."""
    return DatasetModel.model_construct(name=path.stem, test_cases=[])


def _require_cases(parsed: _Parsed, path: Path) -> None:
    if not parsed.cases and not parsed.problems:
        parsed.problems.append(Problem(str(path), "a dataset needs at least one test case"))


# ---------------------------------------------------------------------------- CSV


def _parse_csv(text: str, path: Path) -> _Parsed:
    """A header row, then one test case per row. The name is the file stem."""
    parsed = _Parsed(header=_header_from_stem(path))
    rows = [(lineno, row) for lineno, row in _csv_rows(text, path)
            if any(cell.strip() for cell in row)]
    if not rows:
        raise DatasetError([Problem(str(path), "empty CSV file: expected a header row "
                                    "with at least the columns 'id' and 'prompt'")])
    (header_line, header), body = rows[0], rows[1:]
    columns = [name.strip() for name in header]
    header_problems = _check_columns(columns, f"{path}:{header_line}")
    if header_problems:
        raise DatasetError(header_problems)
    for lineno, row in body:
        where = _Where(f"{path}:{lineno}", "", f"line {lineno}")
        raw = _row_to_case(columns, row, where, parsed.problems)
        if raw is not None:
            parsed.cases.append((where, raw))
    _require_cases(parsed, path)
    return parsed


def _csv_rows(text: str, path: Path) -> list[tuple[int, list[str]]]:
    """Every row with the line it starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    previous_end = 0
    try:
        for row in reader:
            rows.append((previous_end + 1, row))
            previous_end = reader.line_num
    except csv.Error as exc:
        raise DatasetError(
            [Problem(f"{path}:{reader.line_num}", f"invalid CSV: {exc}")]
        ) from None
    return rows


def _check_columns(columns: list[str], where: str) -> list[Problem]:
    problems: list[Problem] = []
    for index, name in enumerate(columns):
        if name in columns[:index]:
            problems.append(Problem(where, f"column {name!r} appears twice"))
        elif not name:
            problems.append(Problem(where, f"column {index + 1} has no name"))
        elif name.startswith(_CSV_VAR_PREFIX) and not name.removeprefix(_CSV_VAR_PREFIX):
            problems.append(Problem(where, f"column {name!r} names no variable"))
        elif name not in _CSV_COLUMNS and not name.startswith(_CSV_VAR_PREFIX):
            hint = suggest(name, [*_CSV_COLUMNS, "var.<name>"])
            problems.append(Problem(where, f"unknown column {name!r}{hint}"))
    problems.extend(
        Problem(where, f"required column {required!r} is missing")
        for required in ("id", "prompt")
        if required not in columns
    )
    return problems


def _row_to_case(
    columns: list[str], row: list[str], where: _Where, problems: list[Problem]
) -> dict[str, Any] | None:
    if len(row) > len(columns):
        problems.append(Problem(
            where.at(), f"row has {len(row)} cells but the header has {len(columns)} columns"
        ))
        return None
    cells = dict(zip(columns, [*row, *[""] * (len(columns) - len(row))], strict=True))
    raw: dict[str, Any] = {"id": cells["id"].strip(), "prompt": cells["prompt"]}
    for name in ("category", "expected"):
        if cells.get(name, "").strip():
            raw[name] = cells[name].strip() if name == "category" else cells[name]
    for name in ("references", "tags"):
        if cells.get(name, "").strip():
            items = _split_cell(cells[name], where.at(name), problems)
            if items is not None:
                raw[name] = items
    variables = {
        column.removeprefix(_CSV_VAR_PREFIX): value
        for column, value in cells.items()
        if column.startswith(_CSV_VAR_PREFIX) and value != ""
    }
    if variables:
        raw["variables"] = variables
    return raw


def _split_cell(cell: str, location: str, problems: list[Problem]) -> list[str] | None:
    """A list cell: ``a | b | c``, or a JSON array of strings when it starts with ``[``."""
    if not cell.strip().startswith("["):
        return [item.strip() for item in cell.split("|") if item.strip()]
    try:
        items = json.loads(cell)
    except json.JSONDecodeError as exc:
        problems.append(Problem(location, f"a cell starting with '[' must be a JSON array "
                                          f"of strings: {exc.msg}"))
        return None
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        problems.append(Problem(location, "a cell starting with '[' must be a JSON array "
                                          "of strings"))
        return None
    return items


_PARSERS: dict[str, Callable[[str, Path], _Parsed]] = {
    ".json": _parse_json,
    ".yaml": _parse_yaml,
    ".yml": _parse_yaml,
    ".jsonl": _parse_jsonl,
    ".csv": _parse_csv,
}
