"""The plugin system: discovery, allow/block lists, API versions, hook contract.

Third-party discovery is shown with real distributions kept under ``tests/fixtures``
and installed with pip into a temporary directory; nothing of fleetbench is mocked.
Plugin objects registered per test go through ``load_plugins(extra_plugins=...)``,
which builds a fresh manager every time, so no test leaks plugins into another.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

import fleetbench
from fleetbench import _plugins, hookspecs
from fleetbench._plugins import (
    ALLOW_ENV,
    API_VERSION_ATTRIBUTE,
    BLOCK_ENV,
    PluginHost,
    PluginInfo,
    load_plugins,
)
from fleetbench.errors import BadRequestError, PluginError
from fleetbench.plugin import (
    PLUGIN_API_VERSION,
    AdapterSpec,
    Evaluator,
    EvaluatorSpec,
    ExecutorSpec,
    ExporterSpec,
    Provider,
    ProviderConfig,
    ProviderSpec,
    Secret,
    SubscriberSpec,
    hookimpl,
)
from fleetbench.records import (
    GenerationSettings,
    ProviderRequest,
    ProviderResponse,
    Usage,
    WorkItem,
)

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE_DIST = "fleetbench-example-plugin"
EXAMPLE_VERSION = "1.2.3"
INCOMPATIBLE_DIST = "fleetbench-incompatible-plugin"
FIXTURE_MODULES = ("fleetbench_example_plugin", "fleetbench_incompatible_plugin")
# Where the fleetbench under test is importable from, for child interpreters.
SOURCE_ROOT = Path(fleetbench.__file__).resolve().parent.parent

BUILTIN_PROVIDERS = {"simulated"}
BUILTIN_ADAPTERS = {"native", "generic", "git"}

_LIST_SCRIPT = """
import dataclasses, json
from fleetbench._plugins import load_plugins
print(json.dumps([dataclasses.asdict(info) for info in load_plugins().infos()]))
"""

# ---------------------------------------------------------------------------- helpers


def _pip_install(project: str, workdir: Path) -> Path:
    """Install a fixture distribution for real, with pip, into ``workdir/site``."""
    # setuptools builds in the source tree (build/, *.egg-info): build from a copy.
    source = workdir / "source" / project
    shutil.copytree(
        FIXTURES / project,
        source,
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    site = workdir / "site"
    env = {
        **os.environ,
        "PIP_CACHE_DIR": str(workdir / "pip-cache"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    proc = subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
            "--no-index", "--target", str(site), str(source),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"pip install {project} failed:\n{proc.stdout}\n{proc.stderr}"
    return site


def _entry_points(site: Path) -> list[importlib.metadata.EntryPoint]:
    """The ``fleetbench`` entry points of the distributions installed in ``site``."""
    return [
        ep
        for dist in importlib.metadata.distributions(path=[str(site)])
        for ep in dist.entry_points
        if ep.group == "fleetbench"
    ]


def _run_python(
    args: Sequence[str],
    *,
    sites: Sequence[Path],
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run this interpreter with ``sites`` (and the fleetbench under test) importable."""
    child_env = {k: v for k, v in os.environ.items() if k not in (ALLOW_ENV, BLOCK_ENV)}
    child_env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), str(SOURCE_ROOT)])
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, *args],
        env=child_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _by_kind_and_name(
    proc: subprocess.CompletedProcess[str],
) -> dict[tuple[str, str], dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert isinstance(listed, list)
    return {(entry["kind"], entry["name"]): entry for entry in listed}


class _Plugin:
    """A plugin object; unlike a SimpleNamespace it is equal only to itself, as pluggy
    requires of two distinct plugins."""

    def __init__(self, api_version: object, hooks: Mapping[str, Callable[..., Any]]) -> None:
        setattr(self, API_VERSION_ATTRIBUTE, api_version)
        for name, function in hooks.items():
            setattr(self, name, hookimpl(function))


def _plugin(api_version: object = PLUGIN_API_VERSION, **hooks: Callable[..., Any]) -> _Plugin:
    """A plugin object implementing ``hooks`` (hook name → function)."""
    return _Plugin(api_version, hooks)


def _nothing() -> list[Any]:
    return []


def _never_built(*args: Any) -> Any:
    """A factory for specs that a test declares but never instantiates."""
    raise AssertionError(f"factory called with {args!r}")


def _load_with(*plugins: tuple[str, object], env: Mapping[str, str] | None = None) -> PluginHost:
    """Load the built-ins plus ``plugins``, ignoring whatever else is installed."""
    return load_plugins(env=env or {}, entry_points=(), extra_plugins=plugins)


def _info(host: PluginHost, kind: str, name: str) -> PluginInfo:
    matches = [i for i in host.infos() if i.kind == kind and i.name == name]
    assert len(matches) == 1, f"{kind} {name!r} listed {len(matches)} times"
    return matches[0]


def _work_item(prompt: str) -> WorkItem:
    return WorkItem(
        key="repo/smoke/echo:parrot/greeting",
        index=0,
        repo_id="repo",
        scenario="smoke",
        provider="echo",
        model="parrot",
        test_id="greeting",
        epoch=0,
        prompt=prompt,
        settings=GenerationSettings(),
        stream=False,
    )


def _request(item: WorkItem, *, stream: bool = False) -> ProviderRequest:
    return ProviderRequest(
        model=item.model,
        prompt=item.prompt,
        settings=item.settings,
        stream=stream,
        test_key=item.key,
    )


class _NullProvider(Provider):
    async def generate(self, request: ProviderRequest) -> ProviderResponse:
        return ProviderResponse(text="")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's shell must not change which plugins these tests see."""
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    monkeypatch.delenv(BLOCK_ENV, raising=False)


@pytest.fixture(scope="session")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pip_install("fleetbench-example-plugin", tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="session")
def incompatible_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pip_install("fleetbench-incompatible-plugin", tmp_path_factory.mktemp("incompat"))


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """Put an install directory on ``sys.path``; forget its modules afterwards."""
    yield lambda site: monkeypatch.syspath_prepend(str(site))
    for module in [m for m in sys.modules if m.split(".")[0] in FIXTURE_MODULES]:
        del sys.modules[module]


@pytest.fixture
def example_eps(
    example_site: Path, importable: Callable[[Path], None]
) -> list[importlib.metadata.EntryPoint]:
    importable(example_site)
    return _entry_points(example_site)


@pytest.fixture
def incompatible_eps(
    incompatible_site: Path, importable: Callable[[Path], None]
) -> list[importlib.metadata.EntryPoint]:
    importable(incompatible_site)
    return _entry_points(incompatible_site)


# ------------------------------------------------- 1. discovery of an installed plugin


def test_fixture_distributions_are_installed_with_their_metadata(
    example_eps: list[importlib.metadata.EntryPoint],
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    example = {(ep.name, ep.value, ep.dist.name, ep.dist.version) for ep in example_eps if ep.dist}
    assert example == {("example", "fleetbench_example_plugin", EXAMPLE_DIST, EXAMPLE_VERSION)}
    assert sorted(ep.name for ep in incompatible_eps) == ["broken", "incompatible", "unversioned"]
    assert {ep.dist.name for ep in incompatible_eps if ep.dist} == {INCOMPATIBLE_DIST}


def test_installed_distribution_is_discovered_next_to_builtins(
    example_site: Path, tmp_path: Path
) -> None:
    proc = _run_python(["-c", _LIST_SCRIPT], sites=[example_site], cwd=tmp_path)
    listed = _by_kind_and_name(proc)

    echo = listed[("provider", "echo")]
    assert echo["distribution"] == EXAMPLE_DIST
    assert echo["version"] == EXAMPLE_VERSION
    assert echo["plugin"] == "example"
    assert echo["description"]
    starts_with = listed[("evaluator", "starts_with")]
    assert (starts_with["distribution"], starts_with["version"]) == (EXAMPLE_DIST, EXAMPLE_VERSION)
    for name in BUILTIN_PROVIDERS:
        assert listed[("provider", name)]["distribution"] == "fleetbench"
    for name in BUILTIN_ADAPTERS:
        assert listed[("repository_adapter", name)]["distribution"] == "fleetbench"


def test_discovery_depends_on_the_installation(example_site: Path, tmp_path: Path) -> None:
    not_installed = _by_kind_and_name(_run_python(["-c", _LIST_SCRIPT], sites=[], cwd=tmp_path))
    assert ("provider", "echo") not in not_installed
    assert ("provider", "simulated") in not_installed

    disabled = _by_kind_and_name(
        _run_python(
            ["-c", _LIST_SCRIPT],
            sites=[example_site],
            cwd=tmp_path,
            env={BLOCK_ENV: EXAMPLE_DIST},
        )
    )
    assert ("provider", "echo") not in disabled
    assert ("evaluator", "starts_with") not in disabled
    assert ("provider", "simulated") in disabled


def test_cli_lists_plugins_as_json(example_site: Path, tmp_path: Path) -> None:
    proc = _run_python(
        ["-m", "fleetbench", "plugins", "--json"], sites=[example_site], cwd=tmp_path
    )
    listed = _by_kind_and_name(proc)

    for entry in listed.values():
        assert {"name", "kind", "version", "distribution", "plugin", "description"} <= set(entry)
    echo = listed[("provider", "echo")]
    assert (echo["version"], echo["distribution"], echo["plugin"]) == (
        EXAMPLE_VERSION,
        EXAMPLE_DIST,
        "example",
    )
    assert listed[("evaluator", "starts_with")]["distribution"] == EXAMPLE_DIST
    assert listed[("provider", "simulated")]["distribution"] == "fleetbench"
    assert {name for kind, name in listed if kind == "repository_adapter"} >= BUILTIN_ADAPTERS


def test_incompatible_distribution_stops_startup_naming_it(
    incompatible_site: Path, tmp_path: Path
) -> None:
    script = _run_python(["-c", _LIST_SCRIPT], sites=[incompatible_site], cwd=tmp_path)
    assert script.returncode != 0
    assert "PluginError" in script.stderr
    assert INCOMPATIBLE_DIST in script.stderr

    cli = _run_python(
        ["-m", "fleetbench", "plugins", "--json"],
        sites=[incompatible_site],
        cwd=tmp_path,
        env={ALLOW_ENV: "incompatible"},
    )
    assert cli.returncode != 0
    assert INCOMPATIBLE_DIST in cli.stderr
    assert "99" in cli.stderr


async def test_discovered_plugin_is_used(
    example_eps: list[importlib.metadata.EntryPoint], example_site: Path
) -> None:
    host = load_plugins(env={}, entry_points=example_eps)
    module = sys.modules["fleetbench_example_plugin"]
    assert Path(module.__file__ or "").is_relative_to(example_site)
    assert _info(host, "provider", "echo") == PluginInfo(
        name="echo",
        kind="provider",
        version=EXAMPLE_VERSION,
        distribution=EXAMPLE_DIST,
        plugin="example",
        description=host.providers["echo"].description,
    )

    item = _work_item("Hello fleet of benches")
    async with httpx.AsyncClient() as http:
        provider = host.providers["echo"].factory(
            ProviderConfig(provider="echo", model="parrot"), http
        )
        assert isinstance(provider, Provider)
        response = await provider.generate(_request(item))
        await provider.aclose()
    assert response.text == "Hello fleet of benches"
    assert response.usage == Usage(input_tokens=4, output_tokens=4)
    assert response.model == "parrot"

    starts_with = host.evaluators["starts_with"]
    passing = starts_with.factory({"prefix": "Hello"})
    assert isinstance(passing, Evaluator)
    verdict = await passing.evaluate(item, response)
    assert (verdict.evaluator, verdict.passed, verdict.score) == ("starts_with", True, 1.0)
    verdict = await starts_with.factory({"prefix": "Goodbye"}).evaluate(item, response)
    assert (verdict.passed, verdict.score) == (False, 0.0)
    assert "Goodbye" in verdict.detail


async def test_discovered_provider_streams_and_reports_errors(
    example_eps: list[importlib.metadata.EntryPoint],
) -> None:
    host = load_plugins(env={}, entry_points=example_eps)
    async with httpx.AsyncClient() as http:
        provider = host.providers["echo"].factory(
            ProviderConfig(provider="echo", model="parrot"), http
        )
        chunks = [c async for c in provider.stream(_request(_work_item("a b c"), stream=True))]
        with pytest.raises(BadRequestError, match="empty") as excinfo:
            await provider.generate(_request(_work_item("   ")))
    assert "".join(c.text for c in chunks) == "a b c"
    assert chunks[-1].usage == Usage(input_tokens=3, output_tokens=3)
    assert provider.classify_error(excinfo.value) is excinfo.value
    assert not excinfo.value.retryable
    with pytest.raises(ValueError, match="prefix"):
        host.evaluators["starts_with"].factory({})
    with pytest.raises(ValueError, match="colour"):
        host.evaluators["starts_with"].factory({"prefix": "x", "colour": "red"})


# ---------------------------------------------------------------- 2. allow / block lists


@pytest.mark.parametrize(
    "allow",
    [
        "example",
        EXAMPLE_DIST,
        " example , something-else ",
        "Fleetbench_Example.Plugin",  # distribution names compare as pip compares them
    ],
)
def test_allow_list_loads_only_the_listed_plugins(
    allow: str,
    example_eps: list[importlib.metadata.EntryPoint],
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    # Loading any incompatible entry point would raise: they must be skipped unimported.
    host = load_plugins(env={ALLOW_ENV: allow}, entry_points=example_eps + incompatible_eps)

    assert "echo" in host.providers
    assert "starts_with" in host.evaluators
    assert "fleetbench_incompatible_plugin" not in sys.modules
    assert set(host.providers.names()) >= BUILTIN_PROVIDERS
    assert set(host.adapters.names()) >= BUILTIN_ADAPTERS


def test_allow_list_naming_nothing_installed_keeps_only_builtins(
    example_eps: list[importlib.metadata.EntryPoint],
) -> None:
    host = load_plugins(env={ALLOW_ENV: "not-installed"}, entry_points=example_eps)

    assert "echo" not in host.providers
    assert {i.distribution for i in host.infos()} == {"fleetbench"}
    assert set(host.providers.names()) >= BUILTIN_PROVIDERS


def test_allow_list_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    example_eps: list[importlib.metadata.EntryPoint],
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    monkeypatch.setenv(ALLOW_ENV, EXAMPLE_DIST)
    host = load_plugins(entry_points=example_eps + incompatible_eps)
    assert "echo" in host.providers


@pytest.mark.parametrize(
    "block",
    [
        "broken,incompatible,unversioned",
        " broken , incompatible , unversioned ",
        INCOMPATIBLE_DIST,
        "FLEETBENCH_INCOMPATIBLE_PLUGIN",
    ],
)
def test_block_list_skips_plugins_by_entry_point_or_distribution(
    block: str,
    example_eps: list[importlib.metadata.EntryPoint],
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    host = load_plugins(env={BLOCK_ENV: block}, entry_points=example_eps + incompatible_eps)

    assert "echo" in host.providers
    assert "fleetbench_incompatible_plugin" not in sys.modules


def test_block_list_removes_a_plugin_by_entry_point_name(
    example_eps: list[importlib.metadata.EntryPoint],
) -> None:
    assert "echo" in load_plugins(env={}, entry_points=example_eps).providers

    host = load_plugins(env={BLOCK_ENV: "example"}, entry_points=example_eps)
    assert "echo" not in host.providers
    assert "starts_with" not in host.evaluators


def test_block_list_wins_over_allow_list(
    example_eps: list[importlib.metadata.EntryPoint],
) -> None:
    env = {ALLOW_ENV: "example", BLOCK_ENV: EXAMPLE_DIST}
    assert "echo" not in load_plugins(env=env, entry_points=example_eps).providers


def test_block_list_disables_a_builtin() -> None:
    host = _load_with(env={BLOCK_ENV: "builtin.simulated"})

    assert "simulated" not in host.providers
    assert set(host.adapters.names()) >= BUILTIN_ADAPTERS
    # The short name is not enough: built-ins are addressed as ``builtin.<module>``.
    assert "simulated" in _load_with(env={BLOCK_ENV: "simulated"}).providers


def test_block_list_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(BLOCK_ENV, "builtin.simulated")
    assert "simulated" not in load_plugins(entry_points=()).providers


# ------------------------------------------------------- 3. incompatible or broken plugins


def _load_one(name: str, eps: list[importlib.metadata.EntryPoint]) -> PluginError:
    with pytest.raises(PluginError) as excinfo:
        load_plugins(env={ALLOW_ENV: name}, entry_points=eps)
    return excinfo.value


def test_incompatible_api_version_names_distribution_and_both_versions(
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    message = str(_load_one("incompatible", incompatible_eps))

    assert INCOMPATIBLE_DIST in message
    assert "'incompatible'" in message
    assert re.search(r"\b99\b", message)
    assert re.search(rf"\bAPI {PLUGIN_API_VERSION}\b", message)


def test_missing_api_version_names_distribution(
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    message = str(_load_one("unversioned", incompatible_eps))

    assert INCOMPATIBLE_DIST in message
    assert "'unversioned'" in message
    assert API_VERSION_ATTRIBUTE in message


def test_failing_import_names_entry_point_and_distribution(
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    error = _load_one("broken", incompatible_eps)

    assert "'broken'" in str(error)
    assert INCOMPATIBLE_DIST in str(error)
    assert "vendor-sdk" in str(error)
    assert isinstance(error.__cause__, ImportError)


def test_broken_distribution_is_not_skipped_silently(
    example_eps: list[importlib.metadata.EntryPoint],
    incompatible_eps: list[importlib.metadata.EntryPoint],
) -> None:
    with pytest.raises(PluginError, match=INCOMPATIBLE_DIST):
        load_plugins(env={}, entry_points=example_eps + incompatible_eps)


@pytest.mark.parametrize("declared", [PLUGIN_API_VERSION + 1, str(PLUGIN_API_VERSION), None])
def test_extra_plugin_api_version_is_checked(declared: object) -> None:
    plugin = _plugin(declared, fleetbench_register_providers=_nothing)
    with pytest.raises(PluginError, match="'odd-version'"):
        _load_with(("odd-version", plugin))


# ------------------------------------------------------------- 4. misbehaving plugins


def test_duplicate_names_within_a_kind_name_both_plugins() -> None:
    def twin() -> list[ProviderSpec]:
        return [ProviderSpec(name="twin", factory=_NullProvider)]

    first = ("first-plugin", _plugin(fleetbench_register_providers=twin))
    second = ("second-plugin", _plugin(fleetbench_register_providers=twin))
    with pytest.raises(PluginError) as excinfo:
        _load_with(first, second)

    message = str(excinfo.value)
    assert "'twin'" in message
    assert "'first-plugin'" in message
    assert "'second-plugin'" in message


def test_a_third_party_cannot_shadow_a_builtin() -> None:
    plugin = _plugin(
        fleetbench_register_providers=lambda: [
            ProviderSpec(name="simulated", factory=_NullProvider)
        ]
    )
    with pytest.raises(PluginError) as excinfo:
        _load_with(("shadow", plugin))
    assert "'builtin.simulated'" in str(excinfo.value)
    assert "'shadow'" in str(excinfo.value)


def test_the_same_name_in_different_kinds_is_fine() -> None:
    plugin = _plugin(
        fleetbench_register_providers=lambda: [ProviderSpec(name="same", factory=_NullProvider)],
        fleetbench_register_exporters=lambda: [ExporterSpec(name="same", factory=_never_built)],
    )
    host = _load_with(("two-kinds", plugin))
    assert "same" in host.providers
    assert "same" in host.exporters


def test_unknown_hook_is_rejected_naming_the_plugin() -> None:
    plugin = _plugin(fleetbench_register_providerz=_nothing)
    with pytest.raises(PluginError) as excinfo:
        _load_with(("typo", plugin))
    assert "'typo'" in str(excinfo.value)
    assert "fleetbench_register_providerz" in str(excinfo.value)


def test_hook_with_arguments_the_spec_lacks_is_rejected_naming_the_plugin() -> None:
    def register(config: object) -> list[ProviderSpec]:
        return []

    with pytest.raises(PluginError) as excinfo:
        _load_with(("greedy", _plugin(fleetbench_register_providers=register)))
    assert "'greedy'" in str(excinfo.value)
    assert "config" in str(excinfo.value)


def test_raising_hook_names_the_plugin_and_the_hook() -> None:
    def register() -> list[EvaluatorSpec]:
        raise RuntimeError("the database is down")

    with pytest.raises(PluginError) as excinfo:
        _load_with(("flaky", _plugin(fleetbench_register_evaluators=register)))
    message = str(excinfo.value)
    assert "'flaky'" in message
    assert "fleetbench_register_evaluators" in message
    assert "the database is down" in message
    assert isinstance(excinfo.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ([EvaluatorSpec(name="misfiled", factory=_never_built)], "EvaluatorSpec"),
        (ProviderSpec(name="lonely", factory=_NullProvider), "not iterable"),
        ([ProviderSpec(name="", factory=_NullProvider)], "without a name"),
    ],
    ids=["wrong-kind", "not-a-list", "no-name"],
)
def test_malformed_declarations_are_rejected_naming_the_plugin(
    returned: object, expected: str
) -> None:
    plugin = _plugin(fleetbench_register_providers=lambda: returned)
    with pytest.raises(PluginError, match=expected) as excinfo:
        _load_with(("sloppy", plugin))
    assert "'sloppy'" in str(excinfo.value)


def test_every_load_builds_a_fresh_manager() -> None:
    plugin = _plugin(
        fleetbench_register_providers=lambda: [ProviderSpec(name="once", factory=_NullProvider)]
    )
    assert "once" in _load_with(("once", plugin)).providers
    assert "once" not in _load_with().providers
    # Registering the same plugin again is not a duplicate: no state was kept.
    assert "once" in _load_with(("once", plugin)).providers


# ---------------------------------------------------------------------------- 5. built-ins


def test_builtins_are_registered_through_the_hooks() -> None:
    host = load_plugins(env={})

    assert set(host.providers.names()) >= BUILTIN_PROVIDERS
    assert set(host.adapters.names()) >= BUILTIN_ADAPTERS
    for kind, names in (("provider", BUILTIN_PROVIDERS), ("repository_adapter", BUILTIN_ADAPTERS)):
        for name in names:
            info = _info(host, kind, name)
            assert info.distribution == "fleetbench"
            assert info.version == fleetbench.__version__
            assert info.plugin.startswith("builtin.")
    assert _info(host, "provider", "simulated").plugin == "builtin.simulated"


@pytest.mark.parametrize("module_name", _plugins.BUILTIN_PLUGINS)
def test_builtin_modules_are_ordinary_plugins(module_name: str) -> None:
    module = importlib.import_module(module_name)
    implemented = [
        name
        for name, member in inspect.getmembers(module, inspect.isfunction)
        if getattr(member, "fleetbench_impl", None) is not None
    ]
    assert implemented
    assert set(implemented) <= set(_hook_names())


def test_infos_are_grouped_by_kind_then_sorted_by_name() -> None:
    plugin = _plugin(
        fleetbench_register_exporters=lambda: [
            ExporterSpec(name=n, factory=_never_built) for n in ("zz", "aa")
        ],
        fleetbench_register_providers=lambda: [ProviderSpec(name="mm", factory=_NullProvider)],
    )
    infos = _load_with(("order", plugin)).infos()
    kinds = [i.kind for i in infos]
    assert kinds.index("provider") < kinds.index("exporter") < kinds.index("repository_adapter")
    exporters = [i.name for i in infos if i.kind == "exporter"]
    assert exporters == sorted(exporters)
    assert exporters.index("aa") < exporters.index("zz")


# ------------------------------------------------------------------ 6. the hook contract


def _hook_names() -> list[str]:
    return sorted(
        name
        for name, member in inspect.getmembers(hookspecs, inspect.isfunction)
        if getattr(member, "fleetbench_spec", None) is not None
    )


def test_hookspecs_are_prefixed_and_all_collected() -> None:
    hooks = _hook_names()
    assert len(hooks) >= 6
    defined_here = [
        name
        for name, member in inspect.getmembers(hookspecs, inspect.isfunction)
        if member.__module__ == hookspecs.__name__
    ]
    assert sorted(defined_here) == hooks, "a function in hookspecs is not marked @hookspec"
    assert all(name.startswith("fleetbench_") for name in hooks)
    assert hooks == sorted(name for name, _ in _plugins._HOOKS)


@pytest.mark.parametrize("hook", _hook_names())
def test_hook_is_documented_and_tested(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert doc.strip(), f"{hook} has no docstring"
    assert doc.splitlines()[0].rstrip().endswith("."), f"{hook}: the first line is a sentence"
    assert callable(globals().get(f"test_hook_{hook}")), f"write test_hook_{hook}"


def _registered(hook: str, spec: object) -> tuple[PluginHost, PluginInfo]:
    host = _load_with(("hook-test", _plugin(**{hook: lambda: [spec]})))
    matches = [i for i in host.infos() if i.name == getattr(spec, "name", None)]
    assert len(matches) == 1
    assert (matches[0].plugin, matches[0].distribution) == ("hook-test", "hook-test")
    return host, matches[0]


def test_hook_fleetbench_register_providers() -> None:
    spec = ProviderSpec(name="hooked-provider", factory=_NullProvider, description="p")
    host, info = _registered("fleetbench_register_providers", spec)
    assert host.providers["hooked-provider"] is spec
    assert (info.kind, info.description) == ("provider", "p")


def test_hook_fleetbench_register_evaluators() -> None:
    spec = EvaluatorSpec(name="hooked-evaluator", factory=_never_built, description="e")
    host, info = _registered("fleetbench_register_evaluators", spec)
    assert host.evaluators["hooked-evaluator"] is spec
    assert (info.kind, info.description) == ("evaluator", "e")


def test_hook_fleetbench_register_exporters() -> None:
    spec = ExporterSpec(name="hooked-exporter", factory=_never_built, files=("out.txt",))
    host, info = _registered("fleetbench_register_exporters", spec)
    assert host.exporters["hooked-exporter"] is spec
    assert info.kind == "exporter"


def test_hook_fleetbench_register_repository_adapters() -> None:
    spec = AdapterSpec(name="hooked-adapter", factory=_never_built)
    host, info = _registered("fleetbench_register_repository_adapters", spec)
    assert host.adapters["hooked-adapter"] is spec
    assert info.kind == "repository_adapter"


def test_hook_fleetbench_register_executors() -> None:
    spec = ExecutorSpec(name="hooked-executor", factory=_never_built)
    host, info = _registered("fleetbench_register_executors", spec)
    assert host.executors["hooked-executor"] is spec
    assert info.kind == "executor"


def test_hook_fleetbench_register_subscribers() -> None:
    spec = SubscriberSpec(name="hooked-subscriber", factory=_never_built)
    host, info = _registered("fleetbench_register_subscribers", spec)
    assert host.subscribers["hooked-subscriber"] is spec
    assert info.kind == "subscriber"


# ------------------------------------------------------------------------- 7. secrets


def test_secret_never_shows_itself() -> None:
    key = "sk-live-0123456789abcdef"
    secret = Secret(key)

    renderings = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        "%s %r" % (secret, secret),  # noqa: UP031 - %-formatting is what loggers use
        "{}".format(secret),  # noqa: UP032 - str.format is a separate code path
        repr([secret]),
        repr({"api_key": secret}),
    ]
    for rendered in renderings:
        assert key not in rendered
        assert "***" in rendered
    assert secret.reveal() == key
    assert secret == Secret(key)
    assert secret != Secret("sk-other")


def test_provider_config_repr_hides_the_key() -> None:
    key = "sk-live-0123456789abcdef"
    config = ProviderConfig(provider="echo", model="parrot", api_key=Secret(key))

    assert key not in repr(config)
    assert key not in str(config)
    assert key not in f"{config}"
    assert key not in repr(dataclasses.replace(config, model="other"))
    assert "api_key=Secret('***')" in repr(config)
    assert config.api_key is not None
    assert config.api_key.reveal() == key
