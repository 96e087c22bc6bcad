"""``mooncake.shared_segment``: named tensor blocks in one host segment shared by a group.

The C++ wheel's pure-Python module of the same name, rewritten over our
``mooncake.engine.SharedSegment`` (``_shared_segment.py``). Ranks that hold identical
tensors (MLA's KV cache is the same on every rank of a TP group) can keep one copy: the
pages live in ``owner_rank``'s process and every rank of the group maps them::

    from mooncake.shared_segment import create_shared_segment

    seg = create_shared_segment(
        "kv",
        blocks={"k": dict(count=layers, shape=k_shape, dtype=torch.bfloat16),
                "v": dict(count=layers, shape=v_shape, dtype=torch.bfloat16)},
        world_size=tp_size, rank_id=tp_rank, comm_group=gloo_group)
    k_caches = seg.tensors("k")      # one CPU tensor per layer, over the shared pages

What must stay as in C++, because a group may mix both wheels:

- the layout: blocks in sorted name order, each entry's bytes rounded up to 4096; one
  "row" is one entry of every block, ``stride`` bytes; entry ``i`` of block ``b`` is at
  ``offset[b] + i * stride``; the segment is ``stride * max(count)`` bytes;
- the segment name handed to ``SharedSegment.create``:
  ``"<name>|<block>:<count>:<d0>x<d1>...:<str(dtype)>:<nbytes>;..."`` (sorted blocks).
  It feeds the blob's fingerprint, so peers that disagree on any block are refused;
- the exchange: a failure on any rank is all-gathered with
  ``torch.distributed.all_gather_object`` so that every rank raises the same
  :class:`SharedSegmentError`; the 160-byte blobs are all-gathered as ``uint8`` CPU
  tensors with ``torch.distributed.all_gather`` (hence a gloo group, or a vLLM
  ``GroupCoordinator`` whose ``cpu_group`` is used).

Unlike the C++ module, which imports ``torch`` at the top, this one imports it on first
use: the module and :func:`shared_segment_supported` work without torch, and
:func:`create_shared_segment` (or ``tensors``) then raises :class:`ImportError`.
"""

from __future__ import annotations

import atexit
import ctypes
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .engine import SharedSegment as _CppSharedSegment

__all__ = [
    "SharedSegment",
    "SharedSegmentError",
    "create_shared_segment",
    "shared_segment_supported",
]

_ALIGN = 4096
_NEED_TORCH = "mooncake.shared_segment needs PyTorch: pip install torch"


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(_NEED_TORCH) from e
    return torch


def _import_dist():
    _import_torch()
    try:
        import torch.distributed as dist
    except ImportError as e:
        raise ImportError(_NEED_TORCH + " (with torch.distributed)") from e
    return dist


def __getattr__(name):
    # The C++ module has ``torch`` and ``dist`` as globals; ours are loaded on demand.
    if name == "torch":
        return _import_torch()
    if name == "dist":
        return _import_dist()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SharedSegmentError(RuntimeError):
    """A shared segment could not be created or a block could not be addressed."""


class _BlockSpec(NamedTuple):
    count: int
    shape: tuple
    dtype: Any
    nbytes: int


def shared_segment_supported(mmap: bool = True, host_register: bool = False) -> bool:
    """Whether this build can create a segment with this backend (POSIX shm only)."""
    return _CppSharedSegment.supported(mmap, host_register)


def create_shared_segment(
    name: str,
    blocks: Mapping[str, Mapping[str, Any]],
    world_size: int,
    rank_id: int,
    owner_rank: int = 0,
    device_id: int | None = None,
    comm_group: Any = None,
    mmap: bool = True,
    host_register: bool = False,
    *,
    tp_group: Any = None,
) -> SharedSegment:
    """Creates the segment on every rank of the group; a collective call.

    ``blocks`` maps a block name to ``dict(count=, shape=, dtype=)``; every rank must
    pass the same declaration (a difference is refused, on every rank). ``comm_group``
    (a gloo process group, or a vLLM ``GroupCoordinator``) carries the exchange and may
    be left out only when ``world_size`` is 1; ``tp_group`` is its deprecated alias.
    ``device_id`` defaults to the current accelerator's index (0 without one).
    ``mmap=False`` (a VMM backend) and ``host_register=True`` (Ascend) are not in this
    build: :class:`SharedSegmentError`.
    """
    group = _pick_group(comm_group, tp_group)
    _check_backend(mmap, host_register)
    torch = _import_torch()

    ordered = sorted(blocks)
    specs = {block: _block_spec(torch, block, blocks[block]) for block in ordered}
    offsets, stride, total = _layout(specs, ordered)
    declared = f"{name}|" + ";".join(_describe(block, specs[block]) for block in ordered)
    device = device_id if device_id is not None else _default_device(torch)

    native, blob, error = None, b"", ""
    try:
        native, blob = _CppSharedSegment.create(
            declared, total, world_size, rank_id, owner_rank, device, mmap, host_register)
    except RuntimeError as e:
        error = str(e)
    _agree(error, world_size, rank_id, group, "create")
    if native is None:
        raise SharedSegmentError("Shared segment create returned no segment")

    error = ""
    try:
        blobs = [blob] if world_size == 1 else _gather_blobs(torch, blob, world_size, group)
        native.complete(blobs)
    except (RuntimeError, SharedSegmentError) as e:
        error = str(e)
    _agree(error, world_size, rank_id, group, "complete")
    return SharedSegment(native, specs, offsets, stride, device)


class SharedSegment:
    """One created segment and its block layout. Keep it (or a tensor of it) alive for
    as long as the memory is used: the mapping goes with the last reference."""

    def __init__(self, segment: Any, specs: dict, offsets: dict, stride: int,
                 device_id: int) -> None:
        self._segment = segment
        self._specs = specs
        self._offsets = offsets
        self._stride = stride
        self._device_id = device_id
        # Non-zero only where the pages are device-mapped (Ascend); never in this build.
        self._device_base = int(segment.device_addr()) or None

    def tensors(self, block: str) -> list:
        """Zero-copy tensors over every entry of ``block``, in index order: CPU tensors
        over the shared pages (NPU tensors where the segment is device-mapped). Each one
        keeps this segment alive."""
        spec = self._specs.get(block)
        if spec is None:
            raise SharedSegmentError(f"Unknown shared segment block {block!r}")
        torch = _import_torch()
        start = self._offsets[block]
        if self._device_base is not None:
            return [_npu_view(torch, self._device_base + start + i * self._stride, spec,
                              self._device_id, self) for i in range(spec.count)]
        base = int(self._segment.base_addr())
        return [_host_view(torch, base + start + i * self._stride, spec, self)
                for i in range(spec.count)]

    def base_addr(self) -> int:
        return self._segment.base_addr()

    def total_size(self) -> int:
        return self._segment.size()


# --- declaration and layout ---

def _check_backend(mmap, host_register):
    if host_register and not mmap:
        raise SharedSegmentError("host_register requires mmap=True")
    if shared_segment_supported(mmap=mmap, host_register=host_register):
        return
    if not mmap:
        raise SharedSegmentError("This mooncake build has no VMM backend for shared segments")
    if host_register:
        raise SharedSegmentError(
            "This mooncake build cannot HostRegister shared-segment pages")
    raise SharedSegmentError("This mooncake build has no mmap shared-segment backend")


def _block_spec(torch, block, decl):
    try:
        count = int(decl["count"])
        shape = tuple(int(d) for d in decl["shape"])
        dtype = decl["dtype"]
    except (KeyError, TypeError) as e:
        raise SharedSegmentError(f"Block {block!r} needs count, shape and dtype") from e
    if count < 1:
        raise SharedSegmentError(f"Block {block!r} needs a positive count")
    if not shape or min(shape) < 1:
        raise SharedSegmentError(f"Block {block!r} needs a positive shape")
    # An unknown dtype fails here with torch's own TypeError, as in C++.
    nbytes = torch.empty(0, dtype=dtype).element_size()
    for d in shape:
        nbytes *= d
    return _BlockSpec(count, shape, dtype, nbytes)


def _describe(block, spec):
    dims = "x".join(map(str, spec.shape))
    return f"{block}:{spec.count}:{dims}:{spec.dtype}:{spec.nbytes}"


def _round_up(n, align=_ALIGN):
    return -(-n // align) * align


def _layout(specs, ordered: Sequence[str]):
    """``(offset of each block within a row, row stride, total bytes)``."""
    offsets, stride = {}, 0
    for block in ordered:
        offsets[block] = stride
        stride += _round_up(specs[block].nbytes)
    if not stride:
        raise SharedSegmentError("Shared segment needs at least one block")
    return offsets, stride, stride * max(s.count for s in specs.values())


def _default_device(torch):
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        try:
            return int(accelerator.current_device_index())
        except (RuntimeError, AttributeError):
            pass  # e.g. a CUDA build of torch on a host without a driver
    npu = getattr(torch, "npu", None)
    if npu is not None and npu.is_available():
        return int(npu.current_device())
    return 0


# --- the collective exchange ---

def _pick_group(comm_group, tp_group):
    if tp_group is None:
        return comm_group
    if comm_group is not None and comm_group is not tp_group:
        raise SharedSegmentError(
            "pass only comm_group; tp_group is a deprecated alias of comm_group")
    return tp_group


def _cpu_group(group):
    """A vLLM ``GroupCoordinator`` carries its gloo group as ``cpu_group``."""
    cpu = getattr(group, "cpu_group", None)
    return group if cpu is None else cpu


def _agree(error, world_size, rank_id, group, phase):
    """Every rank learns every rank's error of ``phase`` and raises the same one."""
    if world_size == 1:
        if error:
            raise SharedSegmentError(error)
        return
    if group is None:
        raise SharedSegmentError("comm_group is required when world_size > 1")
    dist = _import_dist()
    reports = [None] * world_size
    dist.all_gather_object(reports, (rank_id, error) if error else None,
                           group=_cpu_group(group))
    failed = [r for r in reports if r is not None]
    if failed:
        detail = "; ".join(f"rank {rank}: {message}" for rank, message in failed)
        raise SharedSegmentError(f"Shared segment {phase} failed: {detail}")


def _gather_blobs(torch, blob, world_size, group):
    dist = _import_dist()
    mine = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    everyone = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine, group=_cpu_group(group))
    return [t.numpy().tobytes() for t in everyone]


# --- tensors over the segment ---

def _host_view(torch, address, spec, holder):
    buffer = (ctypes.c_uint8 * spec.nbytes).from_address(address)
    view = torch.frombuffer(buffer, dtype=spec.dtype).view(spec.shape)
    view._mooncake_segment = holder  # as in C++
    # Beyond C++: pin the segment on the storage too (torch keeps a storage's Python
    # object, and its attributes, for as long as the storage lives), so that a slice or
    # another view outliving ``view`` keeps the mapping.
    try:
        storage = view.untyped_storage()
        storage._mooncake_segment = holder
        _pinned_storages.add(storage)
    except (AttributeError, TypeError, RuntimeError):
        pass  # an older torch: ``view`` alone pins it
    return view


# torch does not release storages that are still alive at interpreter exit, so a segment
# pinned there would never be collected and its owner would never unlink the shm object.
# At exit the pins go; the tensors (``view._mooncake_segment``) hold it, as in C++.
_pinned_storages = weakref.WeakSet()


@atexit.register
def _unpin_storages():
    for storage in list(_pinned_storages):
        storage.__dict__.pop("_mooncake_segment", None)
    _pinned_storages.clear()


def _npu_view(torch, address, spec, device_id, holder):
    try:
        import torch_npu
    except ImportError as e:
        raise SharedSegmentError(
            "torch_npu is required to expose device-mapped shared-segment tensors") from e
    device = torch.device(f"npu:{device_id}")
    storage = torch_npu._C._construct_storage_from_data_pointer(
        int(address), device, int(spec.nbytes))
    strides, step = [], 1
    for d in reversed(spec.shape):
        strides.append(step)
        step *= d
    view = torch.empty(0, dtype=spec.dtype, device=device)
    view.set_(storage, 0, spec.shape, tuple(reversed(strides)))
    view._mooncake_segment = holder
    return view
