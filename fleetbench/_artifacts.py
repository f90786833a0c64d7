"""Writing artifact files safely and describing them (name, size, sha256, media type)."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from fleetbench._store import ArtifactRecord

_MEDIA_TYPES = {".jsonl": "application/x-ndjson", ".csv": "text/csv",
                ".md": "text/markdown", ".xml": "application/xml"}


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe_artifacts(paths: Iterable[Path]) -> list[ArtifactRecord]:
    """One record per existing file, sorted by name."""
    records = []
    for path in sorted(set(paths), key=lambda p: p.name):
        if not path.is_file():
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        media = _MEDIA_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        records.append(ArtifactRecord(path.name, path.stat().st_size, digest.hexdigest(),
                                      media or "application/octet-stream"))
    return records
