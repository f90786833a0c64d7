"""Crash-safe file writing for exporters: atomic files and on-disk spools.

An artifact is written under a hidden temporary name in the output folder and renamed
over its final name only when complete (``os.replace`` is atomic on POSIX), so readers
see either the previous file or the new one, never half of one. Leftovers of a crashed
export (temporary files, spool folders) carry fixed prefixes and are removed by the
next export of the same artifact.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["AtomicFile", "Spool", "atomic_write", "prepare_output_dir"]

_TMP_SUFFIX = ".tmp"
_SPOOL_SUFFIX = ".spool"
_WRITE_BUFFER = 1 << 20  # bytes an artifact buffers between writes: few system calls
_COPY_CHARS = 1 << 20  # characters a spool is copied by at a time


def prepare_output_dir(directory: Path, artifact_names: tuple[str, ...]) -> None:
    """Create ``directory`` and remove what crashed exports of these artifacts left.

    Only names this module creates are touched: ``.{artifact}.{hex}.tmp`` files and
    ``.{artifact}.{hex}.spool`` folders.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in artifact_names:
        for stale in directory.glob(f".{name}.*{_TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
        for stale in directory.glob(f".{name}.*{_SPOOL_SUFFIX}"):
            shutil.rmtree(stale, ignore_errors=True)


def _hidden_sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name next to ``path``: the artifact's name plus random hex."""
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}{suffix}")


class AtomicFile:
    """A UTF-8 text file that appears under its final name only on :meth:`commit`.

    The temporary file is created with ``O_EXCL`` and the process umask (unlike
    ``mkstemp``'s 0600), so the artifact gets ordinary permissions.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = _hidden_sibling(path, _TMP_SUFFIX)
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        # newline="" leaves line endings to the writer (the csv module needs that).
        self.handle: TextIO = os.fdopen(fd, "w", buffering=_WRITE_BUFFER, encoding="utf-8",
                                        newline="")

    def commit(self) -> Path:
        """Flush to disk and rename into place; returns the final path."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self._tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Drop the temporary file; the previous artifact (if any) stays untouched."""
        self.handle.close()
        self._tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename (best effort: some filesystems refuse directory fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[TextIO]:
    """Write ``path`` atomically: committed when the block ends, discarded if it raises."""
    file = AtomicFile(path)
    try:
        yield file.handle
    except BaseException:
        file.discard()
        raise
    file.commit()


class Spool:
    """Regroups lines by bucket on disk with bounded memory.

    Lines are buffered per bucket until ``buffer_chars`` characters are held in all,
    then every non-empty buffer is appended to its bucket's file (``{n}.txt``: bucket
    numbers, never ids, name the files). Reading a bucket yields its lines in the
    order they were appended. Memory stays below the budget whatever the number of
    lines, and files are opened once per bucket per flush, not once per line.
    """

    def __init__(self, owner: Path, buffer_chars: int) -> None:
        self.directory = _hidden_sibling(owner, _SPOOL_SUFFIX)
        self.directory.mkdir()
        self._budget = buffer_chars
        self._held = 0
        self._buffers: dict[int, list[str]] = {}
        self._on_disk: set[int] = set()

    @property
    def held_chars(self) -> int:
        """Characters currently buffered in memory (never more than the budget)."""
        return self._held

    def append(self, bucket: int, line: str) -> None:
        """Add one line (without its newline) to ``bucket``."""
        self._buffers.setdefault(bucket, []).append(line)
        self._held += len(line) + 1
        if self._held > self._budget:
            self.flush()

    def flush(self) -> None:
        """Move every buffered line to its bucket's file."""
        for bucket, lines in self._buffers.items():
            if lines:
                with self._file(bucket).open("a", encoding="utf-8", newline="") as out:
                    out.write("\n".join(lines))
                    out.write("\n")
                self._on_disk.add(bucket)
        self._buffers.clear()
        self._held = 0

    def write_joined(self, bucket: int, out: TextIO, separator: str, *,
                     before: str = "", after: str = "") -> bool:
        """Write the lines of ``bucket`` (in append order, buffered ones included) to
        ``out`` with ``separator`` between them, wrapped in ``before`` and ``after``;
        write nothing for an empty bucket. Returns whether it wrote.

        The spool file is copied in large chunks, not line by line: lines never hold a
        newline, so each newline but the last becomes ``separator``.

        :raises OSError: when a spool file written earlier has gone missing, rather
            than silently exporting fewer results.
        """
        if bucket not in self._on_disk:  # never flushed: serve it from memory
            lines = self._buffers.get(bucket)
            if lines:
                out.write(before + separator.join(lines) + after)
            return bool(lines)
        if self._buffers.get(bucket):
            self.flush()
        out.write(before)
        with self._file(bucket).open(encoding="utf-8", newline="\n") as spool:
            held = ""  # a newline held back: it ends the last line unless more follows
            while chunk := spool.read(_COPY_CHARS):
                text = held + chunk
                held = "\n" if text.endswith("\n") else ""
                out.write((text[:-1] if held else text).replace("\n", separator))
        out.write(after)
        return True

    def remove(self) -> None:
        """Delete the spool folder and everything in it."""
        self._buffers.clear()
        self._held = 0
        shutil.rmtree(self.directory, ignore_errors=True)

    def _file(self, bucket: int) -> Path:
        return self.directory / f"{bucket}.txt"
