"""Every method of MooncakeDistributedStore with its success and failure conventions
(python-api.md), against a real master and store service."""

import ctypes
import mmap
import time

import pytest

from conftest import MIB
from mooncake.store import MooncakeDistributedStore, ReplicateConfig, SoftPinAction

INVALID, NO_SPACE, NOT_FOUND, HAS_LEASE, TRANSFER_FAIL = -600, -200, -704, -706, -800


def pattern(n, seed=1):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def test_put_get_and_duplicate_put_keeps_the_first_value(store):
    assert store.put("k", b"first") == 0
    assert store.put("k", b"second") == 0
    assert store.get("k") == b"first"
    assert store.upsert("k", b"replaced") == 0
    assert store.get("k") == b"replaced"
    assert store.put("bytearray", bytearray(b"ba")) == 0
    assert store.put("memoryview", memoryview(b"mv")) == 0
    assert store.get("bytearray") == b"ba" and store.get("memoryview") == b"mv"


def test_missing_keys_and_bad_input(store):
    assert store.get("missing") == b""
    assert store.is_exist("missing") == 0
    assert store.get_size("missing") == NOT_FOUND
    assert store.remove("missing") == NOT_FOUND
    assert store.put("", b"x") == INVALID
    assert store.put("empty", b"") == INVALID
    with pytest.raises(TypeError):
        store.put("str", "not bytes")
    with pytest.raises(TypeError):
        store.put_from("k", "not an address", 10)


def test_exist_size_lease_and_remove(store):
    assert store.put("leased", pattern(4096)) == 0
    assert store.is_exist("leased") == 1
    assert store.get_size("leased") == 4096
    assert store.batch_is_exist(["leased", "nope"]) == [1, 0]
    assert store.batch_is_exist([]) == []
    assert store.remove("leased") == HAS_LEASE
    time.sleep(0.7)  # the fixture's master leases for 500 ms
    assert store.remove("leased") == 0
    assert store.put("forced", b"x") == 0 and store.is_exist("forced") == 1
    assert store.remove("forced", force=True) == 0
    assert store.batch_remove(["nope"]) == [NOT_FOUND]
    for k in ("a", "b", "c"):
        store.put(k, b"v")
    assert store.remove_all(True) == 3
    assert store.batch_is_exist(["a", "b", "c"]) == [0, 0, 0]


def test_batches_and_parts(store):
    keys = [f"b{i}" for i in range(32)]
    values = [pattern(1000 + i, i) for i in range(32)]
    assert store.put_batch(keys, values) == 0
    assert store.get_batch(keys + ["missing"]) == values + [b""]
    assert store.put_batch(["x"], [b"1", b"2"]) == INVALID
    assert store.put_parts("parts", b"head-", bytearray(b"mid-"), b"tail") == 0
    assert store.get("parts") == b"head-mid-tail"
    assert store.upsert_parts("parts", b"new") == 0
    assert store.get("parts") == b"new"
    assert store.upsert_batch(["parts", "fresh"], [b"p2", b"f"]) == 0
    assert store.get_batch(["parts", "fresh"]) == [b"p2", b"f"]
    handle = store.get_buffer("parts")
    assert bytes(handle) == b"p2" and handle.size() == 2 and len(handle) == 2
    assert handle.ptr() != 0 and memoryview(handle).tobytes() == b"p2"
    assert store.get_buffer("missing") is None
    assert [h is None for h in store.batch_get_buffer(["parts", "no"])] == [False, True]


def test_value_larger_than_the_local_buffer(cluster):
    s = cluster.store(buffer=1 * MIB)
    try:
        assert s.put("big", pattern(2 * MIB)) == INVALID
        buf = ctypes.create_string_buffer(4 * MIB)
        assert s.register_buffer(ctypes.addressof(buf), 4 * MIB) == 0
        ctypes.memmove(buf, pattern(2 * MIB), 2 * MIB)
        assert s.put_from("big", ctypes.addressof(buf), 2 * MIB) == 0
        assert s.get("big") == b""  # too large for the staging buffer
        assert s.get_into("big", ctypes.addressof(buf) + 2 * MIB, 2 * MIB) == 2 * MIB
        assert buf.raw[2 * MIB:] == pattern(2 * MIB)
    finally:
        s.remove_all(True)
        s.close()


def test_zero_copy_calls(store):
    size = 8 * MIB
    buf = ctypes.create_string_buffer(size)
    base = ctypes.addressof(buf)
    assert store.register_buffer(base, size) == 0
    data = pattern(64 * 1024)
    ctypes.memmove(base, data, len(data))
    assert store.put_from("z", base, len(data)) == 0
    assert store.put_from("z0", base, 0) == 0 and store.is_exist("z0") == 0
    assert store.get_into("z", base + MIB, MIB) == len(data)
    assert buf.raw[MIB:MIB + len(data)] == data
    # Too small: -600 and the buffer is untouched.
    ctypes.memset(base + 2 * MIB, 0xAB, 1024)
    assert store.get_into("z", base + 2 * MIB, 1024) == INVALID
    assert buf.raw[2 * MIB:2 * MIB + 1024] == b"\xab" * 1024
    assert store.get_into("missing", base, 1024) == NOT_FOUND
    # Batches, in input order.
    keys = [f"zb{i}" for i in range(8)]
    ptrs = [base + i * 4096 for i in range(8)]
    assert store.batch_put_from(keys, ptrs, [4096] * 8) == [0] * 8
    assert store.batch_put_from(keys, ptrs, [4096] * 7) == [INVALID] * 8
    out = [base + 4 * MIB + i * 8192 for i in range(8)]
    assert store.batch_get_into(keys + ["zz"], out + [base], [8192] * 8 + [10]) == [4096] * 8 + [NOT_FOUND]
    for i in range(8):
        o = 4 * MIB + i * 8192
        assert buf.raw[o:o + 4096] == buf.raw[i * 4096:(i + 1) * 4096]
    assert store.batch_get_into(["zb0"], [base], [100]) == [INVALID]
    assert store.upsert_from("z", base + 100, 200) == 0
    assert store.get("z") == buf.raw[100:300]
    assert store.batch_upsert_from(["z"], [base], [10]) == [0]
    assert store.get_size("z") == 10
    assert store.put_from_with_metadata("meta", base + 16, base, 16, 8) == 0
    assert store.get("meta") == buf.raw[0:8] + buf.raw[16:32]
    assert store.unregister_buffer(base) == 0
    assert store.unregister_buffer(base) == INVALID


def test_mmap_buffers_are_accepted_as_addresses(store):
    m = mmap.mmap(-1, MIB)
    m[:5] = b"hello"
    assert store.register_buffer(m, MIB) == 0
    assert store.put_from("mm", m, 5) == 0
    assert store.get("mm") == b"hello"
    assert store.get_into("mm", ctypes.addressof(ctypes.c_char.from_buffer(m, 100)), 50) == 5
    assert m[100:105] == b"hello"
    assert store.unregister_buffer(m) == 0


def test_multi_buffer_exact_fit(store):
    buf = ctypes.create_string_buffer(MIB)
    base = ctypes.addressof(buf)
    assert store.register_buffer(base, MIB) == 0
    ctypes.memmove(base, pattern(3000), 3000)
    parts = [[base, base + 1000], [base + 2000]]
    sizes = [[1000, 1000], [1000]]
    assert store.batch_put_from_multi_buffers(["m1", "m2"], parts, sizes) == [0, 0]
    assert store.get("m1") == pattern(3000)[:2000]
    dst = base + 512 * 1024
    assert store.batch_get_into_multi_buffers(
        ["m1", "m1", "m1", "nope"],
        [[dst, dst + 5000], [dst], [dst], [dst]],
        [[500, 1500], [1999], [2001], [10]]) == [2000, INVALID, TRANSFER_FAIL, NOT_FOUND]
    assert buf.raw[512 * 1024:512 * 1024 + 500] == pattern(3000)[:500]
    assert buf.raw[512 * 1024 + 5000:512 * 1024 + 6500] == pattern(3000)[500:2000]
    assert store.batch_put_from_multi_buffers(["m3"], [[base]], [[1, 2]]) == [INVALID]
    store.unregister_buffer(base)


def test_replicate_config(store):
    c = ReplicateConfig()
    assert (c.replica_num, c.with_hard_pin, c.soft_pin_action, c.soft_pin_ttl_ms) == (1, False, 0, None)
    assert c.preferred_segment == "" and c.preferred_segments == [] and c.group_ids is None
    c.soft_pin_ttl_ms = 1000
    assert store.put("pin", b"x", c) == INVALID
    c.soft_pin_action = SoftPinAction.ENABLE
    assert store.put("pin", b"x", c) == 0
    same = ReplicateConfig()
    same.prefer_alloc_in_same_node = True
    assert store.put("same", b"x", same) == INVALID
    hard = ReplicateConfig()
    hard.replica_num, hard.with_hard_pin = 2, True
    hard.preferred_segment = "127.0.0.1:1"  # unknown: placement falls back
    assert store.put("hard", b"x", hard) == 0 and store.get("hard") == b"x"


def test_setup_forms_and_failures(cluster):
    s = MooncakeDistributedStore()
    assert s.health_check() == 1
    assert s.get("k") == b"" and s.put("k", b"v") == INVALID and s.is_exist("k") == INVALID
    assert s.setup({"metadata_server": cluster.metadata}) == INVALID
    assert s.setup({"local_hostname": "127.0.0.1", "metadata_server": cluster.metadata,
                    "global_segment_size": "16 MB", "local_buffer_size": "2 MB",
                    "master_server_addr": cluster.master_addr}) == 0
    assert s.health_check() == 0 and s.get_hostname().startswith("127.0.0.1:")
    assert s.put("dict-form", b"ok") == 0 and s.get("dict-form") == b"ok"
    assert s.close() == 0 and s.close() == 0 and s.health_check() == 1
    bad = MooncakeDistributedStore()
    assert bad.setup({"local_hostname": "127.0.0.1", "metadata_server": cluster.metadata,
                      "global_segment_size": "lots"}) == INVALID
    assert bad.setup({"local_hostname": "127.0.0.1", "metadata_server": cluster.metadata,
                      "global_segment_size": 10}) == INVALID
    with pytest.raises(TypeError):
        bad.setup("127.0.0.1", cluster.metadata)
    # Master unreachable: a negative code within a bounded time.
    t = time.time()
    rc = bad.setup("127.0.0.1", cluster.metadata, 0, MIB, "tcp", "", "127.0.0.1:1")
    assert rc < 0 and time.time() - t < 15, (rc, time.time() - t)
    assert bad.setup("127.0.0.1", "http://127.0.0.1:1/metadata", 0, MIB, "tcp", "",
                     cluster.master_addr) < 0
    assert bad.setup("127.0.0.1", cluster.metadata, 0, MIB, "ib", "", cluster.master_addr) < 0


def test_sglang_pattern(cluster, store):
    """HiCache: register the host KV pool once, batch_is_exist, store only the missing
    pages with batch_put_from, prefetch with batch_get_into; raw addresses throughout."""
    page, pages = 64 * 1024, 64
    pool = ctypes.create_string_buffer(page * pages * 2)
    base = ctypes.addressof(pool)
    assert store.register_buffer(base, len(pool)) == 0
    # Warm-up as SGLang does it.
    assert store.put("warmup", b"w" * 4096) == 0 and store.is_exist("warmup") == 1
    assert store.get("warmup") == b"w" * 4096
    for i in range(pages):
        ctypes.memset(base + i * page, i, page)
    keys = [f"sglang-page-{i}" for i in range(pages)]
    store.batch_put_from(keys[:10], [base + i * page for i in range(10)], [page] * 10)
    exist = store.batch_is_exist(keys)
    hit = next((i for i, e in enumerate(exist) if e != 1), len(exist))
    assert hit == 10
    missing = [i for i, e in enumerate(exist) if e != 1]
    rcs = store.batch_put_from([keys[i] for i in missing],
                               [base + i * page for i in missing], [page] * len(missing))
    assert all(rc == 0 for rc in rcs)
    assert store.batch_is_exist(keys) == [1] * pages
    dst = base + pages * page
    got = store.batch_get_into(keys, [dst + i * page for i in range(pages)], [page] * pages)
    assert all(n > 0 for n in got)
    assert pool.raw[pages * page:] == pool.raw[:pages * page]
    assert store.remove_all() >= 0
    store.unregister_buffer(base)


def test_vllm_pattern(store):
    """vLLM: K and V of each block in separate tensors, multi-buffer put and get."""
    layers, block = 4, 16 * 1024
    k = ctypes.create_string_buffer(layers * block)
    v = ctypes.create_string_buffer(layers * block)
    for b in (k, v):
        assert store.register_buffer(ctypes.addressof(b), len(b)) == 0
    ctypes.memmove(k, pattern(layers * block, 3), layers * block)
    ctypes.memmove(v, pattern(layers * block, 9), layers * block)
    keys = [f"vllm-{i}" for i in range(layers)]
    addrs = [[ctypes.addressof(k) + i * block, ctypes.addressof(v) + i * block] for i in range(layers)]
    sizes = [[block, block]] * layers
    assert store.batch_is_exist(keys) == [0] * layers
    assert store.batch_put_from_multi_buffers(keys, addrs, sizes, ReplicateConfig()) == [0] * layers
    before_k, before_v = k.raw, v.raw
    ctypes.memset(k, 0, len(k))
    ctypes.memset(v, 0, len(v))
    assert store.batch_get_into_multi_buffers(keys, addrs, sizes) == [2 * block] * layers
    assert k.raw == before_k and v.raw == before_v


def test_init_all_uses_mooncakes_fixed_defaults(cluster, capfd):
    # Master 127.0.0.1:50051 and etcd at 127.0.0.1:2379, as the C++ client: a clear error
    # here (no master there, and no etcd in this build).
    s = MooncakeDistributedStore()
    assert s.init_all("tcp", "") < 0
    err = capfd.readouterr().err
    assert "127.0.0.1:50051" in err or "etcd" in err, err
    ready = cluster.store()
    assert ready.init_all("tcp", "") == INVALID  # already set up
    ready.close()


def test_batch_reads_over_tcp_straight_into_bytes():
    """With the store service's segment in private memory every read crosses TCP: a
    client's `get_batch` of keys it wrote reads them straight into the new `bytes`, one
    exchange per holder, and keys rewritten or removed by another client meanwhile come
    back right (the stale guesses fall back to the master's answer)."""
    from conftest import Cluster
    c = Cluster(service_extra=["--shared_memory=false"])
    try:
        a, b = c.store(), c.store()
        keys = [f"t{i}" for i in range(40)]
        values = [pattern(100 + i * 7919, i) for i in range(40)]
        assert a.put_batch(keys[:20], values[:20]) == 0
        for k, v in zip(keys[20:], values[20:]):
            assert a.put(k, v) == 0
        for _ in range(2):
            assert a.get_batch(keys + ["missing"]) == values + [b""]
        # Another client rewrites one key (new size), another (same size) and removes a
        # third, once the read leases (500 ms here) are over.
        time.sleep(0.6)
        assert b.remove(keys[3]) == 0
        assert b.put(keys[3], b"rewritten") == 0
        assert b.remove(keys[5]) == 0
        same_size = pattern(len(values[7]), 99)
        assert b.remove(keys[7]) == 0
        assert b.put(keys[7], same_size) == 0
        want = list(values)
        want[3], want[5], want[7] = b"rewritten", b"", same_size
        assert a.get_batch(keys) == want
        assert a.get_batch(keys) == want
        a.close()
        b.close()
    finally:
        c.stop()
