"""The C++ wheel's auxiliary RPC interface (``RpcInterface``, alias ``CoroRPCInterface``),
in pure Python, speaking the same wire protocol (``docs/dev/rpc-interface.md``).

The C++ class wraps a yalantinglibs ``coro_rpc`` server and client pool
(``mooncake-transfer-engine/src/transport/rpc_communicator/``). A peer calls one of two
remote functions:

- ``handleDataTransfer(string_view data)``: payloads of at most 1024 bytes travel as the
  struct_pack argument, larger ones as the request attachment with an empty argument;
- ``handleTensorTransfer()``: the tensor's raw bytes as the attachment, no metadata.

Either way the receiver hands the bytes to its data callback as
``{"source": "", "data": bytes}``, unless they look like a tensor header (see
``RpcInterface._incoming``), in which case they go to the tensor callback as a
``ReceivedTensor``. Frames are byte-identical to the C++ wheel's, so either end can be the
C++ wheel.

Differences from the C++ wheel, where its behaviour is a defect:
``send_data_async``/``send_tensor_async`` work (C++ raises a pybind11 GIL-check
``RuntimeError``); ``ReceivedTensor.shape`` is a list (C++ raises ``TypeError``, its
binding lacks the STL caster); ``start_server`` blocks until ``stop_server`` without
holding the GIL (C++ holds it, so no other Python thread runs again); a send over a pooled
connection the peer has closed is retried once on a new one (C++ returns 0 and loses it);
our server does not replay a connection's previous attachment to a request without one
(the C++ server does), and our client never gives it the chance (see ``_Communicator.send``).
"""

import ctypes
import logging
import socket
import struct
import threading
import time
import weakref

log = logging.getLogger(__name__)

MAGIC = 21
# magic, version, serialize_type, msg_type, seq_num, function_id, length, attach_length
REQ_HEADER = struct.Struct("<BBBBIIII")
# magic, version, err_code, msg_type, seq_num, length, attach_length
RESP_HEADER = struct.Struct("<BBBBIII")

# coro_rpc function ids: the first 4 bytes of MD5 of the qualified name, big-endian.
FUNC_DATA = 0x25764C34  # mooncake::RpcCommunicator::handleDataTransfer
FUNC_TENSOR = 0x01697AAB  # mooncake::RpcCommunicator::handleTensorTransfer
# struct_pack type hashes (MD5 of the type literal, low bit cleared) and literals.
STRING_HASH, STRING_LITERAL = 0x9DCFFA76, b"\x80\x0c"  # string_t, char_8_t
VOID_HASH, VOID_LITERAL = 0x8901CFEA, b"\xfa"  # monostate_t
ERR_INVALID_ARGUMENTS = 4  # coro_rpc::errc::invalid_rpc_arguments
ERR_NOT_REGISTERED = 11  # coro_rpc::errc::function_not_registered

ATTACHMENT_THRESHOLD = 1024  # data longer than this goes as the attachment
TENSOR_METADATA_SIZE = 4 + 4 + 4 * 8
DTYPE_NAMES = {1: "float16", 2: "float32", 3: "float64", 4: "int8", 5: "int16",
               6: "int32", 7: "int64", 8: "uint8", 9: "bool"}
# The C++ client pool retries a failed connect: about 4 s before send_data gives -1.
CONNECT_ATTEMPTS = 4
CONNECT_RETRY_WAIT = 1.0


def pack_string(data, type_info=True):
    """struct_pack of a single string argument, as the C++ wheel writes it (debug build:
    the full type literal is included)."""
    n = len(data)
    code = 0 if n < 1 << 8 else 1 if n < 1 << 16 else 2 if n < 1 << 32 else 3
    if not type_info and code == 0:
        return struct.pack("<I", STRING_HASH) + bytes([n]) + data
    meta = (code << 3) | (0x04 if type_info else 0)
    literal = STRING_LITERAL + b"\x00" if type_info else b""
    return (struct.pack("<IB", STRING_HASH | 1, meta) + literal
            + n.to_bytes(1 << code, "little") + bytes(data))


def unpack_string(body):
    """The string argument of a struct_pack body; ``ValueError`` if it is not one."""
    if len(body) < 4:
        raise ValueError("short struct_pack body")
    (h,) = struct.unpack_from("<I", body)
    if h >> 1 != STRING_HASH >> 1:
        raise ValueError(f"struct_pack type hash {h:#x} is not a string's")
    pos, meta = 4, 0
    if h & 1:
        if len(body) < 5:
            raise ValueError("short struct_pack body")
        meta, pos = body[4], 5
        if meta & 0x03:
            pos += 1 << (meta & 0x03)  # total-length field (2, 4 or 8 bytes)
        if meta & 0x04:
            end = body.find(b"\x00", pos)
            if end < 0 or body[pos:end] != STRING_LITERAL:
                raise ValueError("struct_pack type literal is not a string's")
            pos = end + 1
    width = 1 << ((meta >> 3) & 0x03)
    if len(body) < pos + width:
        raise ValueError("short struct_pack body")
    n = int.from_bytes(body[pos:pos + width], "little")
    pos += width
    if len(body) != pos + n:
        raise ValueError("struct_pack string length does not match the body")
    return body[pos:]


VOID_BODY = struct.pack("<IB", VOID_HASH | 1, 0x04) + VOID_LITERAL + b"\x00"


def _recv_exact(sock, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            raise ConnectionError("connection closed by peer")
        got += k
    return bytes(buf)


def _split_address(address):
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad address {address!r}")
    return host.strip("[]"), int(port)


def _size_t(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{name} must be a non-negative int, not {value!r}")
    return value


def _check_str(name, value):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")


def _bytes_of(data):
    if not isinstance(data, bytes):
        raise TypeError(f"Object of type '{type(data).__name__}' is not an instance of 'bytes'")
    return data


class ReceivedData:
    """A received payload (exported like the C++ wheel's; the callbacks get dicts)."""

    __slots__ = ("_source", "_data")

    def __init__(self, *args, **kwargs):
        raise TypeError("mooncake.engine.ReceivedData: No constructor defined!")

    @classmethod
    def _make(cls, source, data):
        self = object.__new__(cls)
        self._source, self._data = source, bytes(data)
        return self

    source_address = property(lambda self: self._source)
    data_size = property(lambda self: 0)  # never set by the C++ wheel

    def get_bytes(self):
        return self._data

    def get_memory_view(self):
        return memoryview(self._data)


class ReceivedTensor:
    """What the tensor callback gets: the whole payload (header included), the shape and
    dtype decoded from the header, and ``total_bytes`` 0 (the C++ wheel never sets it)."""

    __slots__ = ("_source", "_data", "_shape", "_dtype")

    def __init__(self, *args, **kwargs):
        raise TypeError("mooncake.engine.ReceivedTensor: No constructor defined!")

    @classmethod
    def _make(cls, source, data, shape, dtype):
        self = object.__new__(cls)
        self._source, self._data, self._shape, self._dtype = source, bytes(data), shape, dtype
        return self

    source_address = property(lambda self: self._source)
    shape = property(lambda self: list(self._shape))
    dtype = property(lambda self: self._dtype)
    total_bytes = property(lambda self: 0)

    def get_data_size(self):
        return len(self._data)

    def get_data_as_bytes(self):
        return self._data

    def get_memory_view(self):
        return memoryview(self._data)


class _Connection:
    def __init__(self, sock):
        self.sock, self.seq, self.dirty = sock, 0, False

    def call(self, fid, body, attachment, timeout):
        """One request and its response; returns (err_code, body, attachment)."""
        seq, self.seq = self.seq, (self.seq + 1) & 0xFFFFFFFF
        self.sock.settimeout(timeout or None)
        head = REQ_HEADER.pack(MAGIC, 0, 0, 0, seq, fid, len(body), len(attachment))
        if attachment:
            self.dirty = True
            self.sock.sendall(head + body)
            self.sock.sendall(attachment)
        else:
            self.sock.sendall(head + body)
        magic, _, err, _, rseq, length, attach = RESP_HEADER.unpack(
            _recv_exact(self.sock, RESP_HEADER.size))
        if magic != MAGIC or rseq != seq:
            raise ConnectionError(f"bad response header (magic {magic}, seq {rseq} for {seq})")
        rest = _recv_exact(self.sock, length + attach)
        return err, rest[:length], rest[length:]

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class _Server:
    """A coro_rpc server with the two handlers, one thread per connection."""

    def __init__(self, address, timeout, on_data):
        self.address, self.timeout, self.on_data = address, timeout, on_data
        self.listener = None
        self.conns = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.used = False

    def start(self):
        if self.used:
            return False
        try:
            host, port = _split_address(self.address)
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
        except (OSError, ValueError) as exc:
            log.error("failed to start rpc server on %s: %s", self.address, exc)
            return False
        self.used, self.listener = True, sock
        threading.Thread(target=self._accept, name="mooncake-rpc-accept", daemon=True).start()
        return True

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                break
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                if self.stopped.is_set():
                    conn.close()
                    break
                self.conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="mooncake-rpc-conn",
                             daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(self.timeout or None)
            while not self.stopped.is_set():
                head = _recv_exact(conn, REQ_HEADER.size)
                magic, version, ser, _, seq, fid, length, attach = REQ_HEADER.unpack(head)
                if magic != MAGIC or version > 0:
                    break  # coro_rpc closes the connection on a protocol error
                body = _recv_exact(conn, length)
                attachment = _recv_exact(conn, attach)
                err, rbody, rattach = self._dispatch(ser, fid, body, attachment)
                conn.sendall(RESP_HEADER.pack(MAGIC, 0, err, 0, seq, len(rbody), len(rattach))
                             + rbody + rattach)
        except (OSError, ConnectionError, socket.timeout):
            pass
        finally:
            with self.lock:
                self.conns.discard(conn)
            conn.close()

    def _dispatch(self, ser, fid, body, attachment):
        if fid == FUNC_DATA:
            try:
                if ser != 0:
                    raise ValueError("serialize type is not struct_pack")
                data = unpack_string(body)
            except ValueError:
                return ERR_INVALID_ARGUMENTS, pack_string(b"invalid rpc arg"), b""
            self.on_data("", attachment if attachment else data)
            return 0, VOID_BODY, b"ok" if attachment else b""
        if fid == FUNC_TENSOR:
            self.on_data("", attachment)
            return 0, VOID_BODY, attachment  # the C++ server echoes the attachment
        return ERR_NOT_REGISTERED, pack_string(b"the rpc function not registered"), b""

    def stop(self):
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self.listener is not None:
            try:
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Communicator:
    """What ``initialize`` makes: a client pool, and a server when given an address."""

    def __init__(self, listen_address, timeout_seconds, pool_size):
        self.timeout = timeout_seconds
        self.pool_size = pool_size if pool_size > 0 else 100
        self.pools = {}
        self.pools_lock = threading.Lock()
        self.on_data = None
        self.server = None
        if listen_address:
            self.server = _Server(listen_address, timeout_seconds, self._incoming)
        self.started = False

    def _incoming(self, source, data):
        callback = self.on_data
        if callback is not None:
            callback(source, data)

    def start(self):
        if self.server is None or self.started:
            return False
        self.started = self.server.start()
        return self.started

    def stop(self):
        if self.started:
            self.server.stop()
            self.started = False

    def _connect(self, target):
        host, port = _split_address(target)
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                sock = socket.create_connection((host, port), timeout=self.timeout or None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return _Connection(sock)
            except OSError as exc:
                if attempt + 1 == CONNECT_ATTEMPTS:
                    raise ConnectionError(f"connect to {target}: {exc}") from exc
                time.sleep(CONNECT_RETRY_WAIT)

    def _take(self, target, dirty_ok):
        with self.pools_lock:
            clean, dirty = self.pools.setdefault(target, ([], []))
            if dirty_ok and dirty:
                return dirty.pop()
            return clean.pop() if clean else None

    def _give(self, target, conn):
        with self.pools_lock:
            clean, dirty = self.pools.setdefault(target, ([], []))
            if len(clean) + len(dirty) < self.pool_size:
                (dirty if conn.dirty else clean).append(conn)
                return
        conn.close()

    def send(self, target, fid, body, attachment):
        """0 once a connection is had (a failed call is only logged, as in the C++ wheel),
        -1 when none can be.

        The C++ server keeps a connection's last request attachment and hands it again to
        a later request that has none. So a connection that has carried an attachment
        ("dirty") is reused only for requests with one."""
        conn = self._take(target, dirty_ok=bool(attachment))
        fresh = conn is None
        try:
            if fresh:
                conn = self._connect(target)
        except (ConnectionError, ValueError) as exc:
            log.error("rpc send request to %s failed: %s", target, exc)
            return -1
        while True:
            try:
                err, rbody, _ = conn.call(fid, body, attachment, self.timeout)
            except socket.timeout as exc:
                conn.close()
                log.error("rpc call to %s failed: %s", target, exc)
                return 0
            except (OSError, ConnectionError) as exc:
                conn.close()
                if not fresh:  # a cached connection the peer has closed: one fresh try
                    try:
                        conn, fresh = self._connect(target), True
                    except (ConnectionError, ValueError):
                        log.error("rpc call to %s failed: %s", target, exc)
                        return -1
                    continue
                log.error("rpc call to %s failed: %s", target, exc)
                return 0
            if err:
                try:
                    msg = unpack_string(rbody).decode(errors="replace")
                except ValueError:
                    msg = ""
                log.error("rpc call to %s failed: error %d %s", target, err, msg)
            break
        self._give(target, conn)
        return 0

    def send_data(self, target, data):
        if len(data) > ATTACHMENT_THRESHOLD:
            return self.send(target, FUNC_DATA, pack_string(b""), data)
        return self.send(target, FUNC_DATA, pack_string(data), b"")

    def send_tensor(self, target, payload):
        return self.send(target, FUNC_TENSOR, b"", payload)

    def close(self):
        self.stop()
        with self.pools_lock:
            conns = [c for pair in self.pools.values() for idle in pair for c in idle]
            self.pools.clear()
        for conn in conns:
            conn.close()


def _tensor_payload(tensor, check):
    """The bytes ``send_tensor`` sends: ``numel * element_size`` bytes at ``data_ptr``
    (CPU memory; the C++ wheel reads the same range, contiguous or not)."""
    if check and not all(hasattr(tensor, a) for a in
                         ("data_ptr", "numel", "element_size", "shape", "dtype")):
        raise ValueError("input is not a valid tensor object (missing required attributes)")
    ptr = int(tensor.data_ptr())
    size = int(tensor.numel()) * int(tensor.element_size())
    shape = [int(d) for d in tuple(tensor.shape)]
    if any(d < 0 for d in shape) or ptr < 0 or size < 0:
        raise ValueError("bad tensor shape or size")
    str(tensor.dtype)
    return ctypes.string_at(ptr, size) if size else b""


def _weak_handler(interface):
    # The server's threads must not keep the interface alive: dropping the last reference
    # stops the server, as destroying the C++ object does.
    ref = weakref.ref(interface)

    def handler(source, data):
        target = ref()
        if target is not None:
            target._incoming(source, data)

    return handler


class RpcInterface:
    """A coro_rpc endpoint: ``initialize`` (optionally with a listen address), a callback
    for what arrives, and ``send_data``/``send_tensor`` to ``"host:port"`` peers."""

    def __init__(self):
        self._comm = None
        self._data_callback = None
        self._tensor_callback = None

    def initialize(self, listen_address="", thread_count=0, timeout_seconds=30,
                   pool_size=100):
        _check_str("listen_address", listen_address)
        _size_t("thread_count", thread_count)
        _size_t("timeout_seconds", timeout_seconds)
        _size_t("pool_size", pool_size)
        if self._comm is not None:
            self._comm.close()  # the C++ wheel destroys the old communicator
        self._comm = _Communicator(listen_address, timeout_seconds, pool_size)
        return True

    def initialize_client(self, pool_size=100, timeout_seconds=30):
        return self.initialize("", 0, timeout_seconds, pool_size)

    def initialize_server(self, listen_address, thread_count=8, timeout_seconds=30):
        return self.initialize(listen_address, thread_count, timeout_seconds, 100)

    def start_server(self):
        """Serves until ``stop_server`` (from another thread), then returns True."""
        comm = self._comm
        if comm is None or not comm.start():
            return False
        comm.server.stopped.wait()
        return True

    def start_server_async(self):
        return self._comm is not None and self._comm.start()

    def stop_server(self):
        if self._comm is not None:
            self._comm.stop()

    def send_data(self, target_address, data):
        _check_str("target_address", target_address)
        if self._comm is None:
            return -1
        return self._comm.send_data(target_address, _bytes_of(data))

    def send_tensor(self, target_address, tensor):
        _check_str("target_address", target_address)
        if self._comm is None:
            return -1
        try:
            payload = _tensor_payload(tensor, check=True)
        except Exception as exc:  # noqa: BLE001 - the C++ wheel returns -1 for any error
            log.error("send tensor error: %s", exc)
            return -1
        return self._comm.send_tensor(target_address, payload)

    def _send_async(self, loop, what, send):
        future = loop.create_future()
        if self._comm is None:
            future.set_exception(RuntimeError("Communicator not initialized"))
            return future

        def settle(result, error):
            if future.done():
                return
            if error is not None:
                future.set_exception(RuntimeError(f"Send {what} error: {error}"))
            elif result >= 0:
                future.set_result(result)
            else:
                future.set_exception(RuntimeError(f"Send {what} failed"))

        def run():
            try:
                result, error = send(), None
            except Exception as exc:  # noqa: BLE001 - reported through the future
                result, error = -1, exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:
                pass  # the loop is closed

        threading.Thread(target=run, name="mooncake-rpc-send", daemon=True).start()
        return future

    def send_data_async(self, target_address, data, loop):
        """An ``asyncio.Future`` on ``loop``: 0, or ``RuntimeError("Send data failed")``."""
        _check_str("target_address", target_address)
        comm = self._comm
        if comm is not None:
            _bytes_of(data)
        return self._send_async(loop, "data", lambda: comm.send_data(target_address, data))

    def send_tensor_async(self, target_address, tensor, loop):
        """An ``asyncio.Future`` on ``loop``: 0, or ``RuntimeError("Send tensor failed")``.
        The tensor is read at once; a missing attribute raises ``AttributeError`` here."""
        _check_str("target_address", target_address)
        comm = self._comm
        payload = _tensor_payload(tensor, check=False) if comm is not None else b""
        return self._send_async(loop, "tensor", lambda: comm.send_tensor(target_address, payload))

    def set_data_receive_callback(self, callback, /):
        """``callback({"source": "", "data": bytes})`` on the server's thread, before the
        reply is sent. Applies to the current ``initialize``; a later one drops it."""
        if not callable(callback):
            raise TypeError("set_data_receive_callback(): the callback must be callable")
        self._data_callback = callback
        if self._comm is not None:
            self._comm.on_data = _weak_handler(self)

    def set_tensor_receive_callback(self, callback, /):
        """``callback(ReceivedTensor)`` for payloads that look like a tensor header. Such
        payloads reach it only once a data callback is set (as in the C++ wheel)."""
        if not callable(callback):
            raise TypeError("set_tensor_receive_callback(): the callback must be callable")
        self._tensor_callback = callback

    def _incoming(self, source, data):
        """The C++ wheel's routing: at least 40 bytes whose first two little-endian u32 are
        a dtype id 1..9 and ndim <= 4 are taken for a tensor header (i64 dims follow)."""
        if len(data) >= TENSOR_METADATA_SIZE:
            dtype, ndim = struct.unpack_from("<II", data)
            if 0 < dtype <= 9 and ndim <= 4:
                shape = []
                for dim in struct.unpack_from(f"<{ndim}q", data, 8):
                    if 0 < dim < 1 << 48:
                        shape.append(dim)
                    elif dim > 0:
                        log.warning("tensor dimension too large: %d", dim)
                        return
                callback = self._tensor_callback
                if callback is None:
                    log.warning("no tensor receive callback set")
                    return
                try:
                    callback(ReceivedTensor._make(source, data, shape, DTYPE_NAMES[dtype]))
                except Exception:  # noqa: BLE001 - logged, as the C++ wheel does
                    log.exception("error in tensor receive callback")
                return
        callback = self._data_callback
        if callback is None:
            return
        try:
            callback({"source": source, "data": bytes(data)})
        except Exception:  # noqa: BLE001 - logged, as the C++ wheel does
            log.exception("error in data receive callback")

    def __del__(self):
        comm = getattr(self, "_comm", None)
        if comm is not None:
            comm.close()


CoroRPCInterface = RpcInterface


def create_rpc_client(local_rank=0, world_size=1):
    """An ``RpcInterface`` initialised as a client (pool size 10)."""
    _size_t("local_rank", local_rank)
    _size_t("world_size", world_size)
    rpc = RpcInterface()
    rpc.initialize("", 0, 30, 10)
    return rpc


def create_rpc_server(local_rank=0, world_size=1):
    """An ``RpcInterface`` initialised to listen on ``0.0.0.0:8080`` (not started)."""
    _size_t("local_rank", local_rank)
    _size_t("world_size", world_size)
    rpc = RpcInterface()
    rpc.initialize("0.0.0.0:8080", 0, 30, 10)
    return rpc


for _cls in (RpcInterface, ReceivedData, ReceivedTensor):
    _cls.__module__ = "mooncake.engine"
for _fn in (create_rpc_client, create_rpc_server):
    _fn.__module__ = "mooncake.engine"
del _cls, _fn
