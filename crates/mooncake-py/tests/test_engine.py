"""mooncake.engine.TransferEngine as SGLang's prefill/decode disaggregation uses it: two
engines publish segments through the HTTP metadata server and move bytes over TCP."""

import ctypes

import pytest

from conftest import MIB, free_port
from mooncake.engine import TransferEngine, TransferOpcode


@pytest.fixture
def engines(cluster):
    pair = []
    for _ in range(2):
        e = TransferEngine()
        name = f"127.0.0.1:{free_port()}"
        assert e.initialize(name, cluster.metadata, "tcp", "") == 0
        pair.append((e, name))
    yield pair
    for e, _ in pair:
        assert e.shutdown() == 0


def test_sync_batch_and_async_transfers(engines):
    (prefill, pname), (decode, dname) = engines
    assert prefill.get_rpc_port() > 0 and prefill.get_local_segment_name() == pname
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
    # Batch forms: four 64 KiB pieces.
    n, piece = 4, 64 * 1024
    locals_ = [src + i * piece for i in range(n)]
    remotes = [dst + 2 * MIB + i * piece for i in range(n)]
    assert prefill.batch_transfer_sync_write(dname, locals_, remotes, [piece] * n) == 0
    assert decode.read_bytes_from_buffer(dst + 2 * MIB, n * piece) == data[:n * piece]
    batch = prefill.batch_transfer_async_read(dname, [src + 3 * MIB + i * piece for i in range(n)],
                                              remotes, [piece] * n)
    assert batch != 0
    assert prefill.get_batch_transfer_status([batch]) == 0
    assert prefill.read_bytes_from_buffer(src + 3 * MIB, n * piece) == data[:n * piece]
    one = prefill.transfer_submit_write(dname, src, dst + 3 * MIB, piece)
    assert one != 0
    while (status := prefill.transfer_check_status(one)) == 0:
        pass
    assert status == 1
    assert prefill.transfer_check_status(12345) == -1


def test_caller_owned_memory_and_failures(engines):
    (a, aname), (b, bname) = engines
    mine = ctypes.create_string_buffer(MIB)
    theirs = ctypes.create_string_buffer(MIB)
    assert a.register_memory(ctypes.addressof(mine), MIB) == 0
    assert b.batch_register_memory([ctypes.addressof(theirs)], [MIB]) == 0
    ctypes.memmove(mine, b"x" * 1000, 1000)
    assert a.transfer_sync_write(bname, ctypes.addressof(mine), ctypes.addressof(theirs), 1000) == 0
    assert theirs.raw[:1000] == b"x" * 1000
    # Failures are -1, never an exception: unknown peer, unregistered remote range,
    # unregistered local range.
    assert a.transfer_sync_write("127.0.0.1:1", ctypes.addressof(mine), 0, 10) == -1
    assert a.transfer_sync_write(bname, ctypes.addressof(mine), 4096, 10) == -1
    assert a.transfer_sync_write(bname, 4096, ctypes.addressof(theirs), 10) == -1
    assert a.batch_transfer_async_write("127.0.0.1:1", [ctypes.addressof(mine)], [0], [1]) == 0
    assert a.register_memory(ctypes.addressof(mine), MIB) != 0  # overlap
    assert a.unregister_memory(ctypes.addressof(mine)) == 0
    assert a.unregister_memory(ctypes.addressof(mine)) != 0
    assert b.batch_unregister_memory([ctypes.addressof(theirs)]) == 0
    with pytest.raises(ValueError):
        a.read_bytes_from_buffer(ctypes.addressof(mine), 10)
    with pytest.raises(ValueError):
        a.transfer_sync(bname, 0, 0, 1, 7)


def test_initialize_failures(cluster):
    e = TransferEngine()
    with pytest.raises(ValueError):
        e.get_rpc_port()
    assert e.initialize("127.0.0.1:1", "nonsense://x", "tcp", "") == -1
    assert e.initialize("127.0.0.1:1", cluster.metadata, "efa", "") == -1


def test_p2phandshake_engines_as_sglang_uses_them():
    """SGLang's PD disaggregation: initialize(host, "P2PHANDSHAKE", ...) and address the
    peer as f"{host}:{peer.get_rpc_port()}"."""
    prefill, decode = TransferEngine(), TransferEngine()
    for e in (prefill, decode):
        assert e.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") == 0
    session = f"127.0.0.1:{decode.get_rpc_port()}"
    assert decode.get_local_segment_name() == session
    src = prefill.allocate_managed_buffer(MIB)
    dst = decode.allocate_managed_buffer(MIB)
    prefill.write_bytes_to_buffer(src, b"kv-cache" * 1024, 8192)
    assert prefill.transfer_sync_write(session, src, dst, 8192) == 0
    assert decode.read_bytes_from_buffer(dst, 8192) == b"kv-cache" * 1024
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
