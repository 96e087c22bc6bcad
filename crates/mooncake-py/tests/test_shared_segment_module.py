"""``mooncake.shared_segment``: the C++ wheel's pure-Python module over
``mooncake.engine.SharedSegment`` (named tensor blocks in one host segment shared by a group
of ranks, the blobs exchanged over ``torch.distributed``).

The first half needs no torch (it is hidden through ``sys.modules``, so it runs with or
without it). The second half runs only where torch is installed: one process with
``world_size=1``, then two processes joined by a gloo group on 127.0.0.1. With
``MOONCAKE_CPP_PYTHON`` set to a Python that has the C++ wheel (and torch), one of the two
processes runs the C++ module instead, in both roles.

Run against the C++ module itself, the torch tests pass but
``test_views_keep_the_segment_alive``; the no-torch ones fail there, since it imports torch
at the top."""

import ctypes
import gc
import json
import os
import subprocess
import sys
import weakref

import pytest

from conftest import free_port

NEED_TORCH = "mooncake.shared_segment needs PyTorch: pip install torch"


# ---- without torch ----

def test_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import mooncake.shared_segment as m\n"
            "print(sorted(m.__all__), m.shared_segment_supported(),\n"
            "      m.shared_segment_supported(mmap=False),\n"
            "      m.shared_segment_supported(True, True))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["['SharedSegment',", "'SharedSegmentError',",
                           "'create_shared_segment',", "'shared_segment_supported']",
                           "True", "False", "False"]


def test_surface_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    import mooncake.shared_segment as m
    from mooncake.engine import SharedSegment as Native

    assert m._CppSharedSegment is Native
    assert issubclass(m.SharedSegmentError, RuntimeError)
    assert m.SharedSegment is not Native  # the wrapper, as in C++
    assert m.shared_segment_supported() is True
    assert m.shared_segment_supported(mmap=False) is False  # no VMM backend
    assert m.shared_segment_supported(host_register=True) is False  # no HostRegister
    with pytest.raises(ImportError, match=NEED_TORCH):
        m.torch  # noqa: B018 - the C++ module's global, loaded on demand
    with pytest.raises(AttributeError):
        m.no_such_name  # noqa: B018


def test_needs_torch_to_create(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch.distributed", None)
    import mooncake.shared_segment as m

    blocks = {"k": {"count": 1, "shape": (4,), "dtype": "float32"}}
    with pytest.raises(ImportError, match=NEED_TORCH) as e:
        m.create_shared_segment("n", blocks, 1, 0)
    assert isinstance(e.value.__cause__, ImportError)
    # Refusals that need no torch come first.
    with pytest.raises(m.SharedSegmentError, match="^host_register requires mmap=True$"):
        m.create_shared_segment("n", blocks, 1, 0, mmap=False, host_register=True)
    with pytest.raises(m.SharedSegmentError, match="^This mooncake build has no VMM "):
        m.create_shared_segment("n", blocks, 1, 0, mmap=False)

    # A wrapper (built by hand here) needs torch only for a known block.
    native, blob = m._CppSharedSegment.create("n", 4096, 1, 0)
    native.complete([blob])
    seg = m.SharedSegment(native, {"k": m._BlockSpec(1, (4,), None, 16)}, {"k": 0}, 4096,
                          0)
    assert seg.base_addr() == native.base_addr() and seg.total_size() == 4096
    with pytest.raises(m.SharedSegmentError, match="^Unknown shared segment block 'v'$"):
        seg.tensors("v")
    with pytest.raises(ImportError, match=NEED_TORCH):
        seg.tensors("k")


# ---- with torch: one process ----

@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.fixture
def ss(torch):
    import mooncake.shared_segment as m
    return m


def blocks_of(torch):
    return {"v": dict(count=3, shape=(5, 7), dtype=torch.bfloat16),
            "k": dict(count=2, shape=[1000], dtype=torch.float32),
            "a": dict(count=1, shape=(3,), dtype=torch.int64)}


# The C++ module's name and layout for blocks_of(): blocks in sorted order, entries
# rounded up to 4096 bytes, one row of every block per 12288-byte stride.
LAYOUT_NAME = ("kv|a:1:3:torch.int64:24;k:2:1000:torch.float32:4000;"
               "v:3:5x7:torch.bfloat16:70")
OFFSETS = {"a": [0], "k": [4096, 4096 + 12288], "v": [8192, 8192 + 12288, 8192 + 24576]}


class Recorder:
    """Stands in for mooncake.engine.SharedSegment, recording the create arguments."""

    def __init__(self, native):
        self.native, self.calls = native, []

    def create(self, *args):
        self.calls.append(args)
        return self.native.create(*args)

    def supported(self, *args):
        return self.native.supported(*args)


def test_layout_and_segment_name(ss, torch, monkeypatch):
    recorder = Recorder(ss._CppSharedSegment)
    monkeypatch.setattr(ss, "_CppSharedSegment", recorder)
    seg = ss.create_shared_segment("kv", blocks_of(torch), 1, 0, device_id=3)
    # name, size, world_size, rank_id, owner_rank, device_id, mmap, host_register
    assert recorder.calls == [(LAYOUT_NAME, 36864, 1, 0, 0, 3, True, False)]
    assert seg.total_size() == 36864
    base = seg.base_addr()
    assert base % 4096 == 0
    for block, spec in blocks_of(torch).items():
        views = seg.tensors(block)
        assert [t.data_ptr() - base for t in views] == OFFSETS[block]
        for t in views:
            assert tuple(t.shape) == tuple(spec["shape"]) and t.dtype == spec["dtype"]
            assert t.device.type == "cpu" and t.is_contiguous()
    # Dict order does not matter; the default device is the accelerator's index, else 0.
    seg2 = ss.create_shared_segment("kv", dict(reversed(list(blocks_of(torch).items()))),
                                    1, 0)
    assert recorder.calls[1][:5] == (LAYOUT_NAME, 36864, 1, 0, 0)
    assert isinstance(recorder.calls[1][5], int)
    assert seg2.base_addr() != base


def test_tensors_are_views_of_the_segment(ss, torch):
    seg = ss.create_shared_segment("kv", blocks_of(torch), 1, 0)
    k0, k1 = seg.tensors("k")
    k1.copy_(torch.arange(1000, dtype=torch.float32))
    k0.fill_(-1.5)
    # Another call gives fresh views of the same bytes.
    assert torch.equal(seg.tensors("k")[1], torch.arange(1000, dtype=torch.float32))
    raw = ctypes.string_at(seg.base_addr() + OFFSETS["k"][0], 8)
    assert raw == torch.tensor([-1.5, -1.5], dtype=torch.float32).numpy().tobytes()
    ctypes.memmove(seg.base_addr() + OFFSETS["a"][0],
                   (7).to_bytes(8, "little") * 3, 24)
    assert seg.tensors("a")[0].tolist() == [7, 7, 7]
    assert seg.tensors("a")[0]._mooncake_segment is seg


def test_views_keep_the_segment_alive(ss, torch):
    # Deliberately beyond C++, whose module pins the segment on the returned tensors only:
    # there, a slice outliving them and the wrapper reads unmapped memory.
    seg = ss.create_shared_segment("kv", blocks_of(torch), 1, 0)
    native = weakref.ref(seg._segment)
    part = seg.tensors("v")[2][1:3]  # a view of a view: it shares the storage only
    part.fill_(2.0)
    del seg
    gc.collect()
    assert native() is not None
    assert part.sum().item() == 2.0 * 14
    del part
    gc.collect()
    assert native() is None  # the mapping went with the last tensor


def test_declaration_errors(ss, torch):
    def fails(match, blocks, *args, exc=ss.SharedSegmentError, **kwargs):
        with pytest.raises(exc, match=match):
            ss.create_shared_segment("n", blocks, *(args or (1, 0)), **kwargs)

    f32 = torch.float32
    fails("^Block 'k' needs count, shape and dtype$", {"k": {"count": 1, "shape": (2,)}})
    fails("^Block 'k' needs count, shape and dtype$", {"k": dict(count=1, shape=2, dtype=f32)})
    fails("^Block 'k' needs count, shape and dtype$", {"k": dict(count=None, shape=(2,),
                                                                 dtype=f32)})
    fails("^Block 'k' needs a positive count$", {"k": dict(count=0, shape=(2,), dtype=f32)})
    fails("^Block 'k' needs a positive shape$", {"k": dict(count=1, shape=(), dtype=f32)})
    fails("^Block 'k' needs a positive shape$", {"k": dict(count=1, shape=(2, 0), dtype=f32)})
    fails(None, {"k": dict(count=1, shape=(2,), dtype="float32")}, exc=TypeError)
    fails("^Shared segment needs at least one block$", {})
    fails("^host_register requires mmap=True$", {}, mmap=False, host_register=True)
    fails("^This mooncake build has no VMM backend for shared segments$", {}, mmap=False)
    fails("^This mooncake build cannot HostRegister shared-segment pages$", {},
          host_register=True)
    ok = {"k": dict(count=1, shape=(2,), dtype=f32)}
    fails("^pass only comm_group; tp_group is a deprecated alias of comm_group$", ok,
          comm_group=object(), tp_group=object())
    fails("^comm_group is required when world_size > 1$", ok, 2, 0)
    # A failed create, with world_size 1, is the engine's error text.
    fails("^InvalidArgument: Shared segment rank_id and owner_rank must be below "
          "world_size$", ok, 1, 0, owner_rank=1)
    seg = ss.create_shared_segment("n", ok, 1, 0, tp_group=None)
    with pytest.raises(ss.SharedSegmentError, match="^Unknown shared segment block 'v'$"):
        seg.tensors("v")


# ---- with torch: two processes, one gloo group ----

WORKER = r"""
import json, sys, types
import torch, torch.distributed as dist
import mooncake.shared_segment
from mooncake.shared_segment import SharedSegmentError, create_shared_segment

mode, rank, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                        world_size=2)
blocks = {"v": dict(count=3, shape=(5, 7), dtype=torch.bfloat16),
          "k": dict(count=2, shape=[1000], dtype=torch.float32)}
owner = 1 if mode == "owner1" else 0
group = dist.new_group([0, 1], backend="gloo")
kwargs = dict(comm_group=group)
if mode == "coordinator":  # a vLLM GroupCoordinator carries its gloo group as cpu_group
    kwargs = dict(comm_group=types.SimpleNamespace(cpu_group=group))
elif mode == "tp_group":
    kwargs = dict(tp_group=group)
elif mode == "mismatch" and rank == 1:
    blocks["k"]["shape"] = [999]
elif mode == "bad_owner" and rank == 1:
    owner = 2
try:
    seg = create_shared_segment("kv", blocks, 2, rank, owner_rank=owner, **kwargs)
except SharedSegmentError as e:
    print(json.dumps({"error": str(e)}), flush=True)
    dist.destroy_process_group()
    sys.exit(0)
report = {"module": mooncake.shared_segment.__file__, "size": seg.total_size(),
          "offsets": {b: [t.data_ptr() - seg.base_addr() for t in seg.tensors(b)]
                      for b in sorted(blocks)}}
k = seg.tensors("k")
v = seg.tensors("v")
if rank == owner:
    k[1].copy_(torch.arange(1000, dtype=torch.float32))
dist.barrier(group)
if rank != owner:
    report["k1"] = torch.equal(k[1], torch.arange(1000, dtype=torch.float32))
    v[2].fill_(3.25)
dist.barrier(group)
report["v2"] = v[2].float().sum().item()
dist.barrier(group)  # the owner's pages must outlive the peer's reads
print(json.dumps(report), flush=True)
dist.destroy_process_group()
"""


def run_pair(mode, pythons, env=None):
    port = str(free_port())
    procs = [subprocess.Popen([py, "-c", WORKER, mode, str(rank), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank, py in enumerate(pythons)]
    results = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    # The owner unlinked its shm object on exit, though its tensors were still alive.
    left = [n for n in os.listdir("/dev/shm")
            if any(n.startswith(f"mcss_{p.pid}_") for p in procs)]
    assert left == []
    return results


def ss_file():
    import mooncake.shared_segment
    return mooncake.shared_segment.__file__


TWO_PROCESS_LAYOUT = {"size": 3 * 8192,
                      "offsets": {"k": [0, 8192], "v": [4096, 4096 + 8192, 4096 + 16384]}}


@pytest.mark.parametrize("mode", ["plain", "owner1", "coordinator", "tp_group"])
def test_two_processes_share_the_tensors(torch, mode):
    owner, peer = run_pair(mode, [sys.executable] * 2)
    if mode == "owner1":
        owner, peer = peer, owner
    for r in (owner, peer):
        assert r["module"] == ss_file()
        assert {"size": r["size"], "offsets": r["offsets"]} == TWO_PROCESS_LAYOUT
        assert r["v2"] == 3.25 * 35  # the peer's write, read by both
    assert peer["k1"] is True  # the owner's write, read by the peer


def test_two_processes_refuse_together(torch):
    # Different declarations: complete fails on both ranks, and both raise the same error.
    first, second = run_pair("mismatch", [sys.executable] * 2)
    assert first == second
    assert first["error"] == (
        "Shared segment complete failed: "
        "rank 0: InvalidArgument: Shared segment declaration of rank 1 differs from the "
        "local one; "
        "rank 1: InvalidArgument: Shared segment declaration of rank 0 differs from the "
        "local one")
    # A create that fails on one rank fails on both.
    first, second = run_pair("bad_owner", [sys.executable] * 2)
    assert first == second == {"error": (
        "Shared segment create failed: rank 1: InvalidArgument: Shared segment rank_id and "
        "owner_rank must be below world_size")}


@pytest.mark.skipif(not os.environ.get("MOONCAKE_CPP_PYTHON"),
                    reason="set MOONCAKE_CPP_PYTHON to a Python with the C++ wheel and torch")
@pytest.mark.parametrize("cpp_rank", [0, 1])
def test_interop_with_cpp_module(torch, tmp_path, cpp_rank):
    # Each side must import its own mooncake package: ours through PYTHONPATH, the C++
    # one from its site-packages. A sitecustomize-free way is a per-process PYTHONPATH,
    # so the C++ side runs through a wrapper that drops it.
    cpp = tmp_path / "cpp-python"
    cpp.write_text(f"#!/bin/sh\nunset PYTHONPATH\nexec {os.environ['MOONCAKE_CPP_PYTHON']}"
                   ' "$@"\n')
    cpp.chmod(0o755)
    pythons = [sys.executable, sys.executable]
    pythons[cpp_rank] = str(cpp)
    env = dict(os.environ, MC_TCP_BIND_ADDRESS="127.0.0.1", GLOG_minloglevel="2")
    owner, peer = run_pair("plain", pythons, env)
    ours = os.path.dirname(ss_file())
    assert [os.path.dirname(r["module"]) == ours for r in (owner, peer)] == [
        rank != cpp_rank for rank in range(2)]
    for r in (owner, peer):
        assert {"size": r["size"], "offsets": r["offsets"]} == TWO_PROCESS_LAYOUT
        assert r["v2"] == 3.25 * 35
    assert peer["k1"] is True
    # And a declaration that differs is refused across the wheels too.
    first, second = run_pair("mismatch", pythons, env)
    assert first == second and first["error"].startswith("Shared segment complete failed")
