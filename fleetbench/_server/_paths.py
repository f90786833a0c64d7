"""The data-root policy: a manifest submitted to the server may only reach files inside
the folders the operator named with ``--data-root`` (DESIGN §3).

The check runs on the manifest's model *before* anything is read from disk, so a
refused manifest never makes the server open, list or clone anything outside the roots.
Every path is resolved (symlinks followed) before it is compared, so neither ``..`` nor
a link inside a root leads out. Checked:

- the manifest's own folder (``manifest_path``), against which relative paths resolve;
- ``repositories[i].path`` of every repository not cloned by the ``git`` adapter;
- ``repositories[i].git_url`` when it names a local repository (``file://`` or a path);
- ``output.base_dir``, where the artifacts are written.

Dataset names need no check: adapters keep them inside their repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fleetbench._manifest import FleetManifest
from fleetbench._server._errors import OutsideDataRootsError

_REMOTE_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class DataRoots:
    """The folders manifests may use; with none given, the current directory."""

    def __init__(self, roots: Sequence[Path]) -> None:
        chosen = roots or (Path.cwd(),)
        self.roots: tuple[Path, ...] = tuple(Path(r).resolve() for r in chosen)

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (resolved) lies in a root."""
        resolved = path.resolve()
        return any(resolved.is_relative_to(root) for root in self.roots)

    def manifest_folder(self, manifest_path: str) -> Path:
        """The folder relative manifest paths resolve against: ``manifest_path``'s
        folder (a relative ``manifest_path`` is taken from the first root), or the first
        root when it is empty.

        :raises OutsideDataRootsError: that folder is outside every root.
        """
        if not manifest_path:
            return self.roots[0]
        path = Path(manifest_path)
        folder = (path if path.is_absolute() else self.roots[0] / path).parent.resolve()
        if not self.contains(folder):
            raise OutsideDataRootsError(
                f"manifest_path {manifest_path!r} is outside the server's data roots")
        return folder

    def check_manifest(self, manifest: FleetManifest, base_dir: Path) -> None:
        """Refuse ``manifest`` if any path it names leaves the roots.

        :raises OutsideDataRootsError: naming every offending field at once.
        """
        outside = [f"{where} ({value!r})"
                   for where, value, path in _manifest_paths(manifest, base_dir)
                   if not self.contains(path)]
        if outside:
            raise OutsideDataRootsError(
                "paths outside the server's data roots: " + "; ".join(outside))


def _manifest_paths(manifest: FleetManifest, base_dir: Path) -> Iterator[tuple[str, str, Path]]:
    """``(field, value, path on this machine)`` for each local path the manifest names."""
    for i, repo in enumerate(manifest.repositories):
        if repo.adapter != "git":
            yield f"repositories[{i}].path", repo.path, base_dir / repo.path
        if repo.git_url:
            local = _local_git_path(repo.git_url, base_dir)
            if local is not None:
                yield f"repositories[{i}].git_url", repo.git_url, local
    yield "output.base_dir", manifest.output.base_dir, base_dir / manifest.output.base_dir


def _local_git_path(url: str, base_dir: Path) -> Path | None:
    """The folder a git URL reads from on this machine, or ``None`` for a remote URL.

    Like git: ``file://`` URLs and plain paths are local; other ``scheme://`` URLs and
    the scp-like ``host:path`` form (a ``:`` before any ``/``) are remote.
    """
    text = url.strip()
    if text.lower().startswith("file://"):
        return Path(unquote(urlsplit(text).path))
    if _REMOTE_SCHEME.match(text):
        return None
    colon, slash = text.find(":"), text.find("/")
    if colon > 0 and (slash == -1 or colon < slash):
        return None
    return base_dir / text
