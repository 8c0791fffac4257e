"""A pass-through HTTP/1.1 reverse proxy that stores nothing: the "no cache" baseline.

Usage::

    python -m offload_bench.passthrough --upstream http://127.0.0.1:8000 --bind 127.0.0.1:8080

The conformance harness (``python -m offload_bench.conformance --no-cache``)
puts it where a cache would sit, so the harness can be checked end to end
without one: a proxy that only forwards should score what the test suite
scores against its origin server directly. That is why it changes as little
as a proxy may, on the standard library alone:

* the method, request target, header fields (order, case, repeats) and body
  are forwarded as they came, minus the hop-by-hop fields (RFC 9110, 7.6.1):
  ``Connection``, the fields it lists, ``Keep-Alive``, ``Proxy-Connection``,
  ``TE``, ``Transfer-Encoding`` and ``Upgrade``;
* the response keeps its status code and reason phrase, even one outside the
  registered codes (the suite's origin sends ``999 304 Not Generated``), and
  its header fields; no ``Date``, ``Server`` or ``Via`` is added, so that
  what the client sees is what the origin sent;
* interim responses (``102``, ``103``) are forwarded before the final one;
* an origin that drops the connection without answering gets the client's
  connection dropped too, as the client would have seen it, rather than a
  made-up ``502``;
* client connections are persistent (HTTP/1.1 keep-alive); every request
  opens a fresh upstream connection with ``Connection: close``, so a request
  is never re-sent on a pooled connection the origin closed meanwhile (the
  suite counts the requests its origin sees and reports a repeated one as a
  retry), and a response without a length ends as soon as it is sent.

Bodies are read whole before they are forwarded: the suite's are a few bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Fields that describe one connection, not the message (RFC 9110, 7.6.1).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"})
#: Longest request or response head accepted, in bytes.
HEAD_LIMIT = 64 * 1024
#: Seconds to wait for the origin's answer; the suite's client gives up after 10.
UPSTREAM_TIMEOUT = 30.0
#: Seconds an idle client connection is kept open; longer than the client's own idle timeout.
IDLE_TIMEOUT = 75.0

Headers = list[tuple[str, str]]


class BadMessage(Exception):
    """The peer sent something that is not an HTTP/1.x message."""


@dataclass
class Head:
    """A request line or status line, and the header fields after it."""

    start: tuple[str, str, str]
    headers: Headers

    def get(self, name: str) -> str | None:
        """The last value of a field, ``None`` if absent."""
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[-1] if values else None

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of every instance of a field, lowercased."""
        found: set[str] = set()
        for key, value in self.headers:
            if key.lower() == name.lower():
                found.update(token.strip().lower() for token in value.split(",") if token.strip())
        return found


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """Read one message head; ``None`` if the peer closed the connection before sending any byte."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial.strip():
            return None
        raise BadMessage("connection closed in the middle of a message head") from error
    except asyncio.LimitOverrunError as error:
        raise BadMessage("message head too long") from error
    lines = raw.decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # a stray CRLF before a request line is allowed (RFC 9112, 2.2)
        lines.pop(0)
    parts = lines[0].split(" ", 2) if lines else []
    if len(parts) < 2:
        raise BadMessage(f"malformed start line {lines[:1]!r}")
    start = (parts[0], parts[1], parts[2] if len(parts) == 3 else "")
    headers: Headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadMessage(f"malformed header line {line!r}")
        headers.append((name, value.strip(" \t")))
    return Head(start, headers)


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """Decode a chunked body; trailer fields are read and dropped."""
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError as error:
            raise BadMessage(f"bad chunk size {line!r}") from error
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def read_body(reader: asyncio.StreamReader, head: Head, *, until_close: bool) -> bytes:
    """The body framed by ``Transfer-Encoding`` or ``Content-Length``, else by the connection's end if allowed."""
    if "chunked" in head.tokens("transfer-encoding"):
        return await read_chunked(reader)
    length = head.get("content-length")
    if length is not None:
        try:
            return await reader.readexactly(int(length.split(",")[0]))
        except ValueError as error:
            raise BadMessage(f"bad Content-Length {length!r}") from error
    return await reader.read() if until_close else b""


def end_to_end(headers: Headers) -> Headers:
    """The fields a proxy forwards: all but the hop-by-hop ones and those ``Connection`` names."""
    listed = Head(("", "", ""), headers).tokens("connection")
    return [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP | listed]


def serialise(start: tuple[str, str, str], headers: Headers) -> bytes:
    """A message head on the wire."""
    lines = [" ".join(part for part in start if part), *(f"{name}: {value}" for name, value in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def has_body(method: str, status: int) -> bool:
    """Whether a response to ``method`` with ``status`` carries a body (RFC 9112, 6.3)."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


class Proxy:
    """Forwards every request on a client connection to the upstream, one fresh connection per request."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one client connection until either side closes it."""
        try:
            while True:
                try:
                    request = await asyncio.wait_for(read_head(reader), IDLE_TIMEOUT)
                except asyncio.TimeoutError:
                    return
                if request is None:
                    return
                if not await self.exchange(request, reader, writer):
                    return
        except (
            BadMessage,
            OSError,
            ValueError,
            asyncio.TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as error:
            # the client sees its connection closed, as it would if the origin had failed it
            print(f"passthrough: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def exchange(self, request: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Forward one request and its response; return whether the client connection stays open."""
        method, target, version = request.start
        expects = "100-continue" in request.tokens("expect")
        if expects:  # answered here, since the body is read before the request goes upstream
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await read_body(reader, request, until_close=False)
        dropped = {"content-length", "expect"} if expects else {"content-length"}
        headers = [(name, value) for name, value in end_to_end(request.headers) if name.lower() not in dropped]
        if body or request.get("content-length") is not None:
            headers.append(("Content-Length", str(len(body))))
        headers.append(("Connection", "close"))
        upstream = await asyncio.wait_for(
            self.forward(serialise((method, target, "HTTP/1.1"), headers) + body, method, writer, version),
            UPSTREAM_TIMEOUT,
        )
        if upstream is None:
            return False  # the origin dropped the connection: so does the proxy
        keep = version == "HTTP/1.1" and "close" not in request.tokens("connection")
        keep = keep or (version == "HTTP/1.0" and "keep-alive" in request.tokens("connection"))
        status_head, response_body = upstream
        status = int(status_head.start[1])
        fields = end_to_end(status_head.headers)
        if has_body(method, status) and status_head.get("content-length") is None:
            fields = [*fields, ("Content-Length", str(len(response_body)))]
        if version == "HTTP/1.0":
            fields.append(("Connection", "keep-alive" if keep else "close"))
        elif not keep:
            fields.append(("Connection", "close"))
        writer.write(serialise(("HTTP/1.1", status_head.start[1], status_head.start[2]), fields) + response_body)
        await writer.drain()
        return keep

    async def forward(
        self, message: bytes, method: str, client: asyncio.StreamWriter, version: str
    ) -> tuple[Head, bytes] | None:
        """Send ``message`` upstream, relay interim responses; the final head and body, ``None`` if none came."""
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)
        try:
            upstream_writer.write(message)
            await upstream_writer.drain()
            while True:
                try:
                    head = await read_head(upstream_reader)
                except (BadMessage, ConnectionError):
                    return None
                if head is None:
                    return None
                status = int(head.start[1])
                if 100 <= status < 200 and status != 101:
                    if version == "HTTP/1.1":  # HTTP/1.0 clients do not expect interim responses
                        client.write(serialise(("HTTP/1.1", head.start[1], head.start[2]), end_to_end(head.headers)))
                        await client.drain()
                    continue
                body = await read_body(upstream_reader, head, until_close=True) if has_body(method, status) else b""
                return head, body
        finally:
            upstream_writer.close()
            with contextlib.suppress(ConnectionError):
                await upstream_writer.wait_closed()


async def run(upstream: str, bind: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    parts = urlsplit(upstream)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"--upstream must be an http:// URL, not {upstream!r}")
    proxy = Proxy(parts.hostname, parts.port or 80)
    host, _, port = bind.rpartition(":")
    server = await asyncio.start_server(proxy.serve, host or "127.0.0.1", int(port), limit=HEAD_LIMIT)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"passthrough: {bind} -> {upstream}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offload_bench.passthrough", description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="the origin, http://HOST:PORT")
    parser.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT to listen on (default: %(default)s)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.upstream, args.bind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
