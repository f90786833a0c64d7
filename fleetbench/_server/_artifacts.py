"""Reading one artifact of a run in chunks, for ``GetArtifact``.

Only names the run lists in its artifacts are served, and the file must lie inside the
run's output folder, so a name can never reach another file. The SHA-256 on the last
chunk covers the whole file (the bytes before ``offset`` included) as read now, so a
client that resumed a download can check the file it assembled.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fleetbench._server._errors import BadRequestError, OutOfRangeError, RunNotFoundError
from fleetbench._store import RunRecord

DEFAULT_CHUNK = 64 * 1024
MAX_CHUNK = 1024 * 1024
"""Well under gRPC's default 4 MiB message limit."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """``data`` at ``offset`` of a file of ``total_size`` bytes; ``sha256`` on the last."""

    offset: int
    data: bytes
    total_size: int
    sha256: str


def artifact_path(record: RunRecord, name: str) -> Path:
    """The file of artifact ``name`` of the run.

    :raises RunNotFoundError: the run lists no such artifact, or its file is gone.
    """
    if name not in {a.name for a in record.artifacts}:
        raise RunNotFoundError(f"run {record.run_id!r} has no artifact {name!r}")
    folder = Path(record.output_dir).resolve()
    path = (folder / name).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise RunNotFoundError(f"the file of artifact {name!r} of run {record.run_id!r} "
                               "is missing")
    return path


async def read_chunks(path: Path, offset: int, chunk_size: int) -> AsyncIterator[Chunk]:
    """The file from ``offset`` on, in chunks of at most ``chunk_size`` bytes (0: the
    default; capped); at least one chunk, even for an empty file.

    :raises BadRequestError: a negative offset or chunk size.
    :raises OutOfRangeError: ``offset`` is beyond the end of the file.
    """
    if offset < 0 or chunk_size < 0:
        raise BadRequestError("offset and chunk_size must not be negative")
    size = min(chunk_size or DEFAULT_CHUNK, MAX_CHUNK)
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        total = os.fstat(handle.fileno()).st_size
        if offset > total:
            raise OutOfRangeError(f"offset {offset} is beyond the artifact's {total} bytes")
        digest = await asyncio.to_thread(_hash_prefix, handle, offset)
        position = offset
        while True:
            data = await asyncio.to_thread(handle.read, size)
            digest.update(data)
            position += len(data)
            last = position >= total or not data
            yield Chunk(position - len(data), data, total, digest.hexdigest() if last else "")
            if last:
                return
    finally:
        handle.close()


def _hash_prefix(handle: BinaryIO, length: int) -> hashlib._Hash:
    """SHA-256 of the first ``length`` bytes; leaves ``handle`` at ``length``."""
    digest = hashlib.sha256()
    remaining = length
    while remaining > 0:
        block = handle.read(min(remaining, 1 << 20))
        if not block:
            break
        digest.update(block)
        remaining -= len(block)
    return digest
