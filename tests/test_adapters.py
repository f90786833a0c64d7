"""The built-in repository adapters on real folders and real git repositories."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pluggy
import pytest

from fleetbench import hookspecs
from fleetbench._builtins import adapters
from fleetbench._builtins.adapters import (
    GenericAdapter,
    GitAdapter,
    NativeAdapter,
    RepositoryError,
)
from fleetbench._datasets import load_dataset
from fleetbench.plugin import PROJECT_NAME, RepositoryAdapter, RepositoryContext


def _dataset(name: str, description: str = "") -> str:
    return json.dumps({"name": name, "description": description,
                       "test_cases": [{"id": "t", "prompt": "p"}]})


def _write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _ctx(path: Path, *, cache: Path | None = None, git_url: str | None = None,
         ref: str | None = None, repo_id: str = "repo") -> RepositoryContext:
    return RepositoryContext(repo_id=repo_id, path=path, git_url=git_url, ref=ref,
                             metadata={}, cache_dir=cache or path / ".cache")


# ------------------------------------------------------------------------ registration


def test_the_hook_declares_native_generic_and_git() -> None:
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(adapters, name="builtin.adapters")
    pm.check_pending()

    (specs,) = pm.hook.fleetbench_register_repository_adapters()
    assert [spec.name for spec in specs] == ["native", "generic", "git"]
    assert adapters.FLEETBENCH_PLUGIN_API_VERSION == 1


def test_each_adapter_satisfies_the_protocol(tmp_path: Path) -> None:
    for spec in adapters.fleetbench_register_repository_adapters():
        assert isinstance(spec.factory(_ctx(tmp_path)), RepositoryAdapter), spec.name


# ------------------------------------------------------------------------------ native


@pytest.fixture
def native_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    _write(root, "datasets/top.json", _dataset("top"))
    _write(root, "datasets/both.json", _dataset("both", "datasets/"))
    _write(root, "datasets/data/both.json", _dataset("both", "datasets/data/"))
    _write(root, "datasets/data/coding-tasks.json", _dataset("coding-tasks"))
    _write(root, "datasets/examples/quick-start.json", _dataset("quick-start"))
    _write(root, "datasets/reasoning.yaml", "name: reasoning\ntest_cases: [{id: a, prompt: p}]")
    _write(root, "datasets/short.yml", "name: short\ntest_cases: [{id: a, prompt: p}]")
    _write(root, "datasets/lines.jsonl", '{"id": "a", "prompt": "p"}\n')
    _write(root, "datasets/grid.csv", "id,prompt\na,p\n")
    _write(root, "datasets/pref.json", _dataset("pref", "json"))
    _write(root, "datasets/pref.yaml",
           "name: pref\ndescription: yaml\ntest_cases: [{id: a, prompt: p}]")
    _write(root, "datasets/README.md", "not a dataset")
    _write(root, "datasets/.hidden.json", _dataset("hidden"))
    _write(root, "datasets/nested/deep.json", _dataset("deep"))
    _write(root, "tests/fixtures/extra.json", _dataset("extra"))
    return root


@pytest.mark.parametrize(
    ("name", "relative"),
    [
        ("top", "datasets/top.json"),
        ("coding-tasks", "datasets/data/coding-tasks.json"),
        ("quick-start", "datasets/examples/quick-start.json"),
        ("reasoning", "datasets/reasoning.yaml"),
        ("short", "datasets/short.yml"),
        ("lines", "datasets/lines.jsonl"),
        ("grid", "datasets/grid.csv"),
        ("top.json", "datasets/top.json"),
        ("coding-tasks.json", "datasets/data/coding-tasks.json"),
        ("pref.yaml", "datasets/pref.yaml"),
        ("nested/deep", "datasets/nested/deep.json"),
        ("tests/fixtures/extra.json", "tests/fixtures/extra.json"),
        ("./datasets/top.json", "datasets/top.json"),
    ],
)
def test_native_locates_names_and_relative_paths(
    native_repo: Path, name: str, relative: str
) -> None:
    found = NativeAdapter(_ctx(native_repo)).locate_dataset(name)
    assert found.resolve() == (native_repo / relative).resolve()
    assert load_dataset(found).test_cases


def test_native_prefers_datasets_over_data_and_json_over_yaml(native_repo: Path) -> None:
    adapter = NativeAdapter(_ctx(native_repo))
    assert load_dataset(adapter.locate_dataset("both")).description == "datasets/"
    assert load_dataset(adapter.locate_dataset("pref")).description == "json"


def test_native_discovers_every_dataset_stem_once_sorted(native_repo: Path) -> None:
    assert NativeAdapter(_ctx(native_repo)).discover_datasets() == [
        "both", "coding-tasks", "grid", "lines", "pref", "quick-start", "reasoning", "short",
        "top",
    ]


def test_a_missing_dataset_names_every_place_searched(native_repo: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        NativeAdapter(_ctx(native_repo)).locate_dataset("codng")
    message = str(caught.value)
    assert message.startswith("dataset 'codng' not found in repository 'repo' (native adapter)")
    for folder in ("datasets", "datasets/data", "datasets/examples"):
        assert f"{native_repo / folder / 'codng'}.{{json,yaml,yml,jsonl,csv}}" in message


def test_a_missing_file_name_lists_each_candidate_path(native_repo: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        NativeAdapter(_ctx(native_repo)).locate_dataset("gone.yaml")
    assert str(caught.value).endswith(
        "searched: " + ", ".join(str(native_repo / p) for p in (
            "datasets/gone.yaml", "datasets/data/gone.yaml", "datasets/examples/gone.yaml",
            "gone.yaml",
        ))
    )


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("../outside", "must not contain '..'"),
        ("datasets/../../outside.json", "must not contain '..'"),
        ("..\\outside.json", "must not contain '..'"),
        ("/etc/passwd", "is an absolute path"),
        ("C:\\data\\x.json", "is an absolute path"),
        ("  ", "the dataset name is empty"),
    ],
)
@pytest.mark.parametrize("adapter", [NativeAdapter, GenericAdapter])
def test_names_that_leave_the_repository_are_rejected(
    native_repo: Path, adapter: type[NativeAdapter | GenericAdapter], name: str, phrase: str
) -> None:
    _write(native_repo.parent, "outside.json", _dataset("outside"))
    with pytest.raises(RepositoryError, match=phrase):
        adapter(_ctx(native_repo)).locate_dataset(name)


def test_a_symlink_pointing_outside_the_repository_is_rejected(native_repo: Path) -> None:
    secret = _write(native_repo.parent, "secret.json", _dataset("secret"))
    (native_repo / "datasets" / "link.json").symlink_to(secret)
    with pytest.raises(RepositoryError, match="outside the repository"):
        NativeAdapter(_ctx(native_repo)).locate_dataset("link")


def test_a_repository_folder_that_does_not_exist_is_reported(tmp_path: Path) -> None:
    adapter = NativeAdapter(_ctx(tmp_path / "nowhere"))
    with pytest.raises(RepositoryError, match="nowhere is not a directory"):
        adapter.discover_datasets()
    with pytest.raises(RepositoryError, match="nowhere is not a directory"):
        adapter.locate_dataset("x")


# ----------------------------------------------------------------------------- generic


@pytest.fixture
def generic_repo(tmp_path: Path) -> Path:
    root = tmp_path / "generic"
    _write(root, "rootset.json", _dataset("rootset"))
    _write(root, "package.json", json.dumps({"name": "web", "version": "1.0.0"}))
    _write(root, "data/shared.yaml", "name: shared-data\ntest_cases: [{id: a, prompt: p}]")
    _write(root, "datasets/shared.json", _dataset("shared-datasets"))
    _write(root, "benchmarks/bench.csv", "id,prompt\na,p\n")
    _write(root, "benchmarks/nested/hidden.json", _dataset("hidden"))
    return root


def test_generic_searches_root_data_datasets_benchmarks_in_order(generic_repo: Path) -> None:
    adapter = GenericAdapter(_ctx(generic_repo))
    assert adapter.locate_dataset("rootset") == generic_repo / "rootset.json"
    assert load_dataset(adapter.locate_dataset("shared")).name == "shared-data"
    assert adapter.locate_dataset("bench") == generic_repo / "benchmarks" / "bench.csv"
    assert adapter.locate_dataset("shared.json") == generic_repo / "datasets" / "shared.json"


def test_generic_is_not_recursive(generic_repo: Path) -> None:
    with pytest.raises(FileNotFoundError, match="generic adapter"):
        GenericAdapter(_ctx(generic_repo)).locate_dataset("hidden")


def test_generic_discovers_only_files_that_are_valid_datasets(generic_repo: Path) -> None:
    assert GenericAdapter(_ctx(generic_repo)).discover_datasets() == [
        "bench", "rootset", "shared",
    ]


# --------------------------------------------------------------------------------- git


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=fleetbench tests", "-c", "user.email=tests@example.invalid",
         "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false",
         "-c", "tag.gpgsign=false", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )
    return result.stdout.strip()


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the tests nor the adapter see the machine's git configuration."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


class Origin:
    """A local upstream repository: tag ``v1`` on the first commit, ``main`` ahead."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        _git(root, "init", "--quiet")
        self.commit("datasets/coding.json", _dataset("coding", "v1"), "v1")
        _git(root, "tag", "-a", "v1", "-m", "release 1")
        self.v1 = _git(root, "rev-parse", "HEAD")
        self.commit("datasets/coding.json", _dataset("coding", "v2"), "v2")
        _git(root, "checkout", "--quiet", "-b", "feature")
        self.commit("sub/datasets/data/extra.json", _dataset("extra", "feature"), "feature")
        _git(root, "checkout", "--quiet", "main")

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def commit(self, relative: str, text: str, message: str) -> str:
        _write(self.root, relative, text)
        _git(self.root, "add", "--all")
        _git(self.root, "commit", "--quiet", "-m", message)
        return _git(self.root, "rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    return Origin(tmp_path / "origin")


def _git_adapter(tmp_path: Path, origin: Origin, ref: str | None = None,
                 path: str = "") -> GitAdapter:
    return GitAdapter(_ctx(Path(path), cache=tmp_path / "cache", git_url=origin.url, ref=ref,
                           repo_id="svc/api gateway"))


def _description(adapter: GitAdapter, name: str = "coding") -> str | None:
    return load_dataset(adapter.locate_dataset(name)).description


def test_git_clones_the_remote_head_by_default(tmp_path: Path, origin: Origin) -> None:
    adapter = _git_adapter(tmp_path, origin)
    assert _description(adapter) == "v2"
    assert adapter.discover_datasets() == ["coding"]
    checkout = adapter.checkout_dir
    assert checkout.parent == tmp_path / "cache" / "git"
    assert checkout.name.startswith("svc_api_gateway-")
    assert len(checkout.name.removeprefix("svc_api_gateway-")) == 12
    assert adapter.locate_dataset("coding").is_relative_to(checkout)


@pytest.mark.parametrize("ref", ["v1", "full-sha", "short-sha"])
def test_git_checks_out_a_tag_or_commit(tmp_path: Path, origin: Origin, ref: str) -> None:
    resolved = {"v1": "v1", "full-sha": origin.v1, "short-sha": origin.v1[:10]}[ref]
    adapter = _git_adapter(tmp_path, origin, ref=resolved)
    assert _description(adapter) == "v1"
    assert _git(adapter.checkout_dir, "rev-parse", "HEAD") == origin.v1


def test_git_checks_out_a_branch_and_honours_a_subfolder(tmp_path: Path, origin: Origin) -> None:
    adapter = _git_adapter(tmp_path, origin, ref="feature", path="sub")
    assert _description(adapter, "extra") == "feature"
    assert adapter.discover_datasets() == ["extra"]


def test_git_reuses_and_updates_the_cached_checkout(tmp_path: Path, origin: Origin) -> None:
    first = _git_adapter(tmp_path, origin)
    assert _description(first) == "v2"
    marker = first.checkout_dir / ".git" / "fleetbench-test-marker"
    marker.write_text("kept")
    _write(first.checkout_dir, "datasets/stray.json", _dataset("stray"))

    origin.commit("datasets/coding.json", _dataset("coding", "v3"), "v3")
    second = _git_adapter(tmp_path, origin)

    assert _description(second) == "v3"
    assert second.checkout_dir == first.checkout_dir
    assert marker.read_text() == "kept"  # the same clone, fetched rather than re-cloned
    assert second.discover_datasets() == ["coding"]  # stray files are cleaned away
    back = _git_adapter(tmp_path, origin, ref="v1")
    assert _description(back) == "v1"
    visible = [p.name for p in (tmp_path / "cache" / "git").iterdir() if p.name[0] != "."]
    assert visible == [first.checkout_dir.name]


def test_git_checkout_happens_once_per_adapter(tmp_path: Path, origin: Origin) -> None:
    adapter = _git_adapter(tmp_path, origin)
    assert _description(adapter) == "v2"
    origin.commit("datasets/coding.json", _dataset("coding", "v3"), "v3")
    assert _description(adapter) == "v2"  # one run sees one consistent checkout


def test_git_reports_an_unknown_ref_and_leaves_no_partial_checkout(
    tmp_path: Path, origin: Origin
) -> None:
    adapter = _git_adapter(tmp_path, origin, ref="no-such-tag")
    with pytest.raises(RepositoryError) as caught:
        adapter.locate_dataset("coding")
    message = str(caught.value)
    assert message.startswith(f"repository 'svc/api gateway': fetch of ref 'no-such-tag' from "
                              f"{origin.url} failed: ")
    assert "no-such-tag" in message.partition("failed: ")[2]  # git's own explanation
    assert not adapter.checkout_dir.exists()
    assert not [p for p in adapter.checkout_dir.parent.iterdir() if ".tmp-" in p.name]


def test_git_clone_failure_names_the_url_without_its_credentials(tmp_path: Path) -> None:
    url = "http://deploy:s3cr3t-t0ken@127.0.0.1:9/nothing.git"
    adapter = GitAdapter(_ctx(Path(), cache=tmp_path / "cache", git_url=url))
    with pytest.raises(RepositoryError) as caught:
        adapter.discover_datasets()
    message = str(caught.value)
    assert "http://***@127.0.0.1:9/nothing.git failed:" in message
    assert "s3cr3t" not in message
    assert "deploy" not in message


@pytest.mark.parametrize(
    ("path", "git_url", "ref", "phrase"),
    [
        ("/abs/path", "file:///x", None, "must be relative"),
        ("../up", "file:///x", None, "must be relative without '..'"),
        ("", None, None, "the git adapter needs git_url"),
        ("", "--upload-pack=touch /tmp/pwned", None, "must not start with '-'"),
        ("", "file:///x", "--orphan", "invalid ref '--orphan'"),
        ("", "file:///x", "main:refs/heads/x", "invalid ref"),
    ],
)
def test_git_rejects_unsafe_settings_before_running_git(
    tmp_path: Path, path: str, git_url: str | None, ref: str | None, phrase: str
) -> None:
    adapter = GitAdapter(_ctx(Path(path), cache=tmp_path / "cache", git_url=git_url, ref=ref))
    with pytest.raises(RepositoryError, match=phrase):
        adapter.locate_dataset("coding")
    assert not (tmp_path / "cache" / "git").exists()
