"""A small HTTP/1.1 server on asyncio streams, for ``mooncake.http_metadata_server``.

The C++ wheel serves its metadata with aiohttp; this package must not depend on it, so this
module provides the part of aiohttp that server uses, with aiohttp's observable behaviour:
- routes match the percent-decoded path exactly; an unknown path is a ``404`` with
  ``text/plain; charset=utf-8`` and the body ``404: Not Found``;
- the query string is URL-decoded (``+`` is a space); the first value of a name wins;
- ``text`` responses carry ``; charset=utf-8`` after their content type, ``body`` responses
  carry the content type as given;
- a ``HEAD`` response keeps its status and ``Content-Length`` but sends no body;
- keep-alive is the HTTP/1.1 default (``Connection: close`` and HTTP/1.0 end it), idle
  connections close after 75 s, ``Expect: 100-continue`` is answered before the body is
  read, request bodies may use ``Content-Length`` or chunked encoding, and a handler that
  reads a body larger than 1 MiB gets aiohttp's ``413``.

The request parser and the response encoder do no I/O; ``serve_connection`` drives them.
"""

import asyncio
import email.utils
import http
import logging
import re
from urllib.parse import parse_qsl, unquote, urlsplit

logger = logging.getLogger("mooncake.http_metadata_server")

MAX_LINE = 8190  # aiohttp's limit for the request line and each header line
MAX_HEADERS = 128
CLIENT_MAX_SIZE = 1024 ** 2  # aiohttp's default limit on a body a handler reads
KEEPALIVE_TIMEOUT = 75.0  # aiohttp's default, in seconds
LINGER_TIMEOUT = 2.0  # how long an unread body is drained before a closing connection ends
MAX_CONNECTIONS = 4096  # further connections are closed at once

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class BadRequest(Exception):
    """A request that cannot be parsed; the connection answers 400 and closes."""


class BodyTooLarge(Exception):
    """A handler read a body over ``CLIENT_MAX_SIZE``; answered with aiohttp's 413."""

    def __init__(self, size):
        super().__init__(size)
        self.size = size


class Request:
    """One parsed request: ``method``, ``path`` (decoded), ``query`` (a dict holding the
    first value of each name), ``headers`` (lower-case names), and ``read()`` for the body."""

    def __init__(self, method, target, version, headers, body_reader):
        self.method = method
        self.version = version
        self.headers = headers
        try:
            parts = urlsplit(target)
        except ValueError:
            raise BadRequest("malformed request target") from None
        self.path = unquote(parts.path)
        self.query = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            self.query.setdefault(name, value)
        self._body_reader = body_reader
        self._body = None

    async def read(self) -> bytes:
        """The whole body (``b''`` when there is none)."""
        if self._body is None:
            self._body = await self._body_reader(CLIENT_MAX_SIZE)
        return self._body

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


class Response:
    """A response: ``status``, a body (``text`` is UTF-8 encoded) and its content type."""

    def __init__(self, *, status=200, text=None, body=b"", content_type="application/json"):
        self.status = status
        if text is not None:
            self.body = text.encode("utf-8")
            self.content_type = f"{content_type}; charset=utf-8"
        else:
            self.body = bytes(body)
            self.content_type = content_type

    def encode(self, head_only: bool, keep_alive: bool) -> bytes:
        """The response bytes; ``head_only`` drops the body but keeps its length."""
        phrase = http.HTTPStatus(self.status).phrase
        lines = [
            f"HTTP/1.1 {self.status} {phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            "Server: mooncake-rs",
        ]
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def not_found() -> Response:
    return Response(status=404, text="404: Not Found", content_type="text/plain")


class App:
    """The routes of a server: ``(method or "*", path) -> async handler(request)``.

    It stands in for the ``aiohttp.web.Application`` of the C++ wheel and is not one."""

    def __init__(self):
        self.routes = {}

    def add_route(self, method: str, path: str, handler):
        self.routes[(method.upper(), path)] = handler

    async def handle(self, request: Request) -> Response:
        handler = (self.routes.get((request.method, request.path))
                   or self.routes.get(("*", request.path)))
        if handler is None:
            return not_found()
        try:
            return await handler(request)
        except BodyTooLarge as e:
            return Response(
                status=413, content_type="text/plain",
                text=f"Maximum request body size {CLIENT_MAX_SIZE} exceeded, "
                     f"actual body size {e.size}")
        except (BadRequest, asyncio.IncompleteReadError, ConnectionError):
            raise  # the connection itself is broken
        except Exception:
            logger.exception("error handling %s %s", request.method, request.path)
            return Response(status=500, text="500 Internal Server Error",
                            content_type="text/plain")


def parse_request_line(line: bytes):
    """``(method, target, version)`` of a request line, or ``BadRequest``."""
    try:
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ")
    except ValueError:
        raise BadRequest("malformed request line") from None
    if not _TOKEN.fullmatch(method) or not target or version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest("malformed request line")
    return method, target, version


def parse_header_line(line: bytes):
    """``(lower-case name, value)`` of a header line, or ``BadRequest``."""
    name, sep, value = line.decode("latin-1").rstrip("\r\n").partition(":")
    if not sep or not name or name != name.strip():
        raise BadRequest("malformed header line")
    return name.lower(), value.strip()


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise BadRequest("line too long") from None
    if len(line) > MAX_LINE + 2:
        raise BadRequest("line too long")
    return line


async def _read_head(reader: asyncio.StreamReader):
    """The request line and headers, or ``None`` at a clean end of the connection."""
    try:
        line = await _read_line(reader)
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise BadRequest("truncated request") from None
        return None
    while line in (b"\r\n", b"\n"):  # stray empty lines between requests are allowed
        line = await _read_line(reader)
    method, target, version = parse_request_line(line)
    headers = {}
    for _ in range(MAX_HEADERS + 1):
        line = await _read_line(reader)
        if line in (b"\r\n", b"\n"):
            return method, target, version, headers
        name, value = parse_header_line(line)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise BadRequest("too many headers")


class _Body:
    """Reads (or discards) one request's body from the connection, exactly once."""

    def __init__(self, reader, writer, headers, version):
        self.reader = reader
        self.writer = writer
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.length = 0
        if not self.chunked and "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit():
                raise BadRequest("invalid Content-Length")
            self.length = int(text)
        self.expect_continue = (version == "HTTP/1.1"
                                and headers.get("expect", "").lower() == "100-continue")
        self.consumed = False

    async def read(self, limit: int) -> bytes:
        """The body, or ``BodyTooLarge`` (the connection must then close)."""
        if not self.chunked and self.length > limit:
            raise BodyTooLarge(self.length)
        self.consumed = True
        if self.expect_continue:
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if not self.chunked:
            return await self.reader.readexactly(self.length)
        data = bytearray()
        async for chunk in self._chunks():
            data += chunk
            if len(data) > limit:
                raise BodyTooLarge(len(data))
        return bytes(data)

    @property
    def pending(self) -> bool:
        """Whether a body is still on the wire (or may yet come)."""
        return not self.consumed and (self.chunked or self.length > 0)

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request after this one. A client that
        asked for ``100 Continue`` and got a final answer instead may send its body or not,
        so the connection cannot tell where the next request starts."""
        return not (self.pending and self.expect_continue)

    async def discard(self):
        """Skips a body the handler did not read, so the connection can be reused."""
        if not self.pending:
            return
        self.consumed = True
        if not self.chunked:
            remaining = self.length
            while remaining:
                remaining -= len(await self.reader.readexactly(min(remaining, 65536)))
            return
        async for _ in self._chunks():
            pass

    async def _chunks(self):
        while True:
            size_line = await _read_line(self.reader)
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise BadRequest("invalid chunk size") from None
            if size == 0:
                while (await _read_line(self.reader)) not in (b"\r\n", b"\n"):
                    pass  # trailers are ignored
                return
            chunk = await self.reader.readexactly(size)
            if (await _read_line(self.reader)) not in (b"\r\n", b"\n"):
                raise BadRequest("malformed chunk")
            yield chunk


async def serve_connection(app: App, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter):
    """Answers the requests of one connection in order until it closes."""
    try:
        while True:
            try:
                head = await asyncio.wait_for(_read_head(reader), KEEPALIVE_TIMEOUT)
            except asyncio.TimeoutError:
                return
            if head is None:
                return
            method, target, version, headers = head
            body = _Body(reader, writer, headers, version)
            request = Request(method, target, version, headers, body.read)
            response = await app.handle(request)
            keep_alive = request.keep_alive and response.status != 413 and body.reusable
            writer.write(response.encode(method == "HEAD", keep_alive))
            await writer.drain()
            if not keep_alive:
                if body.pending:
                    await _linger(reader, writer)
                return
            await body.discard()
    except BadRequest as e:
        response = Response(status=400, text=f"400, message: {e}", content_type="text/plain")
        writer.write(response.encode(False, False))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _linger(reader, writer):
    """Half-closes, then reads what the client still sends for a while: closing a socket
    with unread input resets the connection, and the client could lose the response."""
    try:
        if writer.can_write_eof():
            writer.write_eof()

        async def drain_input():
            while await reader.read(65536):
                pass

        await asyncio.wait_for(drain_input(), LINGER_TIMEOUT)
    except (asyncio.TimeoutError, OSError):
        pass


class Server:
    """Serves an ``App`` on ``host:port`` in the running event loop; ``stop()`` closes the
    listener and the open connections."""

    def __init__(self, app: App):
        self.app = app
        self._server = None
        self._connections = set()

    async def start(self, host: str, port: int):
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=2 * MAX_LINE)

    async def stop(self):
        if self._server is not None:
            self._server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader, writer):
        if len(self._connections) >= MAX_CONNECTIONS:
            logger.warning("more than %d open connections; closing a new one",
                           MAX_CONNECTIONS)
            writer.close()
            return
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            await serve_connection(self.app, reader, writer)
        finally:
            self._connections.discard(task)
