"""The ``*_with_parallelism*`` tensor calls of MooncakeDistributedStore and the classes
ParallelAxis, TensorParallelism and ReadTarget (python-api-2.md §11, §12), against a real
master and store service.

The first half needs no torch (it is hidden through sys.modules): the classes, the key
names and manifest layout, the not-initialised values, the ImportError, and the
``*_from`` writes, which only rearrange bytes. The second half runs only where torch is
installed. The expected objects and results are those the C++ wheel gave for the same
calls."""

import ctypes
import struct
import sys

import pytest

from conftest import assert_not_initialised
from mooncake import _tensor_parallel as tp_mod
from mooncake._tensor import encode_metadata
from mooncake.store import (MooncakeDistributedStore, ParallelAxis, ReadTarget,
                            ReplicateConfig, TensorParallelism)

INVALID = -600
FLOAT32 = 0
MIB = 1 << 20


def ax(kind, rank=0, size=1, split_dim=None, expert_id=None, stage_id=None):
    """A ParallelAxis made the way C++ code must make it (no constructor arguments)."""
    a = ParallelAxis()
    a.kind, a.rank, a.size = kind, rank, size
    a.split_dim, a.expert_id, a.stage_id = split_dim, expert_id, stage_id
    return a


def par(*axes):
    p = TensorParallelism()
    p.axes = list(axes)
    return p


def target(mode, parallelism=None):
    t = ReadTarget()
    t.mode = mode
    t.parallelism = parallelism
    return t


class Writer:
    """A writer partition: any object with rank, size and split_dim."""

    def __init__(self, rank, size, split_dim):
        self.rank, self.size, self.split_dim = rank, size, split_dim


def floats(values):
    return struct.pack(f"<{len(values)}f", *values)


def full_object(values, shape):
    data = floats(values)
    return encode_metadata(FLOAT32, shape, shape, len(data)) + data


def shard_header(global_shape, local_shape, axes, nbytes):
    """The C++ shard TensorMetadata: layout_kind 1 and one LayoutAxis per axis."""
    return encode_metadata(FLOAT32, global_shape, local_shape, nbytes, layout_kind=1,
                           axes=axes)


def manifest(shape, split_dim, count, dtype=FLOAT32):
    return (struct.pack("<IHHiiiii", 0x574D414E, 1, 96, dtype, len(shape), split_dim, count,
                        0) + bytes(4)
            + struct.pack("<8q", *(tuple(shape) + (-1,) * (8 - len(shape)))))


# ---- the classes (pybind11 classes in C++) ----

def test_the_classes_are_exported_with_the_cpp_defaults():
    import mooncake.store as store_module

    for name in ("ParallelAxis", "TensorParallelism", "ReadTarget"):
        assert name in store_module.__all__
    a = ParallelAxis()
    assert (a.kind, a.rank, a.size, a.split_dim, a.expert_id, a.stage_id) == (
        "", 0, 1, None, None, None)
    assert TensorParallelism().axes == []
    t = ReadTarget()
    assert (t.mode, t.parallelism) == ("as_stored", None)


def test_read_target_mode_is_checked_and_normalised():
    t = ReadTarget()
    for mode in ("shard", "FULL", "As_Stored"):
        t.mode = mode
        assert t.mode == mode.lower()
    with pytest.raises(RuntimeError, match="^Unsupported ReadTarget mode$"):
        t.mode = "mixed"
    assert t.mode == "as_stored"
    with pytest.raises(TypeError):
        t.mode = 1
    with pytest.raises(TypeError):
        t.parallelism = [ax("tp", 0, 2, 0)]


def test_fields_are_typed_and_held_as_copies_as_in_cpp():
    a = ax("tp", 1, 2, 0)
    with pytest.raises(TypeError):
        a.rank = "1"
    with pytest.raises(TypeError):
        a.split_dim = 1.5
    with pytest.raises(TypeError):
        a.kind = 3
    p = par(a)
    a.rank = 0  # the TensorParallelism holds a copy
    assert p.axes[0].rank == 1
    p.axes.append(ax("dp"))  # axes is a copy: appending to it changes nothing
    assert len(p.axes) == 1
    with pytest.raises(TypeError):
        p.axes = ["tp"]
    t = target("shard", p)
    p.axes = []
    assert len(t.parallelism.axes) == 1


def test_key_names_and_manifest_layout():
    Axis = tp_mod.Axis
    key = tp_mod.parallelism_key
    assert key("w", [Axis(1, 3, 4, 0, None, None)]) == "w_tp_3"
    axes = [Axis(3, 0, 2, None, None, 1), Axis(1, 1, 2, 1, None, None),
            Axis(2, 1, 4, None, 5, None), Axis(0, 1, 2, None, None, None)]
    assert key("w", axes) == "w__dp_1of2__tp_1of2_sd1__ep_1of4_eid5__pp_0of2_sid1"
    assert tp_mod.writer_shard_key("w", Axis(1, 1, 3, 1, None, None)) == "w__writer_1of3_sd1"
    assert tp_mod.encode_manifest((4, 6), FLOAT32, 1, 2) == manifest((4, 6), 1, 2)
    assert len(manifest((4, 6), 1, 2)) == 96
    m = tp_mod.decode_manifest(manifest((4, 6), 1, 2))
    assert (m.dtype, m.split_dim, m.shard_count, m.global_shape) == (0, 1, 2, (4, 6))
    assert tp_mod.decode_manifest(manifest((4, 6), 2, 2)) is None  # split_dim >= ndim
    assert tp_mod.decode_manifest(b"") is None


# ---- not set up / closed (§12) ----

P = par(ax("tp", 0, 2, 0))
NOT_SET_UP = [
    ("put_tensor_with_parallelism", ("k", None, P), INVALID),
    ("upsert_tensor_with_parallelism", ("k", None), INVALID),
    ("put_tensor_with_parallelism_from", ("k", 4096, 400, P), INVALID),
    ("upsert_tensor_with_parallelism_from", ("k", 4096, 400), INVALID),
    ("batch_put_tensor_with_parallelism", (["a", "b"], [None, None]), [INVALID] * 2),
    ("batch_upsert_tensor_with_parallelism", (["a"], [None], [P]), [INVALID]),
    ("batch_put_tensor_with_parallelism_from", (["a"], [4096], [400]), [INVALID]),
    ("batch_upsert_tensor_with_parallelism_from", (["a"], [4096], [400], None, None,
                                                   [Writer(0, 2, 0)]), [INVALID]),
    ("get_tensor_with_parallelism", ("k", target("full")), None),
    ("get_tensor_with_parallelism_into", ("k", 4096, 400), None),
    ("batch_get_tensor_with_parallelism", (["a", "b"], [None, target("shard", P)]),
     [None, None]),
    ("batch_get_tensor_with_parallelism_into", (["a"], [4096], [400]), [None]),
]


@pytest.mark.parametrize("row", NOT_SET_UP, ids=[m[0] for m in NOT_SET_UP])
def test_never_set_up_store_returns_the_not_initialised_value(monkeypatch, row):
    assert_not_initialised(MooncakeDistributedStore(), [row], monkeypatch)


def test_closed_store_returns_the_not_initialised_values(cluster, monkeypatch):
    s = cluster.store()
    assert s.close() == 0
    assert_not_initialised(s, NOT_SET_UP, monkeypatch)


# ---- without torch ----

def test_without_torch_tensor_calls_raise_a_clear_import_error(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    calls = [
        ("put_tensor_with_parallelism", ("k", None)),
        ("put_tensor_with_parallelism", ("k", None, P)),
        ("upsert_tensor_with_parallelism", ("k", None, None, None, Writer(0, 2, 0))),
        ("batch_put_tensor_with_parallelism", (["a"], [None], [P])),
        ("get_tensor_with_parallelism", ("k",)),
        ("get_tensor_with_parallelism_into", ("k", 4096, 400)),
        ("batch_get_tensor_with_parallelism", (["a"], [None])),
        ("batch_get_tensor_with_parallelism_into", (["a"], [4096], [400])),
    ]
    for method, args in calls:
        with pytest.raises(ImportError, match="pip install torch$"):
            getattr(store, method)(*args)


def test_invalid_requests_are_refused_before_torch_is_needed(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    bad = [
        par(ax("tp", 0, 2)),                     # TP without split_dim
        par(ax("xp", 0, 2)),                     # unknown kind
        par(ax("dp", 0, 2), ax("DP", 1, 2)),     # duplicate kinds
        par(ax("tp", 2, 2, 0)),                  # rank >= size
        par(ax("dp", 0, 2, 0)),                  # DP with split_dim
        par(ax("ep", 0, 2)),                     # EP without expert_id
        par(ax("pp", 0, 2)),                     # PP without stage_id
        par(),                                   # no axes
    ]
    for p in bad:
        assert store.put_tensor_with_parallelism("bad", None, p) == INVALID, p
    assert store.put_tensor_with_parallelism("bad", None, P, None, Writer(0, 2, 0)) == INVALID
    assert store.put_tensor_with_parallelism("bad", None, None, None,
                                             Writer(2, 2, 0)) == INVALID
    # parallelisms must be a list of the keys' length; not both lists.
    assert store.batch_put_tensor_with_parallelism(["a", "b"], [None, None],
                                                   (None, None)) == [INVALID] * 2
    assert store.batch_put_tensor_with_parallelism(["a", "b"], [None, None],
                                                   [None]) == [INVALID] * 2
    assert store.batch_put_tensor_with_parallelism(["a"], [None], [P], None,
                                                   [Writer(0, 2, 0)]) == [INVALID]
    assert store.is_exist("bad") == 0


def test_writes_from_a_buffer_store_the_cpp_objects_without_torch(store, buffers,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    values = [float(v) for v in range(1, 25)]
    rows = [values[i * 6:(i + 1) * 6] for i in range(4)]  # a (4, 6) float32 tensor
    obj = full_object(values, (4, 6))
    buf = buffers()
    buf.write(obj)

    # writer_partition: this writer's slice along split_dim, then the manifest.
    assert store.put_tensor_with_parallelism_from(
        "fw", buf.addr, len(obj), writer_partition=Writer(1, 3, 1)) == 0
    data = floats([v for r in rows for v in r[2:4]])
    assert store.get("fw__writer_1of3_sd1") == shard_header(
        (4, 6), (4, 2), [(1, 0, 1, 3, 1, 0, 2)], len(data)) + data
    assert store.get("fw__writer_manifest") == manifest((4, 6), 1, 3)

    # A TP axis alone: every rank's slice under "{key}_tp_{rank}", no manifest.
    assert store.put_tensor_with_parallelism_from("ftp", buf.addr, len(obj), P) == 0
    for rank in range(2):
        data = floats([v for r in rows[2 * rank:2 * rank + 2] for v in r])
        assert store.get(f"ftp_tp_{rank}") == shard_header(
            (4, 6), (2, 6), [(1, 0, rank, 2, 0, 0, 2)], len(data)) + data
    assert store.is_exist("ftp__parallelism_manifest") == 0

    # DP + TP: every TP rank under the canonical key; axes in the order given.
    assert store.put_tensor_with_parallelism_from(
        "fmx", buf.addr, len(obj), par(ax("dp", 1, 2), ax("tp", 0, 3, 1))) == 0
    for rank in range(3):
        data = floats([v for r in rows for v in r[2 * rank:2 * rank + 2]])
        assert store.get(f"fmx__dp_1of2__tp_{rank}of3_sd1") == shard_header(
            (4, 6), (4, 2), [(0, 0, 1, 2, -1, 0, 0), (1, 1, rank, 3, 1, 0, 2)],
            len(data)) + data

    # No TP axis: the object with the axes; EP keeps expert_id in reserved0.
    assert store.upsert_tensor_with_parallelism_from(
        "fep", buf.addr, len(obj), par(ax("ep", 0, 2, expert_id=9))) == 0
    assert store.get("fep__ep_0of2_eid9") == shard_header(
        (4, 6), (4, 6), [(2, 0, 0, 2, -1, 9, 0)], 96) + floats(values)

    # Neither: a plain put_tensor_from; a config goes to put_from.
    assert store.put_tensor_with_parallelism_from("fd", buf.addr, len(obj)) == 0
    assert store.put_tensor_with_parallelism_from("fd2", buf.addr, len(obj), None,
                                                  ReplicateConfig()) == 0
    assert store.get("fd") == obj and store.get("fd2") == obj

    # Invalid buffers.
    assert store.put_tensor_with_parallelism_from("bad", buf.addr, 100, P) == INVALID
    assert store.put_tensor_with_parallelism_from("bad", 0, len(obj)) == INVALID
    assert store.put_tensor_with_parallelism_from(
        "bad", buf.addr, len(obj), writer_partition=Writer(0, 4, 1)) == INVALID  # 6 % 4

    # Batches: one request per key.
    assert store.batch_put_tensor_with_parallelism_from(
        ["b1", "b2"], [buf.addr] * 2, [len(obj)] * 2, [par(ax("tp", 0, 2, 1)), None]) == [0, 0]
    assert store.get("b2") == obj and store.is_exist("b1_tp_1") == 1
    assert store.batch_upsert_tensor_with_parallelism_from(
        ["b3"], [buf.addr], [len(obj)], writer_partitions=[Writer(0, 2, 0)]) == [0]
    assert store.get("b3__writer_manifest") == manifest((4, 6), 0, 2)
    assert store.batch_put_tensor_with_parallelism_from(["b4", "b5"], [buf.addr] * 2,
                                                        [len(obj)] * 2) == [0, 0]
    assert store.batch_put_tensor_with_parallelism_from(["b6", "b7"], [buf.addr],
                                                        [len(obj)]) == [INVALID] * 2


# ---- with torch ----

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def sample(torch, shape, dtype=None, base=1):
    t = torch.arange(base, base + torch.Size(shape).numel(), dtype=torch.float32) % 100
    return t.reshape(shape).to(dtype or torch.float32)


def same(a, b):
    return a is not None and a.dtype == b.dtype and a.shape == b.shape and \
        bool((a.float() == b.float()).all())


def test_full_and_generic_writes_store_the_cpp_objects(store, torch):
    full = sample(torch, (4, 6))
    assert store.put_tensor_with_parallelism("direct", full) == 0
    assert same(store.get_tensor("direct"), full)
    # writer_partition: the slice and the manifest.
    assert store.put_tensor_with_parallelism("wp", full, writer_partition=Writer(1, 2, 1)) == 0
    data = full[:, 3:].contiguous().numpy().tobytes()
    assert store.get("wp__writer_1of2_sd1") == shard_header(
        (4, 6), (4, 3), [(1, 0, 1, 2, 1, 0, 3)], len(data)) + data
    assert store.get("wp__writer_manifest") == manifest((4, 6), 1, 2)
    # A TP axis alone: the tensor is this rank's shard; the global shape is inferred.
    assert store.put_tensor_with_parallelism("tp1", full[2:], par(ax("tp", 1, 2, 0))) == 0
    data = full[2:].numpy().tobytes()
    assert store.get("tp1_tp_1") == shard_header(
        (4, 6), (2, 6), [(1, 0, 1, 2, 0, 0, 2)], len(data)) + data
    assert store.get("tp1__parallelism_manifest") == manifest((4, 6), 0, 2)
    # TP with other axes: the tensor is the full one and the TP rank's slice is stored.
    assert store.put_tensor_with_parallelism(
        "mx", full, par(ax("tp", 1, 2, 1), ax("dp", 1, 2))) == 0
    data = full[:, 3:].contiguous().numpy().tobytes()
    assert store.get("mx__dp_1of2__tp_1of2_sd1") == shard_header(
        (4, 6), (4, 3), [(1, 0, 1, 2, 1, 0, 3), (0, 1, 1, 2, -1, 0, 0)], len(data)) + data
    assert store.get("mx__parallelism_manifest") == manifest((4, 6), 1, 2)
    # No TP axis: the tensor as is, PP keeps stage_id in reserved0.
    assert store.put_tensor_with_parallelism(
        "pe", full, par(ax("PP", 0, 2, stage_id=1), ax("Ep", 1, 4, expert_id=5))) == 0
    assert store.get("pe__ep_1of4_eid5__pp_0of2_sid1") == shard_header(
        (4, 6), (4, 6), [(3, 0, 0, 2, -1, 1, 0), (2, 1, 1, 4, -1, 5, 0)], 96) + \
        full.numpy().tobytes()
    # Refused tensors.
    assert store.put_tensor_with_parallelism("bad", full, writer_partition=Writer(0, 4, 1)) \
        == INVALID
    assert store.put_tensor_with_parallelism("bad", full, par(ax("tp", 0, 4, 1),
                                                              ax("dp", 0, 2))) == INVALID
    assert store.put_tensor_with_parallelism("bad", "x", P) == INVALID
    assert store.is_exist("bad_tp_0") == 0


def test_reads_by_read_target(store, torch):
    full = sample(torch, (4, 6))
    for rank in range(2):
        assert store.put_tensor_with_parallelism("tp1", full[2 * rank:2 * rank + 2],
                                                 par(ax("tp", rank, 2, 0))) == 0
        assert store.put_tensor_with_parallelism("wp", full,
                                                 writer_partition=Writer(rank, 2, 1)) == 0
        assert store.put_tensor_with_parallelism(
            "mx", full, par(ax("tp", rank, 2, 1), ax("dp", 1, 2))) == 0
    get = store.get_tensor_with_parallelism
    # as_stored reads the key itself.
    assert get("tp1") is None and same(get("tp1_tp_0"), full[:2])
    # shard: the exact shard, or the slice cut from the stored ones (TP 2 -> TP 4).
    assert same(get("tp1", target("shard", par(ax("tp", 1, 2, 0)))), full[2:])
    assert same(get("tp1", target("shard", par(ax("tp", 1, 4, 0)))), full[1:2])
    assert get("tp1", target("shard", par(ax("tp", 2, 3, 0)))) is None  # 4 % 3
    # full: put together from the shards.
    assert same(get("tp1", target("full", par(ax("tp", 0, 2, 0)))), full)
    assert same(get("tp1", target("full", par(ax("tp", 0, 4, 0)))), full)
    assert get("tp1", target("full", par(ax("tp", 0, 2, 1)))) is None  # split_dim mismatch
    # Writer partitions: full with no parallelism; a shard by its TP axis.
    assert same(get("wp", target("full")), full)
    assert same(get("wp", target("shard", par(ax("tp", 1, 2, 1)))), full[:, 3:])
    # Several axes.
    assert same(get("mx", target("full", par(ax("dp", 1, 2), ax("tp", 0, 2, 1)))), full)
    assert same(get("mx", target("shard", par(ax("tp", 2, 3, 1), ax("dp", 1, 2)))),
                full[:, 4:])
    assert get("mx", target("shard", par(ax("tp", 0, 2, 1), ax("dp", 0, 2)))) is None
    assert get("mx", target("as_stored", par(ax("tp", 0, 2, 1), ax("dp", 1, 2)))) is None
    # full with no writer manifest reads the key itself.
    assert store.put_tensor("plain", full) == 0
    assert same(get("plain", target("full")), full)
    # Batches.
    got = store.batch_get_tensor_with_parallelism(
        ["wp", "tp1"], [target("full"), target("full", par(ax("tp", 0, 2, 0)))])
    assert same(got[0], full) and same(got[1], full)
    got = store.batch_get_tensor_with_parallelism(["wp", "plain"])
    assert got[0] is None and same(got[1], full)
    assert store.batch_get_tensor_with_parallelism(["wp"], (None,)) == [None]


def test_upserts_replace_and_batches_take_one_request_per_key(store, torch):
    full = sample(torch, (4, 6))
    assert store.put_tensor_with_parallelism("u", full[:2], par(ax("tp", 0, 2, 0))) == 0
    assert store.upsert_tensor_with_parallelism("u", full[:2] + 100,
                                                par(ax("tp", 0, 2, 0))) == 0
    assert same(store.get_tensor("u_tp_0"), full[:2] + 100)
    assert store.batch_put_tensor_with_parallelism(
        ["b1", "b2"], [full, full[:2]], [None, par(ax("tp", 1, 2, 0))]) == [0, 0]
    assert same(store.get_tensor("b1"), full) and same(store.get_tensor("b2_tp_1"), full[:2])
    assert store.batch_put_tensor_with_parallelism(
        ["b3", "b3"], [full, full], writer_partitions=[Writer(0, 2, 0), Writer(1, 2, 0)]) \
        == [0, 0]
    assert same(store.get_tensor_with_parallelism("b3", target("full")), full)
    assert store.batch_upsert_tensor_with_parallelism(
        ["b1", "b4"], [full + 1, full], [None, par(ax("dp", 0, 1))]) == [0, 0]
    assert same(store.get_tensor("b1"), full + 1) and store.is_exist("b4__dp_0of1") == 1
    assert store.batch_put_tensor_with_parallelism(["b5"], [full], [P],
                                                   ReplicateConfig()) == [0]
    assert store.batch_put_tensor_with_parallelism([], []) == []


def test_reads_into_a_buffer_leave_the_object_there(store, buffers, torch):
    full = sample(torch, (4, 6), torch.bfloat16)
    for rank in range(2):
        assert store.put_tensor_with_parallelism("wp", full,
                                                 writer_partition=Writer(rank, 2, 0)) == 0
        assert store.put_tensor_with_parallelism("tp1", full[2 * rank:2 * rank + 2],
                                                 par(ax("tp", rank, 2, 0))) == 0
    into = store.get_tensor_with_parallelism_into
    buf = buffers()
    t = into("wp", buf.addr, buf.size, target("full"))
    assert same(t, full)
    assert ctypes.string_at(buf.addr, 304) == encode_metadata(12, (4, 6), (4, 6), 48)
    t = into("tp1", buf.addr, buf.size, target("shard", par(ax("tp", 3, 4, 0))))
    assert same(t, full[3:])
    assert ctypes.string_at(buf.addr, 304) == encode_metadata(
        12, (4, 6), (1, 6), 12, layout_kind=1, axes=[(1, 0, 3, 4, 0, 0, 1)])
    assert same(into("tp1_tp_0", buf.addr, buf.size), full[:2])
    assert into("wp", buf.addr, 351, target("full")) is None  # 352 bytes needed
    assert into("nokey", buf.addr, buf.size, target("shard", P)) is None
    b1, b2 = buffers(), buffers()
    got = store.batch_get_tensor_with_parallelism_into(
        ["wp", "tp1"], [b1.addr, b2.addr], [b1.size, b2.size],
        [target("full"), target("full", P)])
    assert same(got[0], full) and same(got[1], full)
    assert store.batch_get_tensor_with_parallelism_into(["wp", "tp1"], [b1.addr],
                                                        [b1.size]) == [None, None]


def test_from_writes_read_back_by_target(store, buffers, torch):
    full = sample(torch, (4, 6), torch.int64)
    assert store.put_tensor("src", full) == 0
    obj = store.get("src")
    buf = buffers()
    buf.write(obj)
    assert store.put_tensor_with_parallelism_from("f", buf.addr, len(obj),
                                                  par(ax("tp", 0, 2, 0))) == 0
    get = store.get_tensor_with_parallelism
    assert same(get("f", target("full", par(ax("tp", 0, 2, 0)))), full)
    assert same(get("f", target("shard", par(ax("tp", 1, 2, 0)))), full[2:])
    assert same(get("f", target("shard", par(ax("tp", 0, 4, 0)))), full[:1])


def test_reconstruction_is_not_bounded_by_the_local_buffer(cluster, torch):
    # As in C++, shards put together are read into registered memory, whatever their
    # size.
    s = cluster.store(buffer=1 * MIB)
    s.remove_all(True)
    try:
        big = sample(torch, (1024, 640))
        for rank in range(2):
            assert s.put_tensor_with_parallelism("big", big, writer_partition=Writer(
                rank, 2, 0)) == 0
        assert s.get_tensor("big__writer_0of2_sd0") is None  # 1.25 MiB > 1 MiB
        assert same(s.get_tensor_with_parallelism("big", target("full")), big)
        # C++ reads the exact shard of a shard read through the local buffer; a writer
        # shard larger than it is then not found.
        assert s.get_tensor_with_parallelism("big", target("shard", par(
            ax("tp", 1, 2, 0)))) is None
        # TP shards: the exact one, re-cut (TP 2 -> TP 4), put together.
        assert s.put_tensor_with_parallelism("t", big[:512], par(ax("tp", 0, 2, 0))) == 0
        assert s.put_tensor_with_parallelism("t", big[512:], par(ax("tp", 1, 2, 0))) == 0
        assert same(s.get_tensor_with_parallelism("t", target("shard", par(
            ax("tp", 1, 2, 0)))), big[512:])
        assert same(s.get_tensor_with_parallelism("t", target("shard", par(
            ax("tp", 3, 4, 0)))), big[768:])
        assert same(s.get_tensor_with_parallelism("t", target("full", par(
            ax("tp", 0, 2, 0)))), big)
    finally:
        s.remove_all(True)
        s.close()
