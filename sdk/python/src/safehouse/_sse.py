"""Server-Sent Events: the event and fs-watch streams of the daemon are `text/event-stream`.
One parser for both clients; it takes decoded lines and yields `(event, data)` pairs."""
from __future__ import annotations

from typing import AsyncIterator, Iterator, List, Optional, Tuple

SseEvent = Tuple[str, str]


class SseParser:
    """Feeds lines (without their newline) and returns a complete event at each blank line.
    Comments (`:` keep-alives) and `id:`/`retry:` fields are skipped."""

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []

    def feed(self, line: str) -> Optional[SseEvent]:
        if line == "":
            if not self._data and not self._event:
                return None
            ev = (self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return ev
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None


def iter_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    p = SseParser()
    for line in lines:
        ev = p.feed(line.rstrip("\r\n"))
        if ev is not None:
            yield ev


async def aiter_sse(lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
    p = SseParser()
    async for line in lines:
        ev = p.feed(line.rstrip("\r\n"))
        if ev is not None:
            yield ev
