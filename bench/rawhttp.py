"""A lean HTTP/1.1 keep-alive client for the load generators: one connection per instance,
requests written as prepared bytes, answers parsed only as far as the status line and
Content-Length.

Why not httpx: the generators share the server's two cores, so every millisecond of generator
CPU is a millisecond the server does not get. httpx (with httpcore and anyio underneath) spends
about 1 ms of CPU per request here; this client spends a few tens of microseconds, so the
figures measure the server, not the generator (docs/performance.md, "Load generator").

It speaks only what pharmref answers with: HTTP/1.1 responses framed by Content-Length (every
pharmref route sends a complete body). A chunked or unframed answer is reported as an error
rather than guessed at.
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class ProtocolError(Exception):
    """The server's answer could not be read as a Content-Length framed HTTP/1.1 response."""


@dataclass(frozen=True, slots=True)
class Response:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport instances

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("connection closed by server"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            response = self._parse()
        except ProtocolError as exc:
            waiter.set_exception(exc)
            return
        if response is not None:
            waiter.set_result(response)

    def _parse(self) -> Response | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buffer[:end]).lower()
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"http/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding":
                raise ProtocolError("chunked answers are not supported by this client")
        if length is None:
            raise ProtocolError("an answer without Content-Length")
        start = end + 4
        if len(self.buffer) < start + length:
            return None
        body = bytes(self.buffer[start : start + length])
        del self.buffer[: start + length]
        return Response(int(parts[1]), body)


class Connection:
    """One keep-alive connection; requests on it go one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.host_header = f"Host: {host}:{port}\r\n".encode()
        self._protocol: _Protocol | None = None

    @classmethod
    def for_url(cls, url: str) -> "Connection":
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"plain http://host:port URLs only, not {url!r}")
        return cls(parts.hostname, parts.port or 80)

    async def _connected(self) -> _Protocol:
        if self._protocol is None or self._protocol.closed:
            loop = asyncio.get_running_loop()
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
            self._protocol = protocol
        return self._protocol

    def prepare(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        """The request line and fixed headers, rendered once per workload."""
        lines = [f"{method} {path} HTTP/1.1\r\n".encode(), self.host_header]
        lines += [f"{name}: {value}\r\n".encode() for name, value in headers.items()]
        return b"".join(lines)

    async def send(self, head: bytes, body: bytes = b"", extra: bytes = b"") -> Response:
        """Send `head` (from prepare), then `extra` header lines, Content-Length and `body`."""
        protocol = await self._connected()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Response] = loop.create_future()
        protocol.waiter = waiter
        assert protocol.transport is not None
        protocol.transport.write(
            b"%s%scontent-length: %d\r\n\r\n%s" % (head, extra, len(body), body)
        )
        try:
            return await waiter
        except BaseException:
            self.close()  # a half-read answer leaves the connection unusable
            raise
        finally:
            protocol.waiter = None

    async def request(
        self, method: str, path: str, *, headers: dict[str, str], content: bytes = b""
    ) -> Response:
        """A one-off request (the lifecycle's per-referral paths)."""
        return await self.send(self.prepare(method, path, headers), content)

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
