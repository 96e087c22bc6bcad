"""mooncake.engine.TransferEngine (python-api-2.md §9) with real engines on 127.0.0.1: two
engines publish segments through the HTTP metadata server of the `cluster` fixture, or
find each other by name in P2PHANDSHAKE mode, and move bytes over TCP."""

import ctypes
import json
import os
import socket
import struct
import threading

import pytest

import mooncake.engine as engine_module
from conftest import MIB, free_port
from mooncake.engine import TransferEngine, TransferNotify, TransferOpcode


def refused_port():
    """A port nothing listens on: bound, then closed."""
    return free_port()


def http_engine(cluster):
    e = TransferEngine()
    name = f"127.0.0.1:{free_port()}"
    assert e.initialize(name, cluster.metadata, "tcp", "") == 0
    return e, name


def p2p_engine():
    """A P2PHANDSHAKE engine and its segment name, f"{host}:{get_rpc_port()}"."""
    e = TransferEngine()
    assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    return e, f"127.0.0.1:{e.get_rpc_port()}"


@pytest.fixture
def engines(cluster):
    pair = [http_engine(cluster) for _ in range(2)]
    yield pair
    for e, _ in pair:
        assert e.shutdown() == 0


@pytest.fixture
def p2p_engines():
    pair = [p2p_engine() for _ in range(2)]
    yield pair
    for e, _ in pair:
        assert e.shutdown() == 0


class FakePeer:
    """A handshake port that answers one request with `reply` (raw bytes)."""

    def __init__(self, reply):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, args=(reply,), daemon=True)
        self.thread.start()

    def _serve(self, reply):
        conn, _ = self.sock.accept()
        with conn:
            prefix = conn.recv(9, socket.MSG_WAITALL)
            (length,) = struct.unpack("<Q", prefix[:8])
            conn.recv(length - 1, socket.MSG_WAITALL)
            conn.sendall(reply)
        self.sock.close()


def frame(frame_type, body):
    return struct.pack("<QB", 1 + len(body), frame_type) + body


# --- transfers ---------------------------------------------------------------------------

def test_sync_batch_and_async_transfers(engines):
    (prefill, pname), (decode, dname) = engines
    assert prefill.get_rpc_port() > 0
    src = prefill.allocate_managed_buffer(4 * MIB)
    dst = decode.allocate_managed_buffer(4 * MIB)
    assert src and dst
    data = bytes(range(256)) * 4096  # 1 MiB
    assert prefill.write_bytes_to_buffer(src, data, len(data)) == 0
    assert decode.get_first_buffer_address(pname) == src
    # Write from prefill into decode's buffer, read it back into prefill's second MiB.
    assert prefill.transfer_sync_write(dname, src, dst, MIB) == 0
    assert decode.read_bytes_from_buffer(dst, MIB) == data
    assert prefill.transfer_sync_read(dname, src + MIB, dst, MIB) == 0
    assert prefill.read_bytes_from_buffer(src + MIB, MIB) == data
    assert prefill.transfer_sync(dname, src, dst + MIB, 4096, TransferOpcode.Write) == 0
    assert prefill.transfer_sync(dname, src + 2 * MIB, dst + MIB, 4096, TransferOpcode.Read,
                                 transport_hint="tcp") == 0
    assert prefill.read_bytes_from_buffer(src + 2 * MIB, 4096) == data[:4096]
    # Batch forms: four 64 KiB pieces.
    n, piece = 4, 64 * 1024
    locals_ = [src + i * piece for i in range(n)]
    remotes = [dst + 2 * MIB + i * piece for i in range(n)]
    assert prefill.batch_transfer_sync_write(dname, locals_, remotes, [piece] * n) == 0
    assert decode.read_bytes_from_buffer(dst + 2 * MIB, n * piece) == data[:n * piece]
    assert prefill.batch_transfer_sync(dname, locals_, remotes, [piece] * n,
                                       TransferOpcode.Read) == 0
    batch = prefill.batch_transfer_async_read(dname, [src + 3 * MIB + i * piece for i in range(n)],
                                              remotes, [piece] * n)
    assert batch != 0
    assert prefill.get_batch_transfer_status([batch]) == 0
    assert prefill.read_bytes_from_buffer(src + 3 * MIB, n * piece) == data[:n * piece]
    generic = prefill.batch_transfer_async(dname, locals_, remotes, [piece] * n,
                                           TransferOpcode.Write)
    write = prefill.batch_transfer_async_write(dname, locals_, remotes, [piece] * n)
    assert generic and write and generic != write
    assert prefill.get_batch_transfer_status([generic, write]) == 0
    one = prefill.transfer_submit_write(dname, src, dst + 3 * MIB, piece)
    assert one != 0
    while (status := prefill.transfer_check_status(one)) == 0:
        pass
    assert status == 1
    assert decode.read_bytes_from_buffer(dst + 3 * MIB, piece) == data[:piece]


def test_batch_status_and_unequal_lists(engines):
    (a, _), (b, bname) = engines
    src, dst = a.allocate_managed_buffer(MIB), b.allocate_managed_buffer(MIB)
    # Lists of different lengths: -1 for the sync forms, 0 (no batch) for the async ones.
    assert a.batch_transfer_sync_write(bname, [src, src], [dst], [8]) == -1
    assert a.batch_transfer_sync_read(bname, [src], [dst], [8, 8]) == -1
    assert a.batch_transfer_sync(bname, [src], [dst, dst], [8], TransferOpcode.Write) == -1
    assert a.batch_transfer_async_write(bname, [src, src], [dst], [8]) == 0
    assert a.batch_transfer_async_read(bname, [src], [dst], []) == 0
    assert a.batch_transfer_async(bname, [], [dst], [8], TransferOpcode.Read) == 0
    # Waiting for nothing succeeds; for an id never issued (or already waited for) not.
    assert a.get_batch_transfer_status([]) == 0
    assert a.get_batch_transfer_status([987654]) == -1
    batch = a.batch_transfer_async_write(bname, [src], [dst], [8])
    assert a.get_batch_transfer_status([batch, batch]) == 0
    assert a.get_batch_transfer_status([batch]) == -1
    assert a.transfer_check_status(12345) == -1
    # A failed transfer: the remote range is not registered.
    bad = a.transfer_submit_write(bname, src, 4096, 8)
    assert bad != 0
    while (status := a.transfer_check_status(bad)) == 0:
        pass
    assert status == -1
    bad = a.batch_transfer_async_write(bname, [src], [4096], [8])
    assert a.get_batch_transfer_status([bad]) == -1
    # Unknown segments: -1 for sync forms, 0 for the submits.
    assert a.transfer_submit_write("127.0.0.1:1", src, dst, 8) == 0
    assert a.batch_transfer_async("127.0.0.1:1", [src], [dst], [8], TransferOpcode.Read) == 0
    assert a.transfer_sync("127.0.0.1:1", src, dst, 8, TransferOpcode.Write) == -1


def test_caller_owned_memory_and_failures(engines):
    (a, aname), (b, bname) = engines
    mine = ctypes.create_string_buffer(MIB)
    theirs = ctypes.create_string_buffer(MIB)
    assert a.register_memory(ctypes.addressof(mine), MIB) == 0
    assert b.batch_register_memory([ctypes.addressof(theirs)], [MIB]) == 0
    ctypes.memmove(mine, b"x" * 1000, 1000)
    assert a.transfer_sync_write(bname, ctypes.addressof(mine), ctypes.addressof(theirs), 1000) == 0
    assert theirs.raw[:1000] == b"x" * 1000
    # read/write_bytes work on any registered memory, not only managed buffers.
    assert b.read_bytes_from_buffer(ctypes.addressof(theirs), 4) == b"xxxx"
    assert b.write_bytes_to_buffer(ctypes.addressof(theirs) + 1, b"yz", 2) == 0
    assert theirs.raw[:4] == b"xyzx"
    # Failures are -1, never an exception: unknown peer, unregistered remote range,
    # unregistered local range.
    assert a.transfer_sync_write("127.0.0.1:1", ctypes.addressof(mine), 0, 10) == -1
    assert a.transfer_sync_write(bname, ctypes.addressof(mine), 4096, 10) == -1
    assert a.transfer_sync_write(bname, 4096, ctypes.addressof(theirs), 10) == -1
    assert a.batch_transfer_async_write("127.0.0.1:1", [ctypes.addressof(mine)], [0], [1]) == 0
    assert a.register_memory(ctypes.addressof(mine), MIB) == -7  # overlap
    assert a.register_memory(ctypes.addressof(mine) + MIB, 0) == -1  # empty
    assert a.unregister_memory(ctypes.addressof(mine)) == 0
    assert a.unregister_memory(ctypes.addressof(mine)) == -3
    assert a.unregister_memory(ctypes.addressof(mine) + 8) == -3
    assert b.batch_unregister_memory([ctypes.addressof(theirs)]) == 0
    assert a.batch_register_memory([], []) == 0
    assert a.batch_unregister_memory([]) == 0
    with pytest.raises(ValueError):
        a.read_bytes_from_buffer(ctypes.addressof(mine), 10)
    with pytest.raises(ValueError):
        a.write_bytes_to_buffer(ctypes.addressof(mine), b"0123456789", 10)
    with pytest.raises(ValueError):
        a.transfer_sync(bname, 0, 0, 1, 7)
    with pytest.raises(TypeError):
        a.transfer_sync(bname, 0, 0, 1, "Write")


def test_managed_buffers_and_bytes(engines):
    (a, aname), _ = engines
    tiny = a.allocate_managed_buffer(1)
    assert tiny != 0
    # The buffer is the wheel's size class: 8 KiB for one byte.
    assert a.write_bytes_to_buffer(tiny, b"\0" * 8192, 8192) == 0
    with pytest.raises(ValueError):
        a.write_bytes_to_buffer(tiny, b"\0" * 8193, 8193)
    # str is written as UTF-8; only the first `length` bytes are copied.
    assert a.write_bytes_to_buffer(tiny, "héllo", 6) == 0
    assert a.read_bytes_from_buffer(tiny, 6) == "héllo".encode()
    assert a.write_bytes_to_buffer(tiny, b"HELLO, world", 5) == 0
    assert a.read_bytes_from_buffer(tiny, 6) == b"HELLOo"
    assert a.write_bytes_to_buffer(tiny, b"", 0) == 0
    assert a.read_bytes_from_buffer(tiny, 0) == b""
    with pytest.raises(ValueError):
        a.write_bytes_to_buffer(tiny, b"abc", 4)
    with pytest.raises(TypeError):
        a.write_bytes_to_buffer(tiny, bytearray(b"abc"), 3)
    assert a.get_first_buffer_address(aname) == tiny
    assert a.free_managed_buffer(tiny, 1) == 0
    assert a.free_managed_buffer(tiny, 1) == 0  # always 0
    with pytest.raises(ValueError):
        a.read_bytes_from_buffer(tiny, 1)
    big = a.allocate_managed_buffer(256 * MIB + 1)
    assert big != 0 and a.free_managed_buffer(big, 256 * MIB + 1) == 0


def test_get_first_buffer_address(cluster, engines):
    (a, aname), (b, bname) = engines
    assert a.get_first_buffer_address("unknown-segment") == 0
    assert a.get_first_buffer_address(bname) == 0  # published, but no buffers yet
    first = b.allocate_managed_buffer(MIB)
    b.allocate_managed_buffer(MIB)
    assert a.get_first_buffer_address(bname) == first
    # A store service's segment.
    assert a.get_first_buffer_address(cluster.service.segment) != 0


def test_notifications_reach_the_peer(engines):
    (a, aname), (b, bname) = engines
    src, dst = a.allocate_managed_buffer(MIB), b.allocate_managed_buffer(MIB)
    assert b.get_notifies() == []
    assert a.transfer_sync(bname, src, dst, 64, TransferOpcode.Write,
                           TransferNotify("prefill-0", "kv ready")) == 0
    assert a.batch_transfer_sync(bname, [src], [dst], [64], TransferOpcode.Read,
                                 notify=TransferNotify(name="prefill-0", msg="second")) == 0
    got = b.get_notifies()
    assert [(n.name, n.msg) for n in got] == [("prefill-0", "kv ready"), ("prefill-0", "second")]
    assert all(isinstance(n, TransferNotify) for n in got)
    assert b.get_notifies() == [] and a.get_notifies() == []
    # No notification without the argument, nor when the transfer fails.
    assert a.transfer_sync(bname, src, dst, 64, TransferOpcode.Write, None) == 0
    assert a.transfer_sync(bname, src, 4096, 64, TransferOpcode.Write, TransferNotify("x", "y")) == -1
    assert b.get_notifies() == []


def test_notifications_in_p2p_mode(p2p_engines):
    (a, _), (b, bname) = p2p_engines
    src, dst = a.allocate_managed_buffer(MIB), b.allocate_managed_buffer(MIB)
    assert a.transfer_sync(bname, src, dst, 8, TransferOpcode.Write, TransferNotify("a", "m")) == 0
    [n] = b.get_notifies()
    assert (n.name, n.msg) == ("a", "m")


# --- send_probe (§9.1) ------------------------------------------------------------------

def test_send_probe_with_http_metadata(cluster, engines, p2p_engines):
    (a, aname), (b, bname) = engines
    _, p2p_name = p2p_engines[0]
    assert a.send_probe(cluster.service.segment) == 0  # a live store segment
    assert a.send_probe(bname) == 0
    assert a.send_probe(aname) == 0
    assert a.send_probe(peer_server_name=bname) == 0
    for unknown in ("unknown-peer", "127.0.0.1:1", f"127.0.0.1:{refused_port()}", ""):
        assert a.send_probe(unknown) == -200, unknown
    assert a.send_probe(p2p_name) == -200  # a P2P engine is not in the metadata
    # Once resolved, the address is kept per name: the peer's rpc_meta going away (it
    # shut down) leaves a refused connection, not a missing entry.
    assert b.shutdown() == 0
    assert a.send_probe(bname) == -102


def test_send_probe_in_p2p_mode(cluster, p2p_engines):
    (a, aname), (b, bname) = p2p_engines
    assert a.send_probe(aname) == 0
    assert a.send_probe(bname) == 0
    assert a.send_probe("127.0.0.1:1") == -102
    assert a.send_probe(f"127.0.0.1:{refused_port()}") == -102
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 12001)) == 0:
            pytest.skip("something listens on 12001, the default handshake port")
    assert a.send_probe("127.0.0.1") == -102  # no port: 12001
    assert a.send_probe(cluster.service.segment) == -102  # not a handshake port
    assert a.send_probe("nonexistent.invalid:15001") == -101
    assert a.send_probe("") == -101


def test_send_probe_reply_checks(p2p_engines):
    (a, _), _ = p2p_engines
    garbage = FakePeer(frame(3, b"not json"))
    assert a.send_probe(f"127.0.0.1:{garbage.port}") == -103
    wrong_type = FakePeer(frame(2, b'{"name":"","notify_msg":"success"}\n'))
    assert a.send_probe(f"127.0.0.1:{wrong_type.port}") == -102
    any_json = FakePeer(frame(3, b"null\n"))
    assert a.send_probe(f"127.0.0.1:{any_json.port}") == 0


# --- initialisation and the engine object -------------------------------------------------

def test_initialize_failures(cluster):
    e = TransferEngine()
    assert e.get_rpc_port() == -1
    assert e.initialize("127.0.0.1:1", "nonsense://x", "tcp", "") == -1
    assert e.initialize("127.0.0.1:1", f"http://127.0.0.1:{refused_port()}/metadata",
                        "tcp", "") == -1
    assert e.initialize("127.0.0.1:1", "127.0.0.1:2379", "tcp", "") == -1  # etcd: not built
    assert e.initialize(f"127.0.0.1:{free_port()}", cluster.metadata, "xgmi", "") == -1
    assert e.get_engine() is None and e.get_engine_ptr() == 0
    # Other protocols start the engine; data moves over TCP.
    assert e.initialize(f"127.0.0.1:{free_port()}", cluster.metadata, "efa", "mlx5_0") == 0
    assert e.get_rpc_port() > 0
    assert e.shutdown() == 0


def test_initialize_ext(cluster):
    a, b = TransferEngine(), TransferEngine()
    bname = f"127.0.0.1:{free_port()}"
    bare = cluster.metadata.removeprefix("http://")
    assert b.initialize_ext(bname, bare, "tcp", "", "http") == 0
    assert a.initialize_ext(f"127.0.0.1:{free_port()}", cluster.metadata, "tcp", "", "etcd") == 0
    assert a.send_probe(bname) == 0  # both use the HTTP metadata
    p2p = TransferEngine()
    assert p2p.initialize_ext("127.0.0.1", "P2PHANDSHAKE", "tcp", "", "http") == 0
    assert p2p.send_probe(f"127.0.0.1:{p2p.get_rpc_port()}") == 0
    assert TransferEngine().initialize_ext("127.0.0.1:1", bare, "tcp", "", "nonsense") == -1
    for e in (a, b, p2p):
        assert e.shutdown() == 0


def test_engine_handles(engines):
    (a, _), (b, _) = engines
    inner = a.get_engine()
    assert isinstance(inner, engine_module.InnerTransferEngine)
    with pytest.raises(TypeError):
        engine_module.InnerTransferEngine()
    ptr = a.get_engine_ptr()
    assert isinstance(ptr, int) and ptr != 0
    assert ptr == a.get_engine_ptr() and ptr != b.get_engine_ptr()


def test_calls_before_initialize_do_not_crash():
    e = TransferEngine()
    assert e.send_probe("127.0.0.1:1") == -1
    assert e.get_engine() is None
    assert e.get_engine_ptr() == 0
    assert e.get_rpc_port() == -1
    assert e.get_notifies() == []
    assert e.warmup_efa_segment("x") == 0
    assert json.loads(e.get_local_topology())  # needs no engine
    assert e.register_memory(4096, 4096) == -1
    assert e.unregister_memory(4096) == -1
    assert e.batch_register_memory([4096], [4096]) == -1
    assert e.batch_unregister_memory([4096]) == -1
    assert e.transfer_sync_write("x", 4096, 4096, 1) == -1
    assert e.transfer_sync_read("x", 4096, 4096, 1) == -1
    assert e.transfer_sync("x", 4096, 4096, 1, TransferOpcode.Read) == -1
    assert e.batch_transfer_sync_write("x", [4096], [4096], [1]) == -1
    assert e.batch_transfer_sync_read("x", [4096], [4096], [1]) == -1
    assert e.batch_transfer_sync("x", [4096], [4096], [1], TransferOpcode.Write) == -1
    assert e.batch_transfer_async_write("x", [4096], [4096], [1]) == 0
    assert e.batch_transfer_async_read("x", [4096], [4096], [1]) == 0
    assert e.batch_transfer_async("x", [4096], [4096], [1], TransferOpcode.Read) == 0
    assert e.transfer_submit_write("x", 4096, 4096, 1) == 0
    assert e.get_batch_transfer_status([1]) == -1
    assert e.transfer_check_status(1) == -1
    assert e.allocate_managed_buffer(4096) == 0
    assert e.free_managed_buffer(4096, 4096) == 0
    assert e.read_bytes_from_buffer(4096, 8) == b""
    assert e.write_bytes_to_buffer(4096, b"x", 1) == -1
    assert e.get_first_buffer_address("x") == 0
    assert e.shutdown() == 0


def test_positional_only_methods():
    e = TransferEngine()
    calls = {
        "initialize": dict(local_hostname="h", metadata_server="P2PHANDSHAKE", protocol="tcp",
                           device_name=""),
        "initialize_ext": dict(local_hostname="h", metadata_server="P2PHANDSHAKE",
                               protocol="tcp", device_name="", metadata_type="http"),
        "allocate_managed_buffer": dict(length=1),
        "free_managed_buffer": dict(buffer_addr=1, length=1),
        "get_batch_transfer_status": dict(batch_ids=[]),
        "transfer_check_status": dict(batch_id=1),
        "unregister_memory": dict(buffer_addr=1),
        "batch_unregister_memory": dict(buffer_addresses=[]),
        "read_bytes_from_buffer": dict(buffer_addr=1, length=1),
        "write_bytes_to_buffer": dict(buffer_addr=1, src_data=b"x", length=1),
        "get_first_buffer_address": dict(segment_name="x"),
    }
    for method, kwargs in calls.items():
        with pytest.raises(TypeError):
            getattr(e, method)(**kwargs)
    # The methods with argument names take them as keywords.
    assert e.register_memory(buffer_addr=4096, capacity=1, location="*") == -1
    assert e.batch_register_memory(buffer_addresses=[], capacities=[], location="cpu:0") == -1
    assert e.transfer_sync_write(target_hostname="x", buffer=1, peer_buffer_address=1,
                                 length=1, transport_hint="") == -1
    assert e.transfer_sync(target_hostname="x", buffer=1, peer_buffer_address=1, length=1,
                           opcode=TransferOpcode.Write, notify=None, transport_hint="") == -1
    assert e.batch_transfer_async(target_hostname="x", buffers=[1], peer_buffer_addresses=[1],
                                  lengths=[1], opcode=TransferOpcode.Read) == 0
    assert e.transfer_submit_write(target_hostname="x", buffer=1, peer_buffer_address=1,
                                   length=1, transport_hint="") == 0
    assert e.send_probe(peer_server_name="x") == -1
    assert e.warmup_efa_segment(segment_name="x") == 0
    assert json.loads(e.get_local_topology(device_name=None)) is not None


def test_local_topology_lists_numa_nodes():
    e = TransferEngine()
    nodes_dir = "/sys/devices/system/node"
    nodes = sorted(f"cpu:{d[4:]}" for d in os.listdir(nodes_dir)
                   if d.startswith("node") and d[4:].isdigit()) if os.path.isdir(nodes_dir) else []
    for text in (e.get_local_topology(), e.get_local_topology("mlx5_0,mlx5_1")):
        assert isinstance(text, str) and text.endswith("\n")
        topology = json.loads(text)
        assert sorted(topology) == nodes
        assert all(v == [[], []] for v in topology.values())  # TCP only: no NICs


def test_module_exports():
    m = engine_module
    assert not hasattr(TransferEngine(), "get_local_segment_name")
    # A pybind-style enum: ints by int()/index(), but not equal to them.
    assert TransferOpcode.Read is m.Read and TransferOpcode.Write is m.Write
    assert TransferEngine.TransferOpcode is TransferOpcode
    assert TransferEngine.TransferOpcode.Write is m.Write
    assert (TransferOpcode.Read == 0) is False
    assert int(TransferOpcode.Read) == 0 and int(TransferOpcode.Write) == 1
    assert [0, 1][TransferOpcode.Write] == 1
    for flag in ("SUPPORT_CUDA", "SUPPORT_EFA", "SUPPORT_HIP", "SUPPORT_INTRA_NVLINK",
                 "SUPPORT_MNNVL", "SUPPORT_MUSA"):
        assert getattr(m, flag) is False, flag
    n = TransferNotify()
    assert (n.name, n.msg) == ("", "")
    n = TransferNotify("a", "b")
    n.name, n.msg = "c", "d"
    assert (n.name, n.msg) == ("c", "d")
    assert TransferNotify(name="x", msg="y").msg == "y"
    with pytest.raises(TypeError):
        n.msg = 3
    for method in ("transfer_write_on_cuda", "transfer_read_on_cuda",
                   "batch_transfer_write_on_cuda", "batch_transfer_read_on_cuda"):
        assert not hasattr(TransferEngine, method)


def test_p2phandshake_engines_as_sglang_uses_them():
    """SGLang's PD disaggregation: initialize(host, "P2PHANDSHAKE", ...) and address the
    peer as f"{host}:{peer.get_rpc_port()}"."""
    (prefill, _), (decode, session) = p2p_engine(), p2p_engine()
    src = prefill.allocate_managed_buffer(MIB)
    dst = decode.allocate_managed_buffer(MIB)
    prefill.write_bytes_to_buffer(src, b"kv-cache" * 1024, 8192)
    assert prefill.transfer_sync_write(session, src, dst, 8192) == 0
    assert decode.read_bytes_from_buffer(dst, 8192) == b"kv-cache" * 1024
    assert decode.get_first_buffer_address(session) == dst
    assert prefill.transfer_sync_write("127.0.0.1:1", src, dst, 10) == -1
    for e in (prefill, decode):
        assert e.shutdown() == 0


def test_store_setup_with_p2phandshake(cluster):
    """Every member of a cluster uses the same metadata mode (as with the C++ wheel): here
    a P2PHANDSHAKE contributor and a P2PHANDSHAKE reader share data without a metadata
    server."""
    from mooncake.store import MooncakeDistributedStore, ReplicateConfig
    holder, reader = MooncakeDistributedStore(), MooncakeDistributedStore()
    assert holder.setup("127.0.0.1", "P2PHANDSHAKE", 16 * MIB, 16 * MIB, "tcp", "",
                        cluster.master_addr) == 0
    assert reader.setup("127.0.0.1", "P2PHANDSHAKE", 0, 16 * MIB, "tcp", "",
                        cluster.master_addr) == 0
    here = ReplicateConfig()
    here.preferred_segment = holder.get_hostname()
    assert reader.put("p2p-key", b"p2p-value", here) == 0
    assert reader.get("p2p-key") == b"p2p-value"
    assert reader.remove("p2p-key", True) == 0
    assert reader.close() == 0 and holder.close() == 0


# ---- SharedSegment: host memory shared by a group of ranks (POSIX shm) ----

SEGMENT_BLOB = struct.Struct("<IHHIIQQ")  # magic, version, backend, rank, handle_bytes,
#                                           fingerprint, alloc_size; then 128 handle bytes


def fnv_fingerprint(name, size, world_size, owner_rank, mmap=True, host_register=False):
    """C++ ComputeSegmentFingerprint, written out independently."""
    h = 1469598103934665603
    data = name + b"".join(v.to_bytes(8, "little") for v in
                           (size, world_size, owner_rank, int(mmap), int(host_register)))
    for b in data:
        h = ((h ^ b) * 1099511628211) % (1 << 64)
    return h


def test_shared_segment_single_rank():
    from mooncake.engine import SharedSegment

    assert "SharedSegment" in engine_module.__all__
    assert SharedSegment.__module__ == "mooncake.engine"
    with pytest.raises(TypeError, match="No constructor defined"):
        SharedSegment()
    assert SharedSegment.supported() is True
    assert SharedSegment.supported(mmap=False) is False  # no VMM backend
    assert SharedSegment.supported(True, True) is False  # no HostRegister (Ascend)

    seg, blob = SharedSegment.create("n", 5000, 1, 0)
    assert isinstance(blob, bytes) and len(blob) == 160
    magic, version, backend, rank, handle_bytes, fingerprint, alloc = \
        SEGMENT_BLOB.unpack_from(blob)
    assert (magic, version, backend, rank) == (0x4D435353, 1, 3, 0)
    # The C++ wheel's fingerprint for this declaration.
    assert fingerprint == 2054795158560556778 == fnv_fingerprint(b"n", 5000, 1, 0)
    page = os.sysconf("SC_PAGESIZE")
    assert alloc >= 5000 and alloc % page == 0
    handle = blob[32:32 + handle_bytes]
    prefix = b"/mcss_%d_" % os.getpid()  # then 16 hex digits
    assert handle.startswith(prefix) and len(handle) == len(prefix) + 16
    assert blob[32 + handle_bytes:] == bytes(128 - handle_bytes)
    assert os.path.exists("/dev/shm" + handle.decode())

    assert not seg.ready() and seg.size() == 5000 and seg.device_addr() == 0
    base = seg.base_addr()
    assert base and base % page == 0
    ctypes.memmove(base + 4990, b"0123456789", 10)  # owner memory is usable at once
    seg.complete([blob])
    assert seg.ready() and seg.base_addr() == base
    with pytest.raises(RuntimeError, match="^InvalidArgument: SharedSegment::Complete has "
                                           "already been called$"):
        seg.complete([blob])
    del seg
    assert not os.path.exists("/dev/shm" + handle.decode())  # the owner unlinks it


def test_shared_segment_two_ranks_in_two_processes(tmp_path):
    import subprocess
    import sys

    from mooncake.engine import SharedSegment

    owner, owner_blob = SharedSegment.create("kv|k:2", 10000, 2, 0)
    ctypes.memmove(owner.base_addr(), b"from-owner", 10)
    peer_code = (
        "import ctypes, sys\n"
        "from mooncake.engine import SharedSegment\n"
        "owner_blob = bytes.fromhex(sys.argv[1])\n"
        "seg, blob = SharedSegment.create('kv|k:2', 10000, 2, 1)\n"
        "assert not seg.ready()\n"
        "seg.complete([owner_blob, blob])\n"
        "assert seg.ready() and seg.size() == 10000\n"
        "assert ctypes.string_at(seg.base_addr(), 10) == b'from-owner'\n"
        "ctypes.memmove(seg.base_addr() + 9990, b'from-peer!', 10)\n"
        "print(blob.hex())\n")
    out = subprocess.run([sys.executable, "-c", peer_code, owner_blob.hex()],
                         capture_output=True, text=True, check=True).stdout
    peer_blob = bytes.fromhex(out.strip())
    assert SEGMENT_BLOB.unpack_from(peer_blob)[3:5] == (1, 0)  # rank 1, no handle
    assert peer_blob[32:] == bytes(128)
    owner.complete([owner_blob, peer_blob])
    # The peer's write landed in the owner's pages.
    assert ctypes.string_at(owner.base_addr() + 9990, 10) == b"from-peer!"


def test_shared_segment_checks_the_group():
    from mooncake.engine import SharedSegment

    owner, owner_blob = SharedSegment.create("g", 5000, 2, 0)
    peer, peer_blob = SharedSegment.create("g", 5000, 2, 1)  # same process is fine too

    def fails(message, blobs, segment_args=("g", 5000, 2, 1)):
        seg, own = SharedSegment.create(*segment_args)
        with pytest.raises(RuntimeError) as info:
            seg.complete([own if b is None else b for b in blobs])
        assert str(info.value) == message
        assert not seg.ready()

    def edited(blob, offset, fmt, value):
        b = bytearray(blob)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    fails("InvalidArgument: Shared segment expects one blob per rank, got 1", [owner_blob])
    fails("InvalidArgument: Shared segment blob has an unexpected length",
          [owner_blob[:-1], None])
    fails("InvalidArgument: Shared segment blob magic mismatch", [bytes(160), None])
    fails("InvalidArgument: Shared segment blob version mismatch, peers run different "
          "builds", [edited(owner_blob, 4, "<H", 2), None])
    fails("InvalidArgument: Shared segment blob declares an oversized handle",
          [edited(owner_blob, 12, "<I", 129), None])
    fails("InvalidArgument: Shared segment blob of rank 0 carries a different rank id",
          [None, owner_blob])
    fails("InvalidArgument: Shared segment backend of rank 0 differs",
          [edited(owner_blob, 6, "<H", 1), None])
    fails("InvalidArgument: Shared segment declaration of rank 0 differs from the local "
          "one", [owner_blob, None], ("other", 5000, 2, 1))
    fails("InvalidArgument: Shared segment allocation size of rank 0 differs from the "
          "local one", [edited(owner_blob, 24, "<Q", 1 << 40), None])
    fails("InvalidArgument: Shared segment owner rank did not export a handle",
          [edited(owner_blob, 12, "<I", 0), None])
    bad = bytearray(owner_blob)
    bad[32:33] = b"x"
    fails("InvalidArgument: Shared segment owner handle is not a POSIX shm name",
          [bytes(bad), None])
    bad[32:34] = b"/Z"
    fails("Memory: shm_open failed: No such file or directory", [bytes(bad), None])

    # The peer's own handle bytes are not looked at; str and bytearray blobs are accepted.
    owner.complete((owner_blob, bytearray(peer_blob)))
    peer.complete([owner_blob, peer_blob])
    ctypes.memmove(owner.base_addr(), b"shared", 6)
    assert ctypes.string_at(peer.base_addr(), 6) == b"shared"
    seg, own = SharedSegment.create("s", 10, 1, 0)
    with pytest.raises(RuntimeError, match="magic mismatch"):
        seg.complete(["x" * 160])
    seg.complete(blobs=[own])


def test_shared_segment_refusals():
    from mooncake.engine import SharedSegment

    def fails(message, *args, **kwargs):
        with pytest.raises(RuntimeError) as info:
            SharedSegment.create(*args, **kwargs)
        assert str(info.value) == message

    fails("InvalidArgument: Shared segment size must be in (0, 70368744177664]", "n", 0, 1, 0)
    fails("InvalidArgument: Shared segment size must be in (0, 70368744177664]",
          "n", (1 << 46) + 1, 1, 0)
    fails("InvalidArgument: Shared segment world_size must not be zero", "n", 10, 0, 0)
    fails("InvalidArgument: Shared segment rank_id and owner_rank must be below world_size",
          "n", 10, 1, 1)
    fails("InvalidArgument: Shared segment rank_id and owner_rank must be below world_size",
          "n", 10, 1, 0, 3)
    fails("InvalidArgument: Shared segment host_register requires mmap=true",
          "n", 10, 1, 0, mmap=False, host_register=True)
    fails("NotImplemented: This build has no VMM backend for shared segments",
          "n", 10, 1, 0, mmap=False)
    fails("NotImplemented: Shared segment mmap needs Ascend for HostRegister",
          "n", 10, 1, 0, host_register=True)
    # A non-owner only registers its pages on complete, so it fails there (as in C++).
    seg, _ = SharedSegment.create("n", 10, 2, 1, host_register=True)
    assert not seg.ready()

    for args in [("n", -1, 1, 0), ("n", 5.0, 1, 0), (None, 10, 1, 0), ("n", 10, 1 << 32, 0),
                 ("n", 10, 1, 0, 0, 1 << 31), ("n", 10, 1, 0, 0, 0, "yes")]:
        with pytest.raises(TypeError, match="^create\\(\\): incompatible function argu"):
            SharedSegment.create(*args)
    seg, blob = SharedSegment.create(b"n", True, 1, 0, mmap=1, device_id=-1)
    assert seg.size() == 1
    for blobs in (b"x", "x", iter([blob]), None):
        with pytest.raises(TypeError, match="^complete\\(\\): incompatible function argu"):
            seg.complete(blobs)
    with pytest.raises(TypeError, match="cannot pickle"):
        import pickle

        pickle.dumps(seg)
