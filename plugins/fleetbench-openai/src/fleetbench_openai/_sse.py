"""An incremental Server-Sent Events decoder: bytes in, complete events out.

It follows the parts of the SSE format the OpenAI family uses: ``data:`` and ``event:``
fields (one optional space after the colon), events ended by a blank line, comment lines
(leading ``:``) and unknown fields ignored, ``\\n`` or ``\\r\\n`` line ends. It is fed the
body as it arrives, so each event is handed over as soon as its blank line is read.
"""

from __future__ import annotations

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Splits a byte stream into ``(event, data)`` pairs; ``event`` is ``""`` when unnamed."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._event = b""

    def feed(self, chunk: bytes) -> list[tuple[str, bytes]]:
        """Add bytes; return the events they complete (often none, sometimes several)."""
        buffer = self._buffer + chunk if self._buffer else chunk
        events: list[tuple[str, bytes]] = []
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                self._dispatch(events)
                continue
            if line.startswith(b":"):
                continue  # a comment (keep-alive)
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
            # id, retry and unknown fields do not matter here
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[tuple[str, bytes]]:
        """The body ended: return an event whose lines were complete but whose blank line
        never came (a lenient server's last ``data: [DONE]\\n``). A partial line is dropped."""
        events: list[tuple[str, bytes]] = []
        self._dispatch(events)
        self._buffer = b""
        return events

    def _dispatch(self, events: list[tuple[str, bytes]]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            events.append((self._event.decode("utf-8", "replace"), data))
        self._data = []
        self._event = b""
