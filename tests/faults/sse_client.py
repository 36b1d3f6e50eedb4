"""A minimal Server-Sent Events client on raw asyncio sockets, light enough to hold a thousand streams
from one process (the bench uses it too; it imports nothing from Django or the test set-up)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


class StreamEnded(Exception):
    """The server closed the stream (cleanly or not)."""


@dataclass
class SseStream:
    status: int
    headers: dict[str, str]
    body: bytes
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    _buffer: bytes = b""
    _chunked: bool = False
    _eof: bool = False
    comments: list[str] = field(default_factory=list)

    async def _more(self) -> None:
        if self._eof:
            raise StreamEnded
        if not self._chunked:
            data = await self.reader.read(65536)
            if not data:
                self._eof = True
                raise StreamEnded
            self._buffer += data
            return
        size_line = await self.reader.readline()
        if not size_line:
            self._eof = True
            raise StreamEnded
        size = int(size_line.strip().split(b";")[0], 16)
        if size == 0:
            await self.reader.readline()
            self._eof = True
            raise StreamEnded
        self._buffer += await self.reader.readexactly(size)
        await self.reader.readexactly(2)

    async def frame(self) -> dict[str, str]:
        """The next frame with fields (``event``, ``data``, ``id``, ``retry``); comment lines are kept in
        ``comments``. Raises StreamEnded when the server ends the stream."""
        while True:
            raw, sep, rest = self._buffer.partition(b"\n\n")
            if not sep:
                await self._more()
                continue
            self._buffer = rest
            fields: dict[str, str] = {}
            for line in raw.decode().split("\n"):
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
            if fields:
                return fields

    async def frames_until_end(self) -> list[dict[str, str]]:
        frames = []
        try:
            while True:
                frames.append(await self.frame())
        except (StreamEnded, ConnectionError, asyncio.IncompleteReadError):
            return frames

    def close(self) -> None:
        self.writer.close()


async def open_stream(host: str, port: int, path: str, *, token: str,
                      headers: dict[str, str] | None = None) -> SseStream:
    """GETs ``path`` and reads the response head; the stream's frames follow with `SseStream.frame`.
    An error response's body is read whole into ``body``."""
    reader, writer = await asyncio.open_connection(host, port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", f"Authorization: Bearer {token}",
             "Accept: text/event-stream"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split()[1])
    parsed: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
    stream = SseStream(status=status, headers=parsed, body=b"", reader=reader, writer=writer,
                       _chunked=parsed.get("transfer-encoding", "").lower() == "chunked")
    if status != 200:
        if "content-length" in parsed:
            stream.body = await reader.readexactly(int(parsed["content-length"]))
        writer.close()
    return stream
