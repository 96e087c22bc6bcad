"""The tensor helpers of MooncakeDistributedStore (python-api-2.md §11, §12), against a
real master and store service.

The first half needs no torch: the stored layout, the not-initialised values, the clear
ImportError (torch is hidden through sys.modules, so those tests run with or without it)
and the ``*_tensor_from`` calls. The second half runs only where torch is installed."""

import ctypes
import struct
import subprocess
import sys

import pytest

from conftest import MIB, Registered, assert_not_initialised
from mooncake import _tensor
from mooncake._tensor import METADATA_SIZE, decode_metadata, encode_metadata
from mooncake.store import MooncakeDistributedStore, ReplicateConfig

INVALID, FILE_NOT_FOUND = -600, -1100
NEED_TORCH = "the tensor helpers of mooncake.store need PyTorch: pip install torch"
FLOAT32, INT64, BFLOAT16 = 0, 8, 12


def float_object(values, shape):
    """A stored float32 tensor object, made without torch."""
    data = struct.pack(f"<{len(values)}f", *values)
    return encode_metadata(FLOAT32, shape, shape, len(data)) + data


# ---- the layout (mooncake-integration/integration_utils.h) ----

def test_metadata_is_the_cpp_struct_byte_for_byte():
    meta = encode_metadata(BFLOAT16, (4, 6), (4, 3), 24, layout_kind=1,
                           axes=[(1, 0, 1, 2, 1, 0, 3)])
    assert len(meta) == METADATA_SIZE == 304
    # TensorObjectHeader: magic, version, header_size, dtype, ndim, layout_kind,
    # reserved_flags, data_offset, data_bytes.
    assert meta[0:4] == b"NOOM"  # 0x4d4f4f4e little-endian
    assert struct.unpack_from("<HH", meta, 4) == (1, 304)
    assert struct.unpack_from("<iiII", meta, 8) == (BFLOAT16, 2, 1, 0)
    assert struct.unpack_from("<QQ", meta, 24) == (304, 24)
    # TensorLayoutMetadata: global_shape[8], local_shape[8] (unused dims -1), axis_count.
    assert struct.unpack_from("<8q", meta, 40) == (4, 6, -1, -1, -1, -1, -1, -1)
    assert struct.unpack_from("<8q", meta, 104) == (4, 3, -1, -1, -1, -1, -1, -1)
    assert struct.unpack_from("<II", meta, 168) == (1, 0)
    # LayoutAxis[4]: kind TP, axis_index, shard_rank, shard_count, split_dim, reserved0,
    # reserved1 = the shard's extent along split_dim; unused axes are zero.
    assert struct.unpack_from("<6iq", meta, 176) == (1, 0, 1, 2, 1, 0, 3)
    assert meta[208:] == bytes(96)


def test_decode_applies_the_cpp_validation():
    obj = float_object([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3))
    meta = decode_metadata(obj, len(obj))
    assert (meta.dtype, meta.local_shape, meta.data_offset, meta.data_bytes) == (
        FLOAT32, (2, 3), 304, 24)
    assert decode_metadata(obj, len(obj) + 4) is None  # data_bytes must fill the object
    assert decode_metadata(obj[:300], 300) is None
    bad_magic = b"X" + obj[1:]
    assert decode_metadata(bad_magic, len(obj)) is None
    wrong_shape = encode_metadata(FLOAT32, (2, 4), (2, 4), 24)  # 32 bytes expected
    assert decode_metadata(wrong_shape + bytes(24), 328) is None
    bad_dtype = encode_metadata(15, (6,), (6,), 24)
    assert decode_metadata(bad_dtype + bytes(24), 328) is None
    bad_rank = encode_metadata(FLOAT32, (6,), (6,), 24, 1, [(1, 0, 2, 2, 0, 0, 6)])
    assert decode_metadata(bad_rank + bytes(24), 328) is None


def test_importing_the_store_does_not_import_torch():
    code = "import sys, mooncake.store; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ---- not set up / closed (§12): the not-initialised value, never an exception ----

# (method, args, value). batch_get_tensor_into answers [-600] per key, as in C++.
NOT_SET_UP = [
    ("put_tensor", ("k", None), INVALID),
    ("pub_tensor", ("k", None), INVALID),
    ("upsert_tensor", ("k", None), INVALID),
    ("upsert_pub_tensor", ("k", None), INVALID),
    ("batch_put_tensor", (["a", "b"], [None, None]), [INVALID, INVALID]),
    ("batch_pub_tensor", (["a", "b"], [None, None]), [INVALID, INVALID]),
    ("batch_upsert_tensor", (["a", "b"], [None, None]), [INVALID, INVALID]),
    ("batch_upsert_pub_tensor", (["a", "b"], [None, None]), [INVALID, INVALID]),
    ("put_tensor_from", ("k", 4096, 400), INVALID),
    ("upsert_tensor_from", ("k", 4096, 400), INVALID),
    ("batch_put_tensor_from", (["a"], [4096], [400]), [INVALID]),
    ("batch_upsert_tensor_from", (["a"], [4096], [400]), [INVALID]),
    ("get_tensor", ("k",), None),
    ("batch_get_tensor", (["a", "b"],), [None, None]),
    ("get_tensor_into", ("k", 4096, 400), None),
    ("batch_get_tensor_into", (["a", "b"], [4096, 8192], [400, 400]), [INVALID, INVALID]),
    ("get_tensor_into_cuda", ("k", None), INVALID),
    ("batch_get_tensor_into_cuda", (["a", "b"], [None, None]), [INVALID, INVALID]),
    ("put_tensor_with_tp", ("k", None, 0, 2, 0), INVALID),
    ("pub_tensor_with_tp", ("k", None, None, 0, 2, 0), INVALID),
    ("put_tensor_with_tp_from", ("k", 4096, 400, 0, 2, 0), INVALID),
    ("batch_put_tensor_with_tp", (["a"], [None], 0, 2, 0), [INVALID]),
    ("batch_pub_tensor_with_tp", (["a"], [None], None, 0, 2, 0), [INVALID]),
    ("batch_put_tensor_with_tp_from", (["a"], [4096], [400], 0, 2, 0), [INVALID]),
    ("get_tensor_with_tp", ("k", 0, 2, 0), None),
    ("get_tensor_with_tp_into", ("k", 4096, 400, 0, 2, 0), None),
    ("batch_get_tensor_with_tp", (["a", "b"], 1, 2), [None, None]),
    ("batch_get_tensor_with_tp_into", (["a"], [4096], [400], 0, 2), [None]),
    ("save_tensor_to_safetensor", ("k", "/nonexistent/file"), INVALID),
    ("load_tensor_from_safetensor", ("k", "/nonexistent/file"), None),
]


@pytest.mark.parametrize("row", NOT_SET_UP, ids=[m[0] for m in NOT_SET_UP])
def test_never_set_up_store_returns_the_not_initialised_value(monkeypatch, row):
    assert_not_initialised(MooncakeDistributedStore(), [row], monkeypatch)


def test_closed_store_returns_the_not_initialised_values(cluster, monkeypatch):
    s = cluster.store()
    assert s.close() == 0
    assert_not_initialised(s, NOT_SET_UP, monkeypatch)


# ---- without torch ----

NEEDS_TORCH = [
    ("put_tensor", ("k", None)),
    ("pub_tensor", ("k", None)),
    ("upsert_tensor", ("k", None)),
    ("upsert_pub_tensor", ("k", None)),
    ("batch_put_tensor", (["a"], [None])),
    ("batch_pub_tensor", (["a"], [None])),
    ("batch_upsert_tensor", (["a"], [None])),
    ("batch_upsert_pub_tensor", (["a"], [None])),
    ("get_tensor", ("k",)),
    ("batch_get_tensor", (["a"],)),
    ("get_tensor_into", ("k", 4096, 400)),
    ("batch_get_tensor_into", (["a"], [4096], [400])),
    ("put_tensor_with_tp", ("k", None, 0, 2, 0)),
    ("pub_tensor_with_tp", ("k", None, None, 0, 2, 0)),
    ("put_tensor_with_tp_from", ("k", 4096, 400, 0, 2, 0)),
    ("batch_put_tensor_with_tp", (["a"], [None], 0, 2, 0)),
    ("batch_pub_tensor_with_tp", (["a"], [None], None, 0, 2, 0)),
    ("batch_put_tensor_with_tp_from", (["a"], [4096], [400], 0, 2, 0)),
    ("get_tensor_with_tp", ("k", 0, 2, 0)),
    ("get_tensor_with_tp_into", ("k", 4096, 400, 0, 2, 0)),
    ("batch_get_tensor_with_tp", (["a"], 0, 2)),
    ("batch_get_tensor_with_tp_into", (["a"], [4096], [400], 0, 2)),
    ("save_tensor_to_safetensor", ("k",)),
    ("load_tensor_from_safetensor", ("k", "/nonexistent/file")),
]


def test_without_torch_each_tensor_method_raises_a_clear_import_error(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    for method, args in NEEDS_TORCH:
        with pytest.raises(ImportError, match="^the tensor helpers .* pip install torch$"):
            getattr(store, method)(*args)
    assert str(_tensor.NEED_TORCH) == NEED_TORCH


def test_without_torch_the_from_and_cuda_calls_still_work(store, buffers, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    buf = buffers()
    obj = float_object([1.5, -2.0, 3.25, 4.0], (2, 2))
    buf.write(obj)
    assert store.put_tensor_from("from", buf.addr, len(obj)) == 0
    assert store.get("from") == obj
    other = float_object([7.0, 8.0], (2,))
    buf.write(other, 4096)
    assert store.upsert_tensor_from("from", buf.addr + 4096, len(other)) == 0
    assert store.get("from") == other
    assert store.batch_put_tensor_from(["b1", "b2"], [buf.addr, buf.addr + 4096],
                                       [len(obj), len(other)]) == [0, 0]
    assert store.batch_upsert_tensor_from(["b1"], [buf.addr + 4096], [len(other)]) == [0]
    assert store.get("b1") == other and store.get("b2") == other
    # Invalid metadata, a size that does not match it, a null pointer, short lists.
    assert store.put_tensor_from("bad", buf.addr + 8192, 400) == INVALID
    assert store.put_tensor_from("bad", buf.addr, len(obj) + 4) == INVALID
    assert store.put_tensor_from("bad", 0, len(obj)) == INVALID
    assert store.batch_put_tensor_from(["x", "y"], [buf.addr, buf.addr + 8192],
                                       [len(obj), 400]) == [INVALID, INVALID]
    assert store.batch_put_tensor_from(["x", "y"], [buf.addr], [len(obj)]) == [INVALID] * 2
    assert store.batch_put_tensor_from([], [], []) == []
    assert store.is_exist("bad") == 0 and store.is_exist("x") == 0
    # tp_size <= 1 is a plain put_tensor_from.
    assert store.put_tensor_with_tp_from("tp1", buf.addr, len(obj)) == 0
    assert store.get("tp1") == obj
    assert store.get_tensor_into_cuda("from", None) == INVALID
    assert store.batch_get_tensor_into_cuda(["a", "b"], [None, None]) == [INVALID] * 2


# ---- with torch ----

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def dtype_cases(torch):
    names = ["float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
             "int64", "uint64", "bool", "float16", "bfloat16", "float8_e4m3fn",
             "float8_e5m2"]
    return [(code, getattr(torch, n)) for code, n in enumerate(names) if hasattr(torch, n)]


def sample(torch, dtype, shape):
    t = torch.arange(1, 1 + torch.Size(shape).numel(), dtype=torch.float32) % 100
    return t.reshape(shape).to(dtype)


def same(a, b):
    """Equal dtype, shape and bytes (float8 has no == on CPU)."""
    return a.dtype == b.dtype and a.shape == b.shape and bytes_of(a) == bytes_of(b)


def bytes_of(t):
    t = t.contiguous()
    n = t.numel() * t.element_size()
    return ctypes.string_at(t.data_ptr(), n) if n else b""


def test_round_trip_of_every_dtype_and_the_stored_layout(store, torch):
    for code, dtype in dtype_cases(torch):
        t = sample(torch, dtype, (2, 3, 4))
        key = f"dt{code}"
        assert store.put_tensor(key, t) == 0, dtype
        got = store.get_tensor(key)
        assert same(got, t), dtype
        raw = store.get(key)
        assert raw[:METADATA_SIZE] == encode_metadata(code, (2, 3, 4), (2, 3, 4), len(raw) - 304)
        assert struct.unpack_from("<i", raw, 8)[0] == code
        assert raw[METADATA_SIZE:] == bytes_of(t)


def test_shapes_and_layout_quirks(store, torch):
    cases = {"1d": (5,), "empty": (0,), "empty2": (3, 0), "8d": (1, 2, 1, 2, 1, 2, 1, 2)}
    for key, shape in cases.items():
        t = sample(torch, torch.float32, shape)
        assert store.put_tensor(key, t) == 0
        got = store.get_tensor(key)
        assert got.shape == t.shape and torch.equal(got, t), key
    # A non-contiguous tensor is stored in row-major order.
    t = sample(torch, torch.int64, (3, 4)).t()
    assert store.put_tensor("transposed", t) == 0
    assert torch.equal(store.get_tensor("transposed"), t)
    # As in C++, a 0-dimensional tensor comes back 1-D.
    assert store.put_tensor("scalar", torch.tensor(7.5)) == 0
    scalar = store.get_tensor("scalar")
    assert scalar.shape == (1,) and scalar.item() == 7.5
    # The returned tensor owns writable memory.
    got = store.get_tensor("1d")
    got[0] = 42
    assert got[0] == 42 and store.get_tensor("1d")[0] == 1


def test_refused_tensors_and_missing_keys(store, torch):
    assert store.put_tensor("nine", torch.zeros([1] * 9)) == INVALID
    assert store.put_tensor("complex", torch.zeros(2, dtype=torch.complex64)) == INVALID
    assert store.put_tensor("list", [1, 2]) == INVALID
    assert store.put_tensor("param", torch.nn.Parameter(torch.zeros(2))) == INVALID
    assert store.is_exist("nine") == 0 and store.is_exist("param") == 0
    assert store.get_tensor("missing") is None
    assert store.put("raw", b"not a tensor object") == 0
    assert store.get_tensor("raw") is None


def test_upsert_pub_and_batches(store, torch):
    a, b = sample(torch, torch.float32, (4,)), sample(torch, torch.int32, (2, 2))
    assert store.put_tensor("k", a) == 0
    assert store.upsert_tensor("k", b) == 0
    assert torch.equal(store.get_tensor("k"), b)
    config = ReplicateConfig()
    config.prefer_alloc_in_same_node = True  # a hint, accepted as by C++'s tensor puts
    assert store.pub_tensor("pub", a, config) == 0
    assert store.upsert_pub_tensor("pub", b, config) == 0
    assert torch.equal(store.get_tensor("pub"), b)
    bad = ReplicateConfig()
    bad.preferred_segments = ["x:1", "y:2"]  # not replica_num of them
    assert store.pub_tensor("bad", a, bad) == INVALID
    assert store.batch_pub_tensor(["b1", "b2"], [a, b], bad) == [INVALID] * 2

    assert store.batch_put_tensor(["b1", "b2", "b3"], [a, "no", b]) == [0, INVALID, 0]
    got = store.batch_get_tensor(["b1", "b2", "b3"])
    assert torch.equal(got[0], a) and got[1] is None and torch.equal(got[2], b)
    assert store.batch_upsert_tensor(["b1", "b3"], [b, a]) == [0, 0]
    assert store.batch_upsert_pub_tensor(["b1"], [a], config) == [0]
    assert [t.dtype for t in store.batch_get_tensor(["b1", "b3"])] == [a.dtype, a.dtype]
    # A failing batch still reports each key's own code.
    assert store.batch_put_tensor(["", "b4"], [a, b]) == [INVALID, 0]
    assert torch.equal(store.get_tensor("b4"), b)
    assert store.batch_put_tensor(["x", "y"], [a]) == [INVALID] * 2
    assert store.batch_put_tensor([], []) == []
    groups = ReplicateConfig()
    groups.group_ids = ["g1"]
    assert store.batch_pub_tensor(["g1", "g2"], [a, b], groups) == [INVALID] * 2
    groups.group_ids = ["g1", "g2"]
    assert store.batch_pub_tensor(["g1", "g2"], [a, b], groups) == [0, 0]


def test_tp_sharding(store, torch):
    full = sample(torch, torch.float32, (4, 6))
    assert store.put_tensor_with_tp("w", full, tp_rank=1, tp_size=2, split_dim=1) == 0
    assert store.is_exist("w") == 0
    for rank, part in enumerate(full.chunk(2, dim=1)):
        assert torch.equal(store.get_tensor_with_tp("w", tp_rank=rank, tp_size=2), part)
        raw = store.get(f"w_tp_{rank}")
        meta = decode_metadata(raw, len(raw))
        assert (meta.layout_kind, meta.global_shape, meta.local_shape) == (1, (4, 6), (4, 3))
        assert meta.axes == [(1, 0, rank, 2, 1, 0, 3)]
        assert raw[:304] == encode_metadata(FLOAT32, (4, 6), (4, 3), 48, 1,
                                            [(1, 0, rank, 2, 1, 0, 3)])
    # Only even splits along an existing dimension.
    assert store.put_tensor_with_tp("odd", full, tp_size=4, split_dim=1) == INVALID
    assert store.put_tensor_with_tp("dim", full, tp_size=2, split_dim=2) == INVALID
    assert store.put_tensor_with_tp("neg", full, tp_size=2, split_dim=-1) == INVALID
    assert store.is_exist("odd_tp_0") == 0
    # tp_size <= 1 is a plain put and get.
    assert store.put_tensor_with_tp("plain", full) == 0
    assert torch.equal(store.get_tensor_with_tp("plain"), full)
    assert store.pub_tensor_with_tp("pub", full, ReplicateConfig(), 0, 3, 0) == INVALID
    assert store.pub_tensor_with_tp("pub", full, ReplicateConfig(), 0, 2, 0) == 0
    assert torch.equal(store.get_tensor("pub_tp_1"), full[2:])

    other = sample(torch, torch.int64, (2, 8))
    assert store.batch_put_tensor_with_tp(["b1", "b2", "b3"], [full, other, None],
                                          tp_size=2, split_dim=0) == [0, 0, INVALID]
    got = store.batch_get_tensor_with_tp(["b1", "b2"], tp_rank=1, tp_size=2)
    assert torch.equal(got[0], full[2:]) and torch.equal(got[1], other[1:])
    assert store.batch_pub_tensor_with_tp(["c1"], [other], ReplicateConfig(), 0, 4, 1) == [0]
    groups = ReplicateConfig()
    groups.group_ids = ["g"]  # one per tensor (not per shard) for the batch form
    assert store.batch_pub_tensor_with_tp(["c2"], [other], groups, 0, 2, 0) == [0]
    assert store.pub_tensor_with_tp("c3", other, groups, 0, 2, 0) == INVALID  # one per shard
    assert torch.equal(store.get_tensor("c1_tp_3"), other[:, 6:])


def test_tensors_larger_than_the_local_buffer(cluster, torch):
    # As in C++, tensor puts are not bounded by the local (staging) buffer; get_tensor is,
    # in both wheels, and get_tensor_into is not.
    s = cluster.store(buffer=1 * MIB)
    s.remove_all(True)
    try:
        big, small = sample(torch, torch.float32, (1024, 640)), sample(torch, torch.int8, (9,))
        assert s.put("bytes", bytes(2 * MIB)) == INVALID
        assert s.put_tensor("big", big) == 0
        assert s.get_size("big") == METADATA_SIZE + 4 * 1024 * 640
        assert s.get_tensor("big") is None
        buf = Registered(s, 4 * MIB)
        try:
            assert torch.equal(s.get_tensor_into("big", buf.addr, buf.size), big)
            assert s.upsert_tensor("big", big * 2) == 0
            assert torch.equal(s.get_tensor_into("big", buf.addr, buf.size), big * 2)
            assert s.batch_put_tensor(["b", "s"], [big, small]) == [0, 0]
            assert s.put_tensor_with_tp("w", big, tp_size=2, split_dim=0) == 0
            assert torch.equal(s.get_tensor_into("w_tp_1", buf.addr, buf.size), big[512:])
        finally:
            buf.close()
        assert torch.equal(s.get_tensor("s"), small)
    finally:
        s.remove_all(True)
        s.close()


def test_get_tensor_into_a_registered_buffer(store, buffers, torch):
    t = sample(torch, torch.float64, (3, 5))
    assert store.put_tensor("k", t) == 0
    buf = buffers()
    got = store.get_tensor_into("k", buf.addr, buf.size)
    assert torch.equal(got, t)
    assert got.data_ptr() == buf.addr + METADATA_SIZE  # a view of the buffer
    buf.write(struct.pack("<d", -1.0), METADATA_SIZE)
    assert got[0, 0] == -1.0
    assert store.get_tensor_into("k", buf.addr, 100) is None  # too small
    assert store.get_tensor_into("missing", buf.addr, buf.size) is None
    assert store.get_tensor_into("k", 0, buf.size) is None

    u = sample(torch, torch.int16, (7,))
    assert store.put_tensor("u", u) == 0
    half = buf.size // 2
    got = store.batch_get_tensor_into(["k", "missing", "u"],
                                      [buf.addr, buf.addr + 4096, buf.addr + half],
                                      [4096, 4096, half])
    assert torch.equal(got[0], t) and got[1] is None and torch.equal(got[2], u)
    assert store.batch_get_tensor_into(["k"], [0], [4096]) == [INVALID]
    assert store.batch_get_tensor_into(["k", "u"], [buf.addr], [4096]) == [INVALID] * 2

    assert store.put_tensor_with_tp("w", t, tp_size=3, split_dim=0) == 0
    got = store.get_tensor_with_tp_into("w", buf.addr, 4096, tp_rank=2, tp_size=3)
    assert torch.equal(got, t[2:])
    got = store.batch_get_tensor_with_tp_into(["w", "w"], [buf.addr, buf.addr + half],
                                              [4096, 4096], tp_rank=0, tp_size=3)
    assert torch.equal(got[0], t[:1]) and torch.equal(got[1], t[:1])


def test_tp_puts_from_a_buffer_holding_the_full_tensor(store, buffers, torch):
    buf = buffers()
    full = sample(torch, torch.bfloat16, (4, 2))
    assert store.put_tensor("full", full) == 0
    n = store.get_into("full", buf.addr, buf.size)
    assert n == METADATA_SIZE + 16
    assert store.put_tensor_with_tp_from("w", buf.addr, n, tp_size=2, split_dim=0) == 0
    assert torch.equal(store.get_tensor("w_tp_1"), full[2:])
    assert store.put_tensor_with_tp_from("w", buf.addr, n + 2, tp_size=2) == INVALID
    assert store.batch_put_tensor_with_tp_from(["v", "bad"], [buf.addr, 0], [n, n],
                                               tp_size=4, split_dim=0) == [0, INVALID]
    assert torch.equal(store.get_tensor("v_tp_3"), full[3:])


def test_safetensors_round_trip(store, torch, tmp_path):
    pytest.importorskip("safetensors.torch")  # it needs numpy too
    t = sample(torch, torch.float16, (3, 3))
    assert store.put_tensor("w", t) == 0
    path = str(tmp_path / "w.safetensors")
    assert store.save_tensor_to_safetensor("w", path) == 0
    assert store.save_tensor_to_safetensor("missing", path + "2") == FILE_NOT_FOUND
    loaded = store.load_tensor_from_safetensor("w2", path)  # no "w2" inside: the first
    assert torch.equal(loaded, t) and torch.equal(store.get_tensor("w2"), t)
    assert store.load_tensor_from_safetensor(key="w", file_name=path) is not None
    assert torch.equal(store.load_tensor_from_safetensor(file_name=path), t)
    assert torch.equal(store.get_tensor(path), t)  # stored under the file name
    assert store.load_tensor_from_safetensor("x", str(tmp_path / "absent")) is None


# ---- mooncake.store._serialize_tensor / _deserialize_tensor / _tensor_metadata_size ----

def test_tensor_object_helpers_without_torch(monkeypatch):
    from mooncake import store as store_module

    monkeypatch.setitem(sys.modules, "torch", None)  # torch is not needed to refuse
    assert store_module._tensor_metadata_size() == METADATA_SIZE == 304
    with pytest.raises(TypeError):
        store_module._tensor_metadata_size(1)
    with pytest.raises(ValueError, match="unsupported tensor for Mooncake tensor"):
        store_module._serialize_tensor([1.0, 2.0])  # not a tensor: refused before torch
    for bad in (b"", b"x" * 303, float_object([1.0, 2.0], (2,))[:-1],
                float_object([1.0, 2.0], (2,)) + b"\0",
                encode_metadata(FLOAT32, (2,), (2,), 8)):  # metadata without its data
        with pytest.raises(ValueError, match="invalid serialized Mooncake tensor payload"):
            store_module._deserialize_tensor(bad)
    for not_bytes in (bytearray(10), memoryview(b"x"), "x", None):
        with pytest.raises(TypeError, match="incompatible function arguments"):
            store_module._deserialize_tensor(not_bytes)
    with pytest.raises(TypeError):  # positional only, as the pybind11 arg0
        store_module._deserialize_tensor(payload=b"")
    # A valid payload needs torch to become a tensor.
    with pytest.raises(ImportError, match="need PyTorch"):
        store_module._deserialize_tensor(float_object([1.0, 2.0], (2,)))


def test_serialize_tensor_is_the_cpp_object(torch):
    from mooncake.store import _deserialize_tensor, _serialize_tensor

    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    meta, ptr, nbytes, owner = _serialize_tensor(t)
    # The first 64 bytes the C++ wheel (0.3.13.post1) returns for this tensor.
    assert meta[:64].hex() == (
        "4e4f4f4d01003001000000000200000000000000000000003001000000000000"
        "180000000000000002000000000000000300000000000000ffffffffffffffff")
    assert meta == encode_metadata(FLOAT32, (2, 3), (2, 3), 24)
    assert (ptr, nbytes) == (t.data_ptr(), 24) and owner is t  # contiguous: itself
    assert torch.equal(_deserialize_tensor(meta + ctypes.string_at(ptr, nbytes)), t)

    nc = t.t()  # not contiguous: a contiguous copy owns the data
    meta, ptr, nbytes, owner = _serialize_tensor(nc)
    assert owner is not nc and owner.is_contiguous() and torch.equal(owner, nc)
    assert ptr == owner.data_ptr() and meta == encode_metadata(FLOAT32, (3, 2), (3, 2), 24)
    assert ctypes.string_at(ptr, nbytes) == bytes_of(nc)

    for code, dtype in dtype_cases(torch):
        x = sample(torch, dtype, (2, 1, 3))
        meta, ptr, nbytes, owner = _serialize_tensor(x)
        assert meta == encode_metadata(code, (2, 1, 3), (2, 1, 3), nbytes), dtype
        got = _deserialize_tensor(meta + ctypes.string_at(ptr, nbytes))
        assert same(got, x), dtype


def test_deserialize_tensor_quirks(torch):
    from mooncake.store import _deserialize_tensor, _serialize_tensor

    meta, ptr, nbytes, _ = _serialize_tensor(torch.tensor(3.5))  # 0-dim
    assert nbytes == 4 and struct.unpack_from("<i", meta, 12)[0] == 0  # ndim 0
    got = _deserialize_tensor(meta + ctypes.string_at(ptr, nbytes))
    assert got.shape == (1,) and got.item() == 3.5  # comes back 1-D, as in C++

    meta, _, nbytes, _ = _serialize_tensor(torch.empty(0, 4))
    assert nbytes == 0
    got = _deserialize_tensor(meta)  # an empty tensor is its metadata alone
    assert got.shape == (0, 4) and got.dtype == torch.float32

    payload = float_object([1.0, 2.0, 3.0, 4.0], (2, 2))
    got = _deserialize_tensor(payload)
    got[0, 0] = 9.0  # a writable private copy
    assert payload == float_object([1.0, 2.0, 3.0, 4.0], (2, 2))
    assert got.tolist() == [[9.0, 2.0], [3.0, 4.0]]


def test_serialize_tensor_refusals(torch):
    from mooncake.store import _serialize_tensor

    refused = [None, [1, 2], torch.nn.Parameter(torch.zeros(2)),  # class name "Parameter"
               torch.zeros([1] * 9)]
    if hasattr(torch, "complex64"):
        refused.append(torch.zeros(2, dtype=torch.complex64))
    for value in refused:
        with pytest.raises(ValueError, match="unsupported tensor for Mooncake tensor"):
            _serialize_tensor(value)
