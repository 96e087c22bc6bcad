"""mooncake.engine.RpcInterface (python-api-2.md §9; docs/dev/rpc-interface.md): ours to
ours, and frame by frame against bytes captured from the C++ wheel 0.3.13.post1.

``test_interop_with_cpp_wheel`` also talks to the C++ wheel itself, both directions; it
runs only when MOONCAKE_CPP_PYTHON names a Python with that wheel installed (e.g.
target/cpp-venv/bin/python), so not in CI."""

import asyncio
import ctypes
import hashlib
import os
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import free_port
from mooncake import _rpc
from mooncake import engine
from mooncake.engine import ReceivedData, ReceivedTensor, RpcInterface

H = bytes.fromhex

# Frames captured between two C++ wheel endpoints (client -> server, server -> client).
CPP_REQ_HELLO = H("1500000000000000344c76250e0000000000000077facf9d04800c000568656c6c6f")
CPP_REQ_EMPTY = H("1500000001000000344c7625090000000000000077facf9d04800c0000")
CPP_REQ_300_PREFIX = H("1500000002000000344c7625360100000000000077facf9d0c800c002c01")
CPP_REQ_1025_HEAD = H("1500000004000000344c7625090000000104000077facf9d04800c0000")
CPP_REQ_TENSOR_HEAD = H("1500000006000000ab7a69010000000030000000")
CPP_RESP_VOID_SEQ0 = H("15000000000000000700000000000000ebcf018904fa00")
CPP_RESP_OK_SEQ4 = H("15000000040000000700000002000000ebcf018904fa006f6b")
CPP_RESP_NOT_REGISTERED_SEQ7 = (H("15000b00070000002800000000000000")
                                + H("77facf9d04800c001f") + b"the rpc function not registered")
CPP_RESP_INVALID_ARG_SEQ1 = (H("15000400010000001800000000000000")
                             + H("77facf9d04800c000f") + b"invalid rpc arg")


@pytest.fixture(autouse=True)
def fast_connect_failure(monkeypatch):
    monkeypatch.setattr(_rpc, "CONNECT_RETRY_WAIT", 0.01)


class Server:
    def __init__(self, **kwargs):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.rpc = RpcInterface()
        assert self.rpc.initialize_server(self.addr, **kwargs) is True
        self.data, self.tensors = [], []
        self.rpc.set_data_receive_callback(self.data.append)
        assert self.rpc.start_server_async() is True

    def stop(self):
        self.rpc.stop_server()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def client():
    c = RpcInterface()
    assert c.initialize_client() is True
    return c


def exchange(port, frames, nread):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"".join(frames))
        got = b""
        while len(got) < nread:
            chunk = s.recv(nread - len(got))
            assert chunk, f"connection closed after {got.hex()}"
            got += chunk
        return got


def test_exports_match_the_cpp_wheel():
    for name in ("RpcInterface", "CoroRPCInterface", "ReceivedData", "ReceivedTensor",
                 "create_rpc_client", "create_rpc_server"):
        assert name in engine.__all__ and hasattr(engine, name)
    assert engine.CoroRPCInterface is engine.RpcInterface
    assert repr(RpcInterface).startswith("<class 'mooncake.engine.RpcInterface'")
    with pytest.raises(TypeError, match="ReceivedData: No constructor defined!"):
        ReceivedData()
    with pytest.raises(TypeError, match="ReceivedTensor: No constructor defined!"):
        ReceivedTensor()


def test_struct_pack_strings_are_byte_identical():
    assert _rpc.pack_string(b"hello") == H("77facf9d04800c000568656c6c6f")
    assert _rpc.pack_string(b"x" * 300)[:10] == H("77facf9d0c800c002c01")
    assert _rpc.pack_string(b"y" * 1024)[:10] == H("77facf9d0c800c000004")
    assert _rpc.VOID_BODY == H("ebcf018904fa00")
    for data in (b"", b"hi", b"z" * 300, b"w" * 70000):
        assert _rpc.unpack_string(_rpc.pack_string(data)) == data
        assert _rpc.unpack_string(_rpc.pack_string(data, type_info=False)) == data
    assert _rpc.unpack_string(H("76facf9d") + b"\x02hi") == b"hi"  # release build form
    for bad in (b"", H("77fa"), H("00000000") + b"\x02hi", H("76facf9d") + b"\x09hi"):
        with pytest.raises(ValueError):
            _rpc.unpack_string(bad)


def test_function_ids_are_md5_of_the_handler_names():
    def fid(name):
        return int.from_bytes(hashlib.md5(name.encode()).digest()[:4], "big")

    assert fid("mooncake::RpcCommunicator::handleDataTransfer") == _rpc.FUNC_DATA
    assert fid("mooncake::RpcCommunicator::handleTensorTransfer") == _rpc.FUNC_TENSOR


def test_our_server_answers_cpp_frames_with_cpp_bytes(server):
    assert exchange(server.port, [CPP_REQ_HELLO], 23) == CPP_RESP_VOID_SEQ0
    big = CPP_REQ_1025_HEAD + b"z" * 1025
    assert exchange(server.port, [big], 25) == CPP_RESP_OK_SEQ4
    tensor = CPP_REQ_TENSOR_HEAD + bytes(range(48))
    assert exchange(server.port, [tensor], 71) == (
        H("15000000060000000700000030000000ebcf018904fa00") + bytes(range(48)))
    unknown = struct.pack("<BBBBIIII", 21, 0, 0, 0, 7, 0x12345678, 10, 0) + H(
        "77facf9d04800c00") + b"\x02hi"
    assert exchange(server.port, [unknown], len(CPP_RESP_NOT_REGISTERED_SEQ7)) == \
        CPP_RESP_NOT_REGISTERED_SEQ7
    bad_arg = struct.pack("<BBBBIIII", 21, 0, 0, 0, 1, _rpc.FUNC_DATA, 0, 0)
    assert exchange(server.port, [bad_arg], len(CPP_RESP_INVALID_ARG_SEQ1)) == \
        CPP_RESP_INVALID_ARG_SEQ1
    # Pipelined requests on one connection are answered in order, by sequence number.
    frames = [struct.pack("<BBBBIIII", 21, 0, 0, 0, 100 + i, _rpc.FUNC_DATA, 12, 0)
              + H("77facf9d04800c0003") + b"p%02d" % i for i in range(3)]
    got = exchange(server.port, frames, 69)
    assert [struct.unpack_from("<I", got, 23 * i + 4)[0] for i in range(3)] == [100, 101, 102]
    time.sleep(0.2)
    assert [d["data"] for d in server.data] == [
        b"hello", b"z" * 1025, bytes(range(48)), b"p00", b"p01", b"p02"]
    assert all(d["source"] == "" for d in server.data)


def test_a_bad_magic_closes_the_connection(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"\x16" + bytes(19))
        assert s.recv(100) == b""


class Recorder:
    """A raw server that records each request and answers like the C++ server."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.frames, self.conns = [], []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn:
            while True:
                try:
                    head = _rpc._recv_exact(conn, 20)
                except ConnectionError:
                    return
                _, _, _, _, seq, fid, length, attach = _rpc.REQ_HEADER.unpack(head)
                frame = head + _rpc._recv_exact(conn, length + attach)
                self.frames.append(frame)
                self.conns.append(conn.getpeername())
                conn.sendall(_rpc.RESP_HEADER.pack(21, 0, 0, 0, seq, 7, 0) + _rpc.VOID_BODY)


def test_our_client_sends_cpp_frames(client):
    rec = Recorder()
    assert client.send_data(rec.addr, b"hello") == 0
    assert client.send_data(rec.addr, b"") == 0
    assert client.send_data(rec.addr, b"x" * 300) == 0
    assert client.send_data(rec.addr, b"y" * 1024) == 0
    assert client.send_data(rec.addr, b"z" * 1025) == 0
    buf = (ctypes.c_float * 12)(*range(12))
    assert client.send_tensor(rec.addr, FakeTensor(buf, (3, 4), "torch.float32")) == 0
    f = rec.frames
    assert len(set(rec.conns)) == 1
    assert f[0] == CPP_REQ_HELLO
    assert f[1] == CPP_REQ_EMPTY
    assert f[2] == CPP_REQ_300_PREFIX + b"x" * 300
    assert f[3][:30] == H("1500000003000000344c76250a0400000000000077facf9d0c800c000004")
    assert f[4] == CPP_REQ_1025_HEAD + b"z" * 1025
    # The capture's tensor frame had sequence number 6; here it is the sixth call, 5.
    head = CPP_REQ_TENSOR_HEAD[:4] + struct.pack("<I", 5) + CPP_REQ_TENSOR_HEAD[8:]
    assert f[5] == head + bytes(buf)


def test_a_connection_that_carried_an_attachment_only_carries_attachments(client):
    rec = Recorder()
    assert client.send_data(rec.addr, b"z" * 2000) == 0
    assert client.send_data(rec.addr, b"small") == 0
    assert client.send_data(rec.addr, b"z" * 2000) == 0
    assert client.send_data(rec.addr, b"small") == 0
    first, second, third, fourth = rec.conns
    assert first == third and second == fourth and first != second


def test_our_server_does_not_replay_an_earlier_attachment(server):
    big = CPP_REQ_1025_HEAD + b"z" * 1025
    got = exchange(server.port, [big, CPP_REQ_HELLO], 25 + 23)
    assert got[25:] == CPP_RESP_VOID_SEQ0
    time.sleep(0.1)
    assert [d["data"] for d in server.data] == [b"z" * 1025, b"hello"]


class FakeTensor:
    """What send_tensor reads from a torch tensor, over a ctypes buffer."""

    def __init__(self, buf, shape, dtype):
        self.buf, self.shape, self.dtype = buf, shape, dtype

    def data_ptr(self):
        return ctypes.addressof(self.buf)

    def numel(self):
        return len(self.buf)

    def element_size(self):
        return ctypes.sizeof(self.buf) // len(self.buf)


def test_send_data_ours_to_ours(server, client):
    payloads = [b"hello", b"", b"a" * 1024, b"b" * 1025, os.urandom(3 << 20)]
    for p in payloads:
        assert client.send_data(server.addr, p) == 0
    # The callback runs before the reply, so everything has arrived.
    assert [d["data"] for d in server.data] == payloads
    with pytest.raises(TypeError, match="Object of type 'str' is not an instance of 'bytes'"):
        client.send_data(server.addr, "hello")
    with pytest.raises(TypeError):
        client.send_data(server.addr, bytearray(b"x"))


def test_concurrent_senders_share_the_server(server):
    clients = [RpcInterface() for _ in range(4)]
    results = []

    def run(c, i):
        c.initialize_client()
        results.extend(c.send_data(server.addr, b"%d-%d" % (i, k)) for k in range(20))

    threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0] * 80
    assert sorted(d["data"] for d in server.data) == sorted(
        b"%d-%d" % (i, k) for i in range(4) for k in range(20))


def test_send_tensor_delivers_the_raw_bytes(server, client):
    buf = (ctypes.c_float * 12)(*range(12))
    assert client.send_tensor(server.addr, FakeTensor(buf, (3, 4), "torch.float32")) == 0
    assert server.data == [{"source": "", "data": bytes(buf)}]
    assert client.send_tensor(server.addr, None) == -1
    assert client.send_tensor(server.addr, object()) == -1


def tensor_header(dtype, dims, body=b""):
    return struct.pack("<II4q", dtype, len(dims), *(list(dims) + [0] * (4 - len(dims)))) + body


def test_tensor_looking_payloads_go_to_the_tensor_callback(server, client):
    payload = tensor_header(2, [3, 4], bytes(48))
    assert client.send_data(server.addr, payload) == 0
    assert server.data == []  # no tensor callback: dropped, as in the C++ wheel
    got = []
    server.rpc.set_tensor_receive_callback(got.append)
    assert client.send_data(server.addr, payload) == 0
    (t,) = got
    assert (t.source_address, t.dtype, t.shape, t.total_bytes) == ("", "float32", [3, 4], 0)
    assert t.get_data_size() == len(payload) and t.get_data_as_bytes() == payload
    assert bytes(t.get_memory_view()) == payload and t.get_memory_view().readonly
    # Not tensor-like: dtype 0 or 10, ndim 5, or shorter than 40 bytes.
    for other in (tensor_header(0, [1]), tensor_header(10, [1]),
                  struct.pack("<II", 2, 5) + bytes(40), tensor_header(2, [1])[:39]):
        assert client.send_data(server.addr, other) == 0
    assert [d["data"] for d in server.data][-4:] == [
        tensor_header(0, [1]), tensor_header(10, [1]), struct.pack("<II", 2, 5) + bytes(40),
        tensor_header(2, [1])[:39]]
    assert len(got) == 1


def test_callbacks_follow_the_cpp_wiring(client):
    s = Server()
    try:
        # A tensor callback alone is never reached; a raising callback is only logged.
        quiet, quiet_addr = RpcInterface(), f"127.0.0.1:{free_port()}"
        quiet.initialize_server(quiet_addr)
        assert quiet.start_server_async()
        tensors = []
        quiet.set_tensor_receive_callback(tensors.append)
        assert client.send_data(quiet_addr, tensor_header(2, [1], bytes(4))) == 0
        assert tensors == []
        quiet.stop_server()

        s.rpc.set_data_receive_callback(lambda d: 1 / 0)
        assert client.send_data(s.addr, b"boom") == 0
        # Re-initialising drops the server and the callback.
        port = free_port()
        assert s.rpc.initialize_server(f"127.0.0.1:{port}")
        assert s.rpc.start_server_async()
        seen = []
        with pytest.raises(TypeError):
            s.rpc.set_data_receive_callback(None)
        with pytest.raises(TypeError):
            s.rpc.set_data_receive_callback(callback=seen.append)
        assert client.send_data(f"127.0.0.1:{port}", b"nobody") == 0
        s.rpc.set_data_receive_callback(seen.append)
        assert client.send_data(f"127.0.0.1:{port}", b"seen") == 0
        assert seen == [{"source": "", "data": b"seen"}]
    finally:
        s.stop()


def test_uninitialised_and_failing_calls():
    r = RpcInterface()
    assert r.send_data("127.0.0.1:1", b"x") == -1
    assert r.send_data("127.0.0.1:1", "not bytes either") == -1
    assert r.send_tensor("127.0.0.1:1", None) == -1
    assert r.start_server() is False and r.start_server_async() is False
    assert r.stop_server() is None
    r.set_data_receive_callback(print)  # kept, but not wired to a later initialize
    c = RpcInterface()
    assert c.initialize() is True
    assert c.start_server_async() is False  # a client has no server
    assert c.send_data(f"127.0.0.1:{free_port()}", b"x") == -1  # refused
    assert c.send_data("nohost.invalid:1", b"x") == -1
    assert c.send_data("no-port", b"x") == -1
    with pytest.raises(TypeError):
        c.send_data(1, b"x")
    with pytest.raises(TypeError):
        c.initialize(thread_count=-1)


def test_server_lifecycle():
    port = free_port()
    s = RpcInterface()
    s.initialize(f"127.0.0.1:{port}")
    assert s.start_server_async() is True
    assert s.start_server_async() is False  # already started
    other = RpcInterface()
    other.initialize(f"127.0.0.1:{port}")
    assert other.start_server_async() is False  # port in use
    bad = RpcInterface()
    bad.initialize("garbage")
    assert bad.start_server_async() is False
    s.stop_server()
    s.stop_server()
    assert s.start_server_async() is False  # a stopped server does not restart
    # start_server blocks until stop_server, then returns True.
    b = RpcInterface()
    b.initialize_server(f"127.0.0.1:{free_port()}")
    out = []
    t = threading.Thread(target=lambda: out.append(b.start_server()))
    t.start()
    time.sleep(0.2)
    assert t.is_alive()
    b.stop_server()
    t.join(5)
    assert out == [True]


def test_a_stopped_server_is_reported_and_a_restarted_one_reached(client):
    s = Server()
    assert client.send_data(s.addr, b"one") == 0
    s.stop()
    time.sleep(0.1)
    assert client.send_data(s.addr, b"two") == -1  # C++ reports 0 on its dead connection
    again = RpcInterface()
    again.initialize_server(s.addr)
    got = []
    again.set_data_receive_callback(got.append)
    assert again.start_server_async()
    try:
        assert client.send_data(s.addr, b"three") == 0
        assert got == [{"source": "", "data": b"three"}]
    finally:
        again.stop_server()


def test_idle_connections_time_out_and_the_client_reconnects(client):
    s = Server(timeout_seconds=1)
    try:
        assert client.send_data(s.addr, b"a") == 0
        time.sleep(1.5)
        assert client.send_data(s.addr, b"b") == 0
        assert [d["data"] for d in s.data] == [b"a", b"b"]
    finally:
        s.stop()


def test_async_sends(server, client):
    async def main():
        loop = asyncio.get_running_loop()
        assert await client.send_data_async(server.addr, b"async", loop) == 0
        buf = (ctypes.c_int8 * 3)(1, 2, 3)
        assert await client.send_tensor_async(server.addr, FakeTensor(buf, (3,), "x"), loop) == 0
        with pytest.raises(RuntimeError, match="^Send data failed$"):
            await client.send_data_async(f"127.0.0.1:{free_port()}", b"x", loop)
        with pytest.raises(RuntimeError, match="^Communicator not initialized$"):
            await RpcInterface().send_data_async(server.addr, b"x", loop)
        with pytest.raises(AttributeError):
            client.send_tensor_async(server.addr, None, loop)

    asyncio.run(main())
    assert [d["data"] for d in server.data] == [b"async", b"\x01\x02\x03"]


def test_factories():
    c = engine.create_rpc_client()
    assert isinstance(c, RpcInterface) and c.start_server_async() is False
    s = engine.create_rpc_server(local_rank=0, world_size=1)
    assert s._comm.server.address == "0.0.0.0:8080"
    with pytest.raises(TypeError):
        engine.create_rpc_client(-1)


CPP_PEER = r"""
import hashlib, sys, mooncake.engine as e
mode, addr = sys.argv[1], sys.argv[2]
if mode == "server":
    r = e.RpcInterface(); r.initialize_server(addr)
    r.set_data_receive_callback(
        lambda d: print("DATA", len(d["data"]), hashlib.md5(d["data"]).hexdigest(), flush=True))
    r.set_tensor_receive_callback(
        lambda t: print("TENSOR", t.dtype, t.get_data_size(), flush=True))
    print("READY", r.start_server_async(), flush=True)
    sys.stdin.readline()
else:
    import torch
    c = e.RpcInterface(); c.initialize_client()
    for p in (b"hello", b"", b"x" * 1024, b"y" * 1025, b"w" * 70000):
        print("SENT", c.send_data(addr, p), flush=True)
    print("SENT", c.send_tensor(addr, torch.arange(12, dtype=torch.float32)), flush=True)
"""


@pytest.mark.skipif(not os.environ.get("MOONCAKE_CPP_PYTHON"),
                    reason="set MOONCAKE_CPP_PYTHON to a Python with the C++ wheel")
def test_interop_with_cpp_wheel(server, client):
    py = os.environ["MOONCAKE_CPP_PYTHON"]
    env = dict(os.environ, MC_TCP_BIND_ADDRESS="127.0.0.1", GLOG_minloglevel="2")
    env.pop("PYTHONPATH", None)  # the C++ wheel's own mooncake package, not ours
    # C++ client -> our server.
    out = subprocess.run([py, "-c", CPP_PEER, "client", server.addr], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["SENT", "0"] * 6, out.stderr
    assert [d["data"] for d in server.data] == [
        b"hello", b"", b"x" * 1024, b"y" * 1025, b"w" * 70000,
        struct.pack("<12f", *range(12))]
    # Our client -> C++ server.
    addr = f"127.0.0.1:{free_port()}"
    peer = subprocess.Popen([py, "-c", CPP_PEER, "server", addr], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert peer.stdout.readline().split() == ["READY", "True"]
        md5 = lambda b: hashlib.md5(b).hexdigest()  # noqa: E731
        for p in [b"hello", b"", b"x" * 1024, b"y" * 1025, b"w" * 70000]:
            assert client.send_data(addr, p) == 0
            assert peer.stdout.readline().split() == ["DATA", str(len(p)), md5(p)]
        assert client.send_data(addr, tensor_header(2, [3, 4], bytes(48))) == 0
        assert peer.stdout.readline().split() == ["TENSOR", "float32", "88"]
        buf = (ctypes.c_int8 * 3)(1, 2, 3)
        assert client.send_tensor(addr, FakeTensor(buf, (3,), "torch.int8")) == 0
        assert peer.stdout.readline().split() == ["DATA", "3", md5(b"\x01\x02\x03")]
    finally:
        peer.stdin.close()
        peer.wait(10)
