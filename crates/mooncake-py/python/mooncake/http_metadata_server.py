"""``mooncake.http_metadata_server``: the transfer engines' HTTP metadata server, in Python.

An alternative to the server embedded in ``mooncake_master``
(``--enable_http_metadata_server``) and to the Rust ``http_metadata_server`` binary, with
the C++ wheel's interface: ``KVBootstrapServer(port, host).run()`` serves ``/metadata`` from
a background thread; ``python -m mooncake.http_metadata_server`` and the console script
``mooncake_http_metadata_server`` run it until SIGINT or SIGTERM.

Requests on ``/metadata?key=K``, with any method:
- ``K`` missing or blank: 400 ``metadata key is required``;
- ``GET``: 200 and the stored bytes, or 404 ``metadata not found``;
- ``PUT``: 200 ``metadata updated``, the body stored as is; a second ``PUT`` of a key that
  contains ``rpc_meta`` is 400 ``Duplicate rpc_meta key not allowed``;
- ``DELETE``: 200 ``metadata deleted``, or 404 ``metadata not found``;
- any other method: 405 ``Method not allowed``.

Every answer of the route is ``application/json``, whatever its body; other paths get a
``text/plain`` 404. Keys are URL-decoded and stripped of whitespace. The data lives in a
``dict`` in memory only.

The C++ wheel builds this on aiohttp. This package does not depend on it: the HTTP/1.1
server is ``mooncake._http_server`` (asyncio streams), which keeps aiohttp's observable
behaviour.
"""

import argparse
import asyncio
import logging
import signal
import sys
import threading
from enum import Enum
from time import sleep

from mooncake import _http_server

# The C++ wheel exposes aiohttp's ``web`` module here; aiohttp is not a dependency of this
# package, so the name exists and is None.
web = None

logger = logging.getLogger("mooncake.http_metadata_server")


class KVPoll(Enum):
    """The state ``KVBootstrapServer.poll()`` reports; only ``Failed`` and ``Success`` occur."""

    Failed = 0
    Bootstrapping = 1
    WaitingForInput = 2
    Transferring = 3
    Success = 4


class KVBootstrapServer:
    """An in-memory metadata store served over HTTP on ``host:port``.

    ``app`` is the route table (a ``mooncake._http_server.App``, not an aiohttp
    application), ``store`` the ``dict`` of key to bytes, ``lock`` the ``asyncio.Lock``
    that guards it, and ``thread`` the serving thread once ``run()`` was called.
    """

    def __init__(self, port: int, host: str = "0.0.0.0"):
        self.port = port
        self.host = host
        self.app = _http_server.App()
        self.app.add_route("*", "/metadata", self._handle_metadata)
        self.store = dict()
        self.lock = asyncio.Lock()
        self.thread = None
        self._loop = None
        self._stop_requested = threading.Event()

    def run(self) -> threading.Thread:
        """Starts serving from a daemon thread and returns it at once. A failure to bind is
        logged, and the thread then ends (``poll()`` turns ``Failed``)."""
        self._stop_requested.clear()
        self.thread = threading.Thread(target=self._serve, name="mooncake-http-metadata",
                                       daemon=True)
        self.thread.start()
        logger.info("HTTP Metadata Server started on %s:%s", self.host, self.port)
        return self.thread

    def close(self) -> None:
        """Stops the serving thread and waits up to 2 s for it; a no-op before ``run()``."""
        self._stop_requested.set()
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(loop.stop)
                logger.info("Stopping server loop...")
            except RuntimeError:
                pass  # the loop has already closed
        thread = self.thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=2)
            logger.info("Server thread stopped")

    def poll(self) -> KVPoll:
        """``Success`` while the serving thread runs, else ``Failed``."""
        if self.thread is None or not self.thread.is_alive():
            return KVPoll.Failed
        return KVPoll.Success

    def _serve(self):
        """The serving thread: its own event loop, the listener, then the loop until
        ``close()`` stops it."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        # close() reads _loop after setting the event; this thread sets _loop before
        # reading the event, so a close() racing with start-up is never lost.
        self._loop = loop
        server = _http_server.Server(self.app)
        try:
            loop.run_until_complete(server.start(self.host, self.port))
            if not self._stop_requested.is_set():
                loop.run_forever()
        except Exception as e:
            logger.error("Server error: %s", e)
        finally:
            try:
                loop.run_until_complete(server.stop())
                # Connections accepted in the last moment may not have started yet.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                self._loop = None
                loop.close()

    async def _handle_metadata(self, request) -> "_http_server.Response":
        key = request.query.get("key", "").strip()
        if not key:
            return _reply(400, "metadata key is required")
        if request.method == "GET":
            async with self.lock:
                value = self.store.get(key)
            if value is None:
                return _reply(404, "metadata not found")
            return _http_server.Response(status=200, body=value,
                                         content_type="application/json")
        if request.method == "PUT":
            data = await request.read()
            async with self.lock:
                # Transfer engines publish their RPC endpoint once; a second publication
                # under the same name is a clash, even with identical contents.
                if "rpc_meta" in key and key in self.store:
                    return _reply(400, "Duplicate rpc_meta key not allowed")
                self.store[key] = data
            return _reply(200, "metadata updated")
        if request.method == "DELETE":
            async with self.lock:
                if self.store.pop(key, None) is None:
                    return _reply(404, "metadata not found")
            return _reply(200, "metadata deleted")
        return _reply(405, "Method not allowed")


def _reply(status: int, text: str) -> "_http_server.Response":
    return _http_server.Response(status=status, text=text, content_type="application/json")


def parse_args():
    """The command line of ``mooncake_http_metadata_server``."""
    parser = argparse.ArgumentParser(
        description="HTTP Metadata Server for Mooncake",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8080, help="Port to listen on")
    parser.add_argument("--host", type=str, default="0.0.0.0", help="Host to bind to")
    parser.add_argument("--log-level", type=str, default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                        help="Logging level")
    return parser.parse_args()


def main():
    """Serves until SIGINT or SIGTERM, which exit with status 0."""
    args = parse_args()
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    server = KVBootstrapServer(port=args.port, host=args.host)
    server.run()

    def on_signal(signum, frame):
        logger.info("Shutting down...")
        server.close()
        sys.exit(0)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while True:
            sleep(1)
    except KeyboardInterrupt:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
