"""Markdown that the data it shows cannot hijack (summary.md, compare.md).

Ids, evaluator details and error messages are user text. In GitHub-flavoured Markdown
a ``|`` splits a table cell, ``<script>`` is raw HTML, ``*``/``_``/``[``/``$`` start
emphasis, links or maths and ``@name`` pings someone. :func:`escape` turns such text
into one line that renders literally; the helpers below build the rest from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["escape", "table"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_INLINE = re.compile(r"([\\`*_\[\]|~$])")
_BLOCK_START = re.compile(r"^(?:[#+=-]|\d+[.)])")
_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def escape(text: str, limit: int | None = None) -> str:
    """``text`` as literal inline Markdown on one line, cut to ``limit`` characters
    (before escaping, with ``…``)."""
    text = _CONTROL.sub(" ", text).strip()
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)].rstrip() + "…"
    text = _INLINE.sub(r"\\\1", text.translate(_HTML))
    text = text.replace("@", "@&#8203;")  # a zero-width space: no mention, no e-mail link
    return "\\" + text if _BLOCK_START.match(text) else text


def table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> str:
    """A table of already escaped cells; ``align`` has one ``l`` or ``r`` per column."""
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)
