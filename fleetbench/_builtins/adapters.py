"""The built-in repository adapters ``native``, ``generic`` and ``git``.

An adapter maps a dataset *name* from a manifest onto a file inside one repository;
loading the file is the dataset loader's job. All three refuse names that would leave
the repository (``..``, absolute paths, symlinks pointing outside), and report a name
they cannot find together with every place they searched.

- ``native``: test-bench's layout, ``datasets/``, ``datasets/data/`` and
  ``datasets/examples/`` (test-bench's own loader forgot ``datasets/data``).
- ``generic``: the repository root, ``data/``, ``datasets/`` and ``benchmarks/``.
- ``git``: clones ``git_url`` at ``ref`` into the cache, then behaves like ``native``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlsplit

from fleetbench._datasets import DATASET_SUFFIXES, load_dataset
from fleetbench.errors import DatasetError
from fleetbench.plugin import PLUGIN_API_VERSION, AdapterSpec, RepositoryContext, hookimpl

__all__ = [
    "GenericAdapter",
    "GitAdapter",
    "NativeAdapter",
    "RepositoryError",
    "fleetbench_register_repository_adapters",
]

FLEETBENCH_PLUGIN_API_VERSION = PLUGIN_API_VERSION

GIT_TIMEOUT_S = 600.0
"""How long one git command may take before the checkout is given up."""

NATIVE_FOLDERS = ("datasets", "datasets/data", "datasets/examples")
GENERIC_FOLDERS = ("", "data", "datasets", "benchmarks")


class RepositoryError(FileNotFoundError):
    """A dataset name or a repository cannot be used: the name escapes the repository,
    the folder is missing, or a git checkout failed.

    A :class:`FileNotFoundError`, so callers handling "dataset not found" (the adapter
    protocol's error) report these with the same care.
    """


@hookimpl
def fleetbench_register_repository_adapters() -> list[AdapterSpec]:
    """Declare ``native``, ``generic`` and ``git``."""
    return [
        AdapterSpec("native", NativeAdapter,
                    "test-bench layout: datasets/, datasets/data/, datasets/examples/"),
        AdapterSpec("generic", GenericAdapter,
                    "any layout: the root, data/, datasets/, benchmarks/"),
        AdapterSpec("git", GitAdapter,
                    "clones git_url at ref into the cache, then the native layout"),
    ]


# ------------------------------------------------------------------- file layouts


def _checked_name(name: str, repo_id: str) -> PurePosixPath:
    """``name`` as a relative path, or a :class:`RepositoryError` if it could escape."""
    if not name.strip():
        raise RepositoryError(f"repository {repo_id!r}: the dataset name is empty")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise RepositoryError(f"repository {repo_id!r}: dataset {name!r} is an absolute "
                              "path; name a dataset or a path inside the repository")
    if ".." in posix.parts or ".." in windows.parts:
        raise RepositoryError(f"repository {repo_id!r}: dataset {name!r} must not contain "
                              "'..' (it would leave the repository)")
    return posix


def _has_dataset_suffix(name: PurePosixPath) -> bool:
    return name.suffix.lower() in DATASET_SUFFIXES


class _Layout:
    """Finds dataset files in a fixed list of folders under one root.

    A name without a known suffix is tried with each suffix of
    :data:`~fleetbench._datasets.DATASET_SUFFIXES` in order, folder by folder; a name
    with one is used as is. ``path_names`` also tries a suffixed name as a path
    relative to the root (``native``: ``tests/data/x.json``).
    """

    def __init__(self, ctx: RepositoryContext, kind: str, folders: Sequence[str],
                 *, path_names: bool) -> None:
        self.root = ctx.path
        self.repo_id = ctx.repo_id
        self.kind = kind
        self.folders = tuple(folders)
        self.path_names = path_names

    def locate(self, name: str) -> Path:
        relative = _checked_name(name, self.repo_id)
        self._require_root()
        for candidate in self._candidates(relative):
            if candidate.is_file():
                return self._inside_root(candidate, name)
        raise RepositoryError(
            f"dataset {name!r} not found in repository {self.repo_id!r} ({self.kind} "
            f"adapter); searched: {', '.join(self._searched(relative))}"
        )

    def stems(self) -> list[str]:
        """The sorted, unique stems of the dataset files in the folders."""
        self._require_root()
        stems: set[str] = set()
        for folder in self._folders():
            if folder.is_dir():
                stems.update(
                    entry.stem for entry in folder.iterdir()
                    if entry.is_file() and not entry.name.startswith(".")
                    and entry.suffix.lower() in DATASET_SUFFIXES
                )
        return sorted(stems)

    def _folders(self) -> list[Path]:
        return [self.root / folder if folder else self.root for folder in self.folders]

    def _candidates(self, name: PurePosixPath) -> Iterator[Path]:
        for folder in self._folders():
            if _has_dataset_suffix(name):
                yield folder / name
            else:
                for suffix in DATASET_SUFFIXES:
                    yield folder / f"{name}{suffix}"
        if self.path_names and _has_dataset_suffix(name):
            yield self.root / name

    def _searched(self, name: PurePosixPath) -> list[str]:
        if _has_dataset_suffix(name):
            return [str(candidate) for candidate in self._candidates(name)]
        suffixes = ",".join(suffix.lstrip(".") for suffix in DATASET_SUFFIXES)
        return [f"{folder / name}.{{{suffixes}}}" for folder in self._folders()]

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise RepositoryError(
                f"repository {self.repo_id!r}: {self.root} is not a directory"
            )

    def _inside_root(self, candidate: Path, name: str) -> Path:
        if not candidate.resolve().is_relative_to(self.root.resolve()):
            raise RepositoryError(f"repository {self.repo_id!r}: dataset {name!r} resolves "
                                  f"to {candidate.resolve()}, outside the repository")
        return candidate


class NativeAdapter:
    """test-bench's layout: ``datasets/``, ``datasets/data/``, ``datasets/examples/``.

    A name may also be a path relative to the repository root (``tests/x.yaml``).
    """

    def __init__(self, ctx: RepositoryContext) -> None:
        self._layout = _Layout(ctx, "native", NATIVE_FOLDERS, path_names=True)

    def locate_dataset(self, name: str) -> Path:
        return self._layout.locate(name)

    def discover_datasets(self) -> Sequence[str]:
        """Every dataset file's stem; files are not opened (the folders are dedicated)."""
        return self._layout.stems()


class GenericAdapter:
    """Any layout: the root, ``data/``, ``datasets/`` and ``benchmarks/``, not recursive."""

    def __init__(self, ctx: RepositoryContext) -> None:
        self._layout = _Layout(ctx, "generic", GENERIC_FOLDERS, path_names=False)

    def locate_dataset(self, name: str) -> Path:
        return self._layout.locate(name)

    def discover_datasets(self) -> Sequence[str]:
        """The names whose file loads as a valid dataset.

        The root of an arbitrary repository holds other JSON and YAML files
        (``package.json``, CI configs), so each candidate is loaded and kept only if valid.
        """
        return [name for name in self._layout.stems() if self._is_dataset(name)]

    def _is_dataset(self, name: str) -> bool:
        try:
            load_dataset(self._layout.locate(name))
        except (DatasetError, RepositoryError):
            return False
        return True


# --------------------------------------------------------------------------- git


class GitAdapter:
    """Clones ``git_url`` at ``ref`` into ``cache_dir/git/``, then acts as ``native``.

    The checkout happens on first use and is reused by later runs: an existing cache
    entry is fetched and switched to ``ref`` (default: the remote's HEAD). ``path``,
    when set, is a folder *inside the checkout*, so it must be relative.
    """

    def __init__(self, ctx: RepositoryContext) -> None:
        self._ctx = ctx
        self._native: NativeAdapter | None = None

    @property
    def checkout_dir(self) -> Path:
        """``cache_dir/git/<repo id>-<hash of git_url>``."""
        url = self._ctx.git_url or ""
        safe_id = re.sub(r"[^A-Za-z0-9._-]+", "_", self._ctx.repo_id).strip("._")[:48]
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        return self._ctx.cache_dir / "git" / f"{safe_id or 'repo'}-{digest}"

    def locate_dataset(self, name: str) -> Path:
        return self._checkout().locate_dataset(name)

    def discover_datasets(self) -> Sequence[str]:
        return self._checkout().discover_datasets()

    def _checkout(self) -> NativeAdapter:
        if self._native is None:
            url = _checked_url(self._ctx)
            subfolder = _checked_subfolder(self._ctx)
            _sync_checkout(url, self._ctx.ref, self.checkout_dir, self._ctx.repo_id)
            self._native = NativeAdapter(replace(self._ctx, path=self.checkout_dir / subfolder))
        return self._native


def _checked_url(ctx: RepositoryContext) -> str:
    url = (ctx.git_url or "").strip()
    if not url:
        raise RepositoryError(f"repository {ctx.repo_id!r}: the git adapter needs git_url")
    if url.startswith("-"):
        raise RepositoryError(f"repository {ctx.repo_id!r}: git_url must not start with '-'")
    if ctx.ref is not None and not re.fullmatch(r"[^\s:\-][^\s:]*", ctx.ref):
        raise RepositoryError(f"repository {ctx.repo_id!r}: invalid ref {ctx.ref!r} (a "
                              "branch, tag or commit; no spaces, no ':', no leading '-')")
    return url


def _checked_subfolder(ctx: RepositoryContext) -> PurePosixPath:
    """The manifest's ``path`` as a folder inside the checkout ('' or '.' is the root)."""
    subfolder = PurePosixPath(ctx.path.as_posix())
    if ctx.path.is_absolute() or ".." in subfolder.parts:
        raise RepositoryError(
            f"repository {ctx.repo_id!r}: for the git adapter, path is a folder inside the "
            f"checkout and must be relative without '..', got {str(ctx.path)!r}"
        )
    return subfolder


def _sync_checkout(url: str, ref: str | None, dest: Path, repo_id: str) -> None:
    """Make ``dest`` a checkout of ``url`` at ``ref``, cloning or updating as needed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.parent / f".{dest.name}.lock"):
        git = _Git(url, repo_id)
        if (dest / ".git").is_dir():
            git.fetch_and_checkout(dest, ref)
            return
        scratch = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            git.run(["init", "--quiet", "--", str(scratch)], cwd=dest.parent)
            git.run(["remote", "add", "--", "origin", url], cwd=scratch)
            git.fetch_and_checkout(scratch, ref)
            scratch.rename(dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Serialise checkouts of one cache entry across processes (an advisory flock)."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Git:
    """Runs the ``git`` CLI for one remote: no shell, no prompts, secrets redacted."""

    def __init__(self, url: str, repo_id: str) -> None:
        self.url = url
        self.repo_id = repo_id

    def fetch_and_checkout(self, repo: Path, ref: str | None) -> None:
        """Fetch ``ref`` (shallow when the remote allows it) and check it out detached."""
        shallow = self.run(["fetch", "--quiet", "--no-tags", "--depth", "1", "--",
                            "origin", ref or "HEAD"], cwd=repo, check=False)
        if shallow.returncode == 0:
            commit = self.run(["rev-parse", "--verify", "FETCH_HEAD^{commit}"], cwd=repo).stdout
        elif ref is not None:
            commit = self._resolve_after_full_fetch(repo, ref, shallow)
        else:
            raise self._error("fetch of the default branch", shallow)
        self.run(["checkout", "--quiet", "--force", "--detach", commit.strip()], cwd=repo)
        self.run(["clean", "-ffdxq"], cwd=repo)

    def _resolve_after_full_fetch(
        self, repo: Path, ref: str, shallow: subprocess.CompletedProcess[str]
    ) -> str:
        """Fetch all branches and tags to resolve refs a shallow fetch cannot
        (an abbreviated commit hash); report the shallow fetch's error if that fails."""
        is_shallow = self.run(["rev-parse", "--is-shallow-repository"], cwd=repo).stdout
        unshallow = ["--unshallow"] if is_shallow.strip() == "true" else []
        full = self.run(["fetch", "--quiet", "--tags", *unshallow, "--", "origin",
                         "+refs/heads/*:refs/remotes/origin/*"], cwd=repo, check=False)
        if full.returncode == 0:
            found = self.run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                             cwd=repo, check=False)
            if found.returncode == 0:
                return found.stdout
        raise self._error(f"fetch of ref {ref!r}", shallow)

    def run(self, args: list[str], *, cwd: Path, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        command = ["git", "-c", "protocol.ext.allow=never", *args]
        try:
            result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                                    timeout=GIT_TIMEOUT_S, check=False)
        except FileNotFoundError:
            raise RepositoryError(f"repository {self.repo_id!r}: the git adapter needs the "
                                  "`git` command, which is not installed") from None
        except subprocess.TimeoutExpired:
            raise RepositoryError(f"repository {self.repo_id!r}: git {args[0]} of "
                                  f"{_redact_url(self.url)} took longer than "
                                  f"{GIT_TIMEOUT_S:.0f} s") from None
        if check and result.returncode != 0:
            raise self._error(f"git {args[0]}", result)
        return result

    def _error(self, what: str, result: subprocess.CompletedProcess[str]) -> RepositoryError:
        detail = _redact(result.stderr.strip() or f"exit status {result.returncode}", self.url)
        return RepositoryError(
            f"repository {self.repo_id!r}: {what} from {_redact_url(self.url)} failed: {detail}"
        )


def _redact_url(url: str) -> str:
    """``https://user:token@host/x`` → ``https://***@host/x``; other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _redact(text: str, url: str) -> str:
    """``text`` with ``url``'s credentials removed, wherever git echoed them."""
    text = text.replace(url, _redact_url(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        text = text.replace(userinfo + "@", "***@")
    if parts.password:
        text = text.replace(parts.password, "***")
    return text
