"""The ``*_with_parallelism*`` tensor calls of ``MooncakeDistributedStore`` and the classes
``ParallelAxis``, ``TensorParallelism`` and ``ReadTarget`` (python-api-2.md §11).

The C++ wheel implements them natively (``mooncake-integration/store/store_py.cpp``,
``store_py_internal.h``, ``store_py_parallel_write.h``, ``store_py_parallel_read.h``);
here they are Python on top of :mod:`mooncake._tensor`, storing the same objects under
the same keys, so that either wheel reads what the other wrote.

Stored objects (every tensor object is ``[TensorMetadata][data]``, see ``_tensor.py``):

- No ``parallelism`` and no ``writer_partition``: the whole tensor at ``key``, as
  ``pub_tensor``/``upsert_pub_tensor`` store it.
- ``writer_partition`` (any object with ``rank``, ``size`` and ``split_dim``; the C++
  wheel has no class for it): the tensor is the full one; the writer's even slice along
  ``split_dim`` is stored as ``"{key}__writer_{rank}of{size}_sd{split_dim}"`` (a shard
  with one TP axis), then the 96-byte manifest at ``"{key}__writer_manifest"``.
- ``parallelism`` with a TP axis only: the tensor is this rank's shard, stored at
  ``"{key}_tp_{rank}"`` with global shape = its shape times ``size`` along ``split_dim``,
  then a manifest at ``"{key}__parallelism_manifest"``.
- ``parallelism`` with a TP axis and others: the tensor is the full one; the TP rank's
  slice is stored at the parallelism key (below), then ``"{key}__parallelism_manifest"``.
- ``parallelism`` without a TP axis: the tensor as is, marked with the axes, at the
  parallelism key; no manifest.
- The ``*_from`` forms read a ``[TensorMetadata][data]`` buffer holding the full tensor;
  with a TP axis they store *every* TP rank's slice (and no manifest), as C++ does.

The parallelism key is ``key`` followed by ``"__{kind}_{rank}of{size}"`` (plus ``_sd{n}``,
``_eid{n}``, ``_sid{n}`` for the fields that are set) per axis in the order dp, tp, ep,
pp. The manifest is ``u32 magic 'WMAN' (0x574d414e), u16 version 1, u16 size 96, i32
dtype, i32 ndim, i32 split_dim, i32 shard_count, i32 0, 4 zero bytes, i64 shape[8]``
(unused dims -1).

Reads take a ``ReadTarget``: ``as_stored`` (``get_tensor``), ``shard`` (the stored shard
whose axes match exactly, else the TP slice cut from the stored TP shards, else
``"{key}_tp_{rank}"``) or ``full`` (the full tensor put together from the TP shards; with
no parallelism, from the writer shards of ``"{key}__writer_manifest"``, else
``get_tensor``). The ``_into`` forms leave ``[TensorMetadata][data]`` in the buffer and
return a tensor viewing it. Put-together objects are assembled from whole-object reads
(C++ reads byte ranges; neither is bounded by the local buffer), and the ``_into`` forms
other than ``as_stored`` copy into the caller's memory, which therefore need not be
registered (C++ wants Store-registered memory there).

torch is imported only by calls that make or return tensors; a store that is not set up
returns ``-600``, ``None`` or a list of them without importing it and without raising.
"""

import collections
import ctypes
import logging
import operator
import struct

from mooncake import _tensor as _t
from mooncake._tensor import INVALID_PARAMS, METADATA_SIZE

logger = logging.getLogger("mooncake.store")

__all__ = [
    "ParallelAxis", "TensorParallelism", "ReadTarget",
    "put_tensor_with_parallelism", "put_tensor_with_parallelism_from",
    "upsert_tensor_with_parallelism", "upsert_tensor_with_parallelism_from",
    "batch_put_tensor_with_parallelism", "batch_put_tensor_with_parallelism_from",
    "batch_upsert_tensor_with_parallelism", "batch_upsert_tensor_with_parallelism_from",
    "get_tensor_with_parallelism", "get_tensor_with_parallelism_into",
    "batch_get_tensor_with_parallelism", "batch_get_tensor_with_parallelism_into",
]

# LayoutAxisKind; the canonical key order is the same (dp, tp, ep, pp).
DP, TP, EP, PP = 0, 1, 2, 3
_KIND_NAMES = {DP: "dp", TP: "tp", EP: "ep", PP: "pp"}
_KINDS = {name: code for code, name in _KIND_NAMES.items()}

AS_STORED, SHARD, FULL = "as_stored", "shard", "full"
_MODES = (AS_STORED, SHARD, FULL)

# WriterShardManifest (also the parallelism manifest): a 28-byte header, 4 bytes of
# alignment padding, then TensorShape global_shape.
MANIFEST_MAGIC = 0x574D414E
MANIFEST_VERSION = 1
_MANIFEST = struct.Struct("<IHHiiiii4x8q")
MANIFEST_SIZE = _MANIFEST.size
assert MANIFEST_SIZE == 96, MANIFEST_SIZE

_I32 = (-(1 << 31), (1 << 31) - 1)


def _int32(value, name, optional=False):
    if optional and value is None:
        return None
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int{' or None' if optional else ''}") from None
    if not _I32[0] <= value <= _I32[1]:
        raise TypeError(f"{name} does not fit in a 32-bit int")
    return value


# --- the public classes (pybind11 classes in C++: default constructor, typed fields) ---

class ParallelAxis:
    """One parallel axis of a tensor: ``kind`` (``"tp"``, ``"dp"``, ``"ep"`` or ``"pp"``,
    any case), ``rank``, ``size``, and the optional ``split_dim``, ``expert_id`` and
    ``stage_id``. C++ takes no constructor arguments; the keyword arguments here are a
    convenience."""

    __slots__ = ("_kind", "_rank", "_size", "_split_dim", "_expert_id", "_stage_id")

    def __init__(self, *, kind="", rank=0, size=1, split_dim=None, expert_id=None,
                 stage_id=None):
        self.kind, self.rank, self.size = kind, rank, size
        self.split_dim, self.expert_id, self.stage_id = split_dim, expert_id, stage_id

    @property
    def kind(self):
        return self._kind

    @kind.setter
    def kind(self, value):
        if not isinstance(value, str):
            raise TypeError("kind must be a str")
        self._kind = value

    def _int_property(name, optional):  # noqa: N805 - a property factory
        slot = "_" + name

        def get(self):
            return getattr(self, slot)

        def set_(self, value):
            setattr(self, slot, _int32(value, name, optional))
        return property(get, set_)

    rank = _int_property("rank", False)
    size = _int_property("size", False)
    split_dim = _int_property("split_dim", True)
    expert_id = _int_property("expert_id", True)
    stage_id = _int_property("stage_id", True)
    del _int_property

    def _copy(self):
        return ParallelAxis(kind=self._kind, rank=self._rank, size=self._size,
                            split_dim=self._split_dim, expert_id=self._expert_id,
                            stage_id=self._stage_id)

    def __repr__(self):
        return (f"ParallelAxis(kind={self._kind!r}, rank={self._rank}, size={self._size}, "
                f"split_dim={self._split_dim}, expert_id={self._expert_id}, "
                f"stage_id={self._stage_id})")


class TensorParallelism:
    """A list of ``ParallelAxis`` (``axes``). As in C++, ``axes`` is a copy: assign a whole
    list (``tp.axes = [a, b]``); ``tp.axes.append(a)`` changes nothing."""

    __slots__ = ("_axes",)

    def __init__(self, axes=()):
        self.axes = axes

    @property
    def axes(self):
        return [a._copy() for a in self._axes]

    @axes.setter
    def axes(self, value):
        if isinstance(value, (str, bytes)):
            raise TypeError("axes must be a list of ParallelAxis")
        value = list(value)
        if not all(isinstance(a, ParallelAxis) for a in value):
            raise TypeError("axes must be a list of ParallelAxis")
        self._axes = [a._copy() for a in value]

    def _copy(self):
        return TensorParallelism(self._axes)

    def __repr__(self):
        return f"TensorParallelism(axes={self._axes!r})"


class ReadTarget:
    """What a ``get_tensor_with_parallelism*`` call reads: ``mode`` (``"as_stored"``,
    ``"shard"`` or ``"full"``; setting anything else raises
    ``RuntimeError("Unsupported ReadTarget mode")``) and ``parallelism`` (a
    ``TensorParallelism`` or ``None``, held as a copy)."""

    __slots__ = ("_mode", "_parallelism")

    def __init__(self, mode=AS_STORED, parallelism=None):
        self.mode = mode
        self.parallelism = parallelism

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, value):
        if not isinstance(value, str):
            raise TypeError("mode must be a str")
        mode = _parse_mode(value)
        if mode is None:
            raise RuntimeError("Unsupported ReadTarget mode")
        self._mode = mode

    @property
    def parallelism(self):
        return None if self._parallelism is None else self._parallelism._copy()

    @parallelism.setter
    def parallelism(self, value):
        if value is not None and not isinstance(value, TensorParallelism):
            raise TypeError("parallelism must be a TensorParallelism or None")
        self._parallelism = None if value is None else value._copy()

    def __repr__(self):
        return f"ReadTarget(mode={self._mode!r}, parallelism={self._parallelism!r})"


def _parse_mode(value):
    mode = value.lower()
    if mode in _MODES:
        return mode
    logger.error("Unsupported ReadTarget mode: %s", value.upper())
    return None


# --- parsed requests ---

Axis = collections.namedtuple("Axis", "kind rank size split_dim expert_id stage_id")


def _parse_kind(kind):
    code = _KINDS.get(kind.lower())
    if code is None:
        logger.error("Unsupported parallel axis kind: %s", kind)
    return code


def _parse_axis(obj):
    if not all(hasattr(obj, n) for n in ("kind", "rank", "size")):
        logger.error("ParallelAxis must provide kind, rank, and size")
        return None
    kind = obj.kind
    if not isinstance(kind, str):
        raise TypeError("ParallelAxis.kind must be a str")
    code = _parse_kind(kind)
    if code is None:
        return None
    return Axis(code, _int32(obj.rank, "rank"), _int32(obj.size, "size"),
                _int32(obj.split_dim, "split_dim", True),
                _int32(obj.expert_id, "expert_id", True),
                _int32(obj.stage_id, "stage_id", True))


def _parse_parallelism(obj):
    """The axes of a TensorParallelism(-like) object, or ``None``."""
    if obj is None:
        return None
    if not hasattr(obj, "axes"):
        logger.error("TensorParallelism must provide axes")
        return None
    axes = []
    for a in obj.axes:
        axis = _parse_axis(a)
        if axis is None:
            return None
        axes.append(axis)
    return axes


def _validate(axes, context):
    """C++ ``validate_parallelism_spec`` (empty not allowed): the axes or ``None``."""
    if axes is None:
        logger.error("%s: parallelism is required", context)
        return None
    if not axes:
        logger.error("%s: parallelism axes cannot be empty", context)
        return None
    if len(axes) > _t.MAX_AXES:
        logger.error("%s: axis count exceeds max supported axes", context)
        return None
    seen = set()
    for a in axes:
        name = _KIND_NAMES[a.kind]
        if a.size <= 0 or a.rank < 0 or a.rank >= a.size:
            logger.error("%s: invalid rank/size for axis %s", context, name)
            return None
        if a.kind in seen:
            logger.error("%s: duplicate axis kinds are not supported", context)
            return None
        seen.add(a.kind)
        if a.kind == TP and a.split_dim is None:
            logger.error("%s: TP axis requires split_dim", context)
            return None
        if a.kind == EP and a.expert_id is None:
            logger.error("%s: EP axis requires expert_id", context)
            return None
        if a.kind == PP and a.stage_id is None:
            logger.error("%s: PP axis requires stage_id", context)
            return None
        if a.kind != TP and a.split_dim is not None:
            logger.error("%s: %s axis must not provide split_dim", context, name.upper())
            return None
    return axes


def _parse_writer(obj, context):
    if not all(hasattr(obj, n) for n in ("rank", "size", "split_dim")):
        logger.error("%s: writer_partition must provide rank, size, and split_dim",
                     context)
        return None
    rank, size = _int32(obj.rank, "rank"), _int32(obj.size, "size")
    split_dim = _int32(obj.split_dim, "split_dim")
    if size <= 0 or rank < 0 or rank >= size or split_dim < 0:
        logger.error("%s: invalid writer partition", context)
        return None
    return Axis(TP, rank, size, split_dim, None, None)


def _parse_target(obj):
    """``(mode, axes or None)`` of a ReadTarget(-like) object (``None`` is as_stored), or
    ``None`` when it cannot be parsed."""
    if obj is None:
        return AS_STORED, None
    if not hasattr(obj, "mode") or not hasattr(obj, "parallelism"):
        logger.error("ReadTarget must provide mode and parallelism")
        return None
    if not isinstance(obj.mode, str):
        raise TypeError("ReadTarget.mode must be a str")
    mode = _parse_mode(obj.mode)
    if mode is None:
        return None
    par = obj.parallelism
    if par is None:
        return mode, None
    axes = _parse_parallelism(par)
    return None if axes is None else (mode, axes)


def _canonical(axes):
    return sorted(axes, key=lambda a: a.kind)


def _find(axes, kind):
    return next((i for i, a in enumerate(axes) if a.kind == kind), None)


def _single_tp(axes):
    return len(axes) == 1 and axes[0].kind == TP


def _axis_suffix(a):
    s = f"{_KIND_NAMES[a.kind]}_{a.rank}of{a.size}"
    if a.split_dim is not None:
        s += f"_sd{a.split_dim}"
    if a.expert_id is not None:
        s += f"_eid{a.expert_id}"
    if a.stage_id is not None:
        s += f"_sid{a.stage_id}"
    return s


def parallelism_key(key, axes):
    """The key a shard with these axes is stored under."""
    if _single_tp(axes):
        return f"{key}_tp_{axes[0].rank}"
    return key + "".join("__" + _axis_suffix(a) for a in _canonical(axes))


def writer_shard_key(key, writer):
    return f"{key}__writer_{writer.rank}of{writer.size}_sd{writer.split_dim}"


def writer_manifest_key(key):
    return key + "__writer_manifest"


def parallelism_manifest_key(key):
    return key + "__parallelism_manifest"


def _with_tp(axes, index, rank, size=None):
    axes = list(axes)
    axes[index] = axes[index]._replace(rank=rank, **({} if size is None else {"size": size}))
    return axes


# --- encoding ---

def shard_metadata(dtype, global_shape, local_shape, axes, data_bytes):
    """C++ ``build_shard_metadata_from_shapes``: the 304 bytes, or ``None``."""
    if not axes or len(axes) > _t.MAX_AXES or len(global_shape) != len(local_shape):
        return None
    layout = []
    for i, a in enumerate(axes):
        extent = 0
        if a.split_dim is not None:
            if not 0 <= a.split_dim < len(local_shape):
                return None
            extent = local_shape[a.split_dim]
        reserved0 = 0
        if a.kind == EP and a.expert_id is not None:
            reserved0 = a.expert_id
        if a.kind == PP and a.stage_id is not None:
            reserved0 = a.stage_id
        layout.append((a.kind, i, a.rank, a.size,
                       -1 if a.split_dim is None else a.split_dim, reserved0, extent))
    return _t.encode_metadata(dtype, global_shape, local_shape, data_bytes, _t.LAYOUT_SHARD,
                              layout)


def encode_manifest(global_shape, dtype, split_dim, shard_count):
    return _MANIFEST.pack(MANIFEST_MAGIC, MANIFEST_VERSION, MANIFEST_SIZE, dtype,
                          len(global_shape), split_dim, shard_count, 0,
                          *_t._padded(global_shape))


Manifest = collections.namedtuple("Manifest", "dtype split_dim shard_count global_shape")


def decode_manifest(value):
    """C++ ``parse_writer_shard_manifest``: a :class:`Manifest` or ``None``."""
    if value is None or len(value) < MANIFEST_SIZE:
        return None
    (magic, version, size, dtype, ndim, split_dim, count, _r0,
     *dims) = _MANIFEST.unpack_from(value, 0)
    if (magic != MANIFEST_MAGIC or version != MANIFEST_VERSION or size != MANIFEST_SIZE
            or not 0 <= ndim <= _t.MAX_DIMS or count <= 0 or not 0 <= split_dim < ndim):
        return None
    shape = tuple(dims[:ndim])
    if any(d < 0 for d in shape):
        return None
    return Manifest(dtype, split_dim, count, shape)


def _prod(dims):
    n = 1
    for d in dims:
        n *= d
    return n


def _uniform(shape, split_dim, count, context):
    if not 0 <= split_dim < len(shape) or count <= 0:
        logger.error("%s: invalid shard parameters", context)
        return False
    if shape[split_dim] < 0 or shape[split_dim] % count:
        logger.error("%s: only uniform sharding is supported", context)
        return False
    return True


def _shard_range(extent, rank, count):
    if extent < 0 or count <= 0 or not 0 <= rank < count:
        return 0, 0
    start = extent * rank // count
    return start, extent * (rank + 1) // count - start


# --- tensors to stored objects (torch) ---

def _tensor_info(torch, tensor, key):
    """``(dtype code, shape)`` of a storable tensor, or ``None`` (logged)."""
    if "Tensor" not in type(tensor).__name__:
        logger.error("Input for %s is not a PyTorch tensor", key)
        return None
    code = _t._dtype_code(torch, tensor.dtype)
    shape = tuple(int(d) for d in tensor.shape)
    if code is None or len(shape) > _t.MAX_DIMS:
        logger.error("Unsupported tensor dtype or rank for %s", key)
        return None
    return code, shape


def _object(code, global_shape, tensor, axes):
    """The stored shard object of ``tensor`` (a local shard), or ``None``."""
    t = _t._host_contiguous(tensor)
    nbytes = t.numel() * t.element_size()
    meta = shard_metadata(code, global_shape, tuple(int(d) for d in t.shape), axes, nbytes)
    if meta is None:
        return None
    return b"".join((meta, _t._payload(t, nbytes))) if nbytes else meta


def _slice(tensor, split_dim, rank, count):
    start, length = _shard_range(int(tensor.shape[split_dim]), rank, count)
    return tensor.narrow(split_dim, start, length)


def _write_one(store, key, obj, config, upsert):
    return _t._write(store, [key], [obj], config, upsert)[0]


def _tensor_route(store, key, tensor, route, spec, config, upsert, context):
    """Stores one tensor by a resolved route (see :func:`_resolve_write`)."""
    if route == "direct":
        write = _t.upsert_pub_tensor if upsert else _t.pub_tensor
        return write(store, key, tensor, config)
    torch = _t._torch()
    try:
        info = _tensor_info(torch, tensor, key)
        if info is None:
            return INVALID_PARAMS
        code, shape = info
        manifest = None
        if route == "writer":
            w = spec
            if not _uniform(shape, w.split_dim, w.size, context):
                return INVALID_PARAMS
            shard_key = writer_shard_key(key, w)
            obj = _object(code, shape, _slice(tensor, w.split_dim, w.rank, w.size), [w])
            manifest = (writer_manifest_key(key),
                        encode_manifest(shape, code, w.split_dim, w.size))
        elif route == "tp":
            axes = spec
            tp = axes[_find(axes, TP)]
            if len(axes) == 1:
                # The tensor is this rank's shard; the global shape is inferred.
                if not 0 <= tp.split_dim < len(shape):
                    logger.error("%s: invalid shard parameters", context)
                    return INVALID_PARAMS
                global_shape = list(shape)
                global_shape[tp.split_dim] *= tp.size
                shard_key = f"{key}_tp_{tp.rank}"
                obj = _object(code, tuple(global_shape), tensor, axes)
            else:
                # The tensor is the full one; the TP rank's slice is stored.
                if not _uniform(shape, tp.split_dim, tp.size, context):
                    return INVALID_PARAMS
                global_shape = shape
                shard_key = parallelism_key(key, axes)
                obj = _object(code, shape, _slice(tensor, tp.split_dim, tp.rank, tp.size),
                              axes)
            manifest = (parallelism_manifest_key(key),
                        encode_manifest(global_shape, code, tp.split_dim, tp.size))
        else:  # generic: no TP axis, the tensor as is
            shard_key = parallelism_key(key, spec)
            obj = _object(code, shape, tensor, spec)
    except Exception as e:  # noqa: BLE001 - C++ refuses whatever went wrong
        logger.error("%s: failed to build the tensor object for %s: %s", context, key, e)
        return INVALID_PARAMS
    if obj is None:
        return INVALID_PARAMS
    rc = _write_one(store, shard_key, obj, config, upsert)
    if rc != 0 or manifest is None:
        return rc
    return _write_one(store, manifest[0], manifest[1], config, upsert)


# --- buffers holding [TensorMetadata][data] to stored objects (no torch) ---

def _buffer_meta(ptr, size):
    if not ptr or size < METADATA_SIZE:
        return None
    return _t.decode_metadata(ctypes.string_at(ptr, METADATA_SIZE), size)


def _raw_shard(meta, ptr, size, split_dim, rank, count, context):
    """C++ ``build_raw_tensor_shard_write_plan``: ``(shard shape, data bytes)`` of one
    even slice of the full tensor in the buffer, or ``None``."""
    g, local = meta.global_shape, meta.local_shape
    if not 0 <= rank < count or not _uniform(g, split_dim, count, context):
        return None
    if any(i != split_dim and g[i] != local[i] for i in range(len(g))):
        logger.error("%s: unsupported non-split local shape", context)
        return None
    local_numel = _prod(local)
    if (local_numel == 0 and meta.data_bytes) or (local_numel and
                                                   meta.data_bytes % local_numel):
        logger.error("%s: invalid tensor byte size", context)
        return None
    elem = meta.data_bytes // local_numel if local_numel else 0
    start, extent = _shard_range(g[split_dim], rank, count)
    shape = list(g)
    shape[split_dim] = extent
    if not extent or not elem:
        return tuple(shape), b""
    before, after = _prod(g[:split_dim]), _prod(g[split_dim + 1:])
    row = extent * after * elem
    parts = []
    for i in range(before):
        src = meta.data_offset + (i * g[split_dim] + start) * after * elem
        if src + row > size:
            logger.error("%s: the buffer does not hold the full tensor", context)
            return None
        parts.append(ctypes.string_at(ptr + src, row))
    return tuple(shape), b"".join(parts)


def _from_route(store, key, ptr, size, route, spec, config, upsert, context):
    """Stores one ``[TensorMetadata][data]`` buffer by a resolved route."""
    if route == "direct":
        if config is None:
            return _t._put_from_one(store, key, ptr, size, upsert)
        if _buffer_meta(ptr, size) is None:
            logger.error("%s: invalid tensor object metadata", context)
            return INVALID_PARAMS
        rc = _t._config_error(config)
        if rc:
            return rc
        write = store.upsert_from if upsert else store.put_from
        return write(key, ptr, size, config)
    meta = _buffer_meta(ptr, size)
    if meta is None:
        logger.error("%s: invalid tensor object metadata", context)
        return INVALID_PARAMS
    if route == "writer":
        w = spec
        shard = _raw_shard(meta, ptr, size, w.split_dim, w.rank, w.size, context)
        if shard is None:
            return INVALID_PARAMS
        head = shard_metadata(meta.dtype, meta.global_shape, shard[0], [w], len(shard[1]))
        if head is None:
            return INVALID_PARAMS
        rc = _write_one(store, writer_shard_key(key, w), head + shard[1], config, upsert)
        if rc:
            return rc
        return _write_one(store, writer_manifest_key(key),
                          encode_manifest(meta.global_shape, meta.dtype, w.split_dim,
                                          w.size), config, upsert)
    if route == "tp":
        # Every TP rank's slice of the full tensor in the buffer; no manifest.
        axes = spec
        index = _find(axes, TP)
        tp = axes[index]
        for rank in range(tp.size):
            shard_axes = _with_tp(axes, index, rank)
            shard = _raw_shard(meta, ptr, size, tp.split_dim, rank, tp.size, context)
            if shard is None:
                return INVALID_PARAMS
            head = shard_metadata(meta.dtype, meta.global_shape, shard[0], shard_axes,
                                  len(shard[1]))
            if head is None:
                return INVALID_PARAMS
            rc = _write_one(store, parallelism_key(key, shard_axes), head + shard[1],
                            config, upsert)
            if rc:
                return rc
        return 0
    head = shard_metadata(meta.dtype, meta.global_shape, meta.local_shape, spec,
                          meta.data_bytes)
    if head is None:
        return INVALID_PARAMS
    data = ctypes.string_at(ptr + meta.data_offset, meta.data_bytes)
    return _write_one(store, parallelism_key(key, spec), head + data, config, upsert)


def _resolve_write(parallelism, writer_partition, context):
    """C++ ``resolve_parallelism_write_request``: ``(route, spec)`` with route
    ``direct``, ``writer``, ``tp`` or ``generic``, or ``None``."""
    if writer_partition is not None:
        if parallelism is not None:
            logger.error("%s: writer_partition cannot be combined with parallelism",
                         context)
            return None
        writer = _parse_writer(writer_partition, context)
        return None if writer is None else ("writer", writer)
    if parallelism is None:
        return "direct", None
    axes = _validate(_parse_parallelism(parallelism), context)
    if axes is None:
        return None
    return ("tp" if _find(axes, TP) is not None else "generic"), axes


def _write(store, key, value, parallelism, config, writer_partition, upsert, from_):
    name = ("upsert" if upsert else "put") + "_tensor_with_parallelism" + \
        ("_from" if from_ else "")
    if not store._is_set_up():
        return INVALID_PARAMS
    request = _resolve_write(parallelism, writer_partition, name)
    if request is None:
        return INVALID_PARAMS
    if from_:
        return _from_route(store, key, value[0], value[1], *request, config, upsert, name)
    return _tensor_route(store, key, value, *request, config, upsert, name)


def _batch_write(store, keys, values, parallelisms, config, writer_partitions, upsert,
                 from_):
    name = "batch_" + ("upsert" if upsert else "put") + "_tensor_with_parallelism" + \
        ("_from" if from_ else "")
    keys = list(keys)
    invalid = [INVALID_PARAMS] * len(keys)
    if not store._is_set_up():
        return invalid
    groups = None if config is None else config.group_ids
    if groups is not None and len(groups) != len(keys):
        logger.error("%s: group_ids size must match keys size", name)
        return invalid
    if parallelisms is not None and writer_partitions is not None:
        logger.error("%s: writer_partitions cannot be combined with parallelisms", name)
        return invalid
    if len(values) != len(keys):
        logger.error("%s: values and keys must have the same length", name)
        return invalid
    if parallelisms is None and writer_partitions is None:
        if not from_:
            return _t._put_many(store, keys, values, config, upsert)
        ptrs, sizes = [v[0] for v in values], [v[1] for v in values]
        if config is None:
            return _t._put_from_many(store, keys, ptrs, sizes, upsert)
        rc = _t._config_error(config)
        if rc:
            return [rc] * len(keys)
        if not keys:
            return []
        if any(_buffer_meta(p, s) is None for p, s in values):
            logger.error("%s: invalid tensor object buffer", name)
            return invalid
        write = store.batch_upsert_from if upsert else store.batch_put_from
        return write(keys, ptrs, sizes, config)
    requests, what = ((parallelisms, "parallelisms") if parallelisms is not None
                      else (writer_partitions, "writer_partitions"))
    if not isinstance(requests, list) or len(requests) != len(keys):
        logger.error("%s: %s must be a list of the keys' length", name, what)
        return invalid
    results = []
    for i, (key, value, request) in enumerate(zip(keys, values, requests)):
        key_config = _t._config_for(config, None if groups is None else [groups[i]])
        par, writer = (request, None) if parallelisms is not None else (None, request)
        results.append(_write(store, key, value, par, key_config, writer, upsert, from_))
    return results


# --- reading ---

Source = collections.namedtuple("Source", "key meta value")


def _fetch(store, key):
    """The whole object at ``key`` (``b""`` when missing). One larger than the local
    (staging) buffer is read into memory registered for the call: C++ reads shards by byte
    ranges into registered memory, so its reconstructions are not bounded by that buffer."""
    value = store.get(key)
    if value:
        return value
    size = store.get_size(key)
    if size <= store._local_buffer_size():
        return b""
    buf = ctypes.create_string_buffer(size)
    address = ctypes.addressof(buf)
    if store.register_buffer(address, size) != 0:
        return b""
    try:
        length = store.get_into(key, address, size)
    finally:
        store.unregister_buffer(address)
    return buf.raw[:length] if length == size else b""


def _load(store, key, bounded=False):
    """The stored tensor object at ``key`` as a :class:`Source`, or ``None``. ``bounded``:
    read it through the local buffer only, as C++ reads the exact shard of a shard read
    (so one larger than that buffer is not found there, as in C++)."""
    value = store.get(key) if bounded else _fetch(store, key)
    meta = _t.decode_metadata(value, len(value)) if value else None
    return None if meta is None else Source(key, meta, value)


def _load_all(store, keys, context):
    sources = []
    for key in keys:
        source = _load(store, key)
        if source is None:
            logger.error("%s: missing reconstructed shard source for key %s", context, key)
            return None
        sources.append(source)
    return sources


def _stored_axes(meta):
    """C++ ``parallelism_from_metadata``: the canonical axes of a shard, or ``None``."""
    if meta.layout_kind != _t.LAYOUT_SHARD:
        return None
    axes = []
    for kind, _index, rank, count, split_dim, reserved0, _r1 in meta.axes:
        axes.append(Axis(kind, rank, count, split_dim if split_dim >= 0 else None,
                         reserved0 if kind == EP else None,
                         reserved0 if kind == PP else None))
    return _canonical(axes)


def _matches(axes, meta):
    stored = _stored_axes(meta)
    return stored is not None and stored == _canonical(axes)


def _tp_axis_of(meta):
    """The first TP layout axis ``(kind, index, rank, count, split_dim, r0, r1)``."""
    return next((a for a in meta.axes if a[0] == TP), None)


def _tp_compatible(request, meta):
    """C++ ``resolve_tp_compatible_parallelism_from_metadata`` followed by
    ``parallelism_specs_equal_by_kind(..., allow_tp_rank_mismatch)``: whether a stored
    shard has the (canonical) request's axes up to the TP rank."""
    stored = _stored_axes(meta)
    if stored is None or len(stored) != len(request):
        return False
    ti, si = _find(request, TP), _find(stored, TP)
    if ti is None or ti != si:
        return False
    for i, (want, have) in enumerate(zip(request, stored)):
        if i == ti:
            if want._replace(rank=0) != have._replace(rank=0):
                return False
        elif want != have:
            return False
    return True


def _full_sources(store, key, axes, context):
    """C++ ``load_parallelism_full_reconstruction_sources``: ``(sources, global shape,
    split_dim, dtype)`` of the TP shards a request's full tensor is made of, or ``None``."""
    tp = axes[_find(axes, TP)]
    canonical = _canonical(axes)
    ti = _find(canonical, TP)
    found = _manifest_sources(store, key, tp, canonical, ti, context)
    if found is not None:
        return found
    if _single_tp(canonical):
        first = _load(store, key if tp.size <= 1 else f"{key}_tp_0")
        stored_tp = None if first is None else _tp_axis_of(first.meta)
        if stored_tp is None or first.meta.layout_kind != _t.LAYOUT_SHARD:
            logger.error("%s: no shard matched requested layout for TP rank 0", context)
            return None
        split_dim, count = stored_tp[4], stored_tp[3]
        shape = first.meta.global_shape
        if tp.split_dim is not None and tp.split_dim != split_dim:
            logger.error("%s: split_dim mismatch", context)
            return None
        if not (_uniform(shape, split_dim, tp.size, context)
                and _uniform(shape, split_dim, count, context)):
            return None
        keys = [key if count <= 1 else f"{key}_tp_{r}" for r in range(count)]
        sources = _load_all(store, keys, context)
        if sources is None:
            return None
        for rank, source in enumerate(sources):
            axis = _tp_axis_of(source.meta)
            if (source.meta.layout_kind != _t.LAYOUT_SHARD or axis is None
                    or axis[2] != rank or axis[3] != count or axis[4] != split_dim):
                logger.error("%s: shard metadata mismatch for TP rank %d", context, rank)
                return None
        return sources, shape, split_dim, first.meta.dtype
    keys = [parallelism_key(key, _with_tp(canonical, ti, r)) for r in range(tp.size)]
    sources = _load_all(store, keys, context)
    if sources is None:
        return None
    for rank, source in enumerate(sources):
        if not _tp_compatible(canonical, source.meta):
            logger.error("%s: shard metadata mismatch for TP rank %d", context, rank)
            return None
    stored_tp = _tp_axis_of(sources[0].meta)
    split_dim, shape = stored_tp[4], sources[0].meta.global_shape
    if tp.split_dim is not None and tp.split_dim != split_dim:
        logger.error("%s: split_dim mismatch", context)
        return None
    if not _uniform(shape, split_dim, tp.size, context):
        return None
    return sources, shape, split_dim, sources[0].meta.dtype


def _manifest_sources(store, key, tp, canonical, ti, context):
    manifest = decode_manifest(store.get(parallelism_manifest_key(key)))
    if manifest is None:
        return None
    shape, split_dim, count = manifest.global_shape, manifest.split_dim, manifest.shard_count
    if tp.split_dim is not None and tp.split_dim != split_dim:
        logger.error("%s: split_dim mismatch", context)
        return None
    if not (_uniform(shape, split_dim, tp.size, context)
            and _uniform(shape, split_dim, count, context)):
        return None
    shard_axes = [_with_tp(canonical, ti, r, count) for r in range(count)]
    sources = _load_all(store, [parallelism_key(key, a) for a in shard_axes], context)
    if sources is None:
        return None
    for rank, source in enumerate(sources):
        if not _tp_compatible(shard_axes[rank], source.meta):
            logger.error("%s: shard metadata mismatch for TP rank %d", context, rank)
            return None
    return sources, shape, split_dim, manifest.dtype


def _writer_sources(store, key, context):
    """C++ ``load_writer_shard_reconstruction``, or ``None``."""
    manifest = decode_manifest(store.get(writer_manifest_key(key)))
    if manifest is None:
        return None
    count, split_dim = manifest.shard_count, manifest.split_dim
    writers = [Axis(TP, r, count, split_dim, None, None) for r in range(count)]
    sources = _load_all(store, [writer_shard_key(key, w) for w in writers], context)
    if sources is None:
        return None
    for writer, source in zip(writers, sources):
        stored = _stored_axes(source.meta)
        if stored is None or not _single_tp(stored) or stored[0] != writer:
            logger.error("%s: writer shard metadata mismatch for key %s", context,
                         source.key)
            return None
    return sources, manifest.global_shape, split_dim, manifest.dtype


def _assemble(sources, shape, split_dim, start, extent, context):
    """The bytes of ``shape`` narrowed to ``[start, start+extent)`` along ``split_dim``,
    copied from TP shard sources, or ``None`` (C++
    ``build_reconstructed_tensor_into_plan_from_sources``)."""
    if not sources or not 0 <= split_dim < len(shape):
        logger.error("%s: invalid reconstruction request", context)
        return None
    if start < 0 or extent < 0 or start + extent > shape[split_dim]:
        logger.error("%s: invalid target shard range", context)
        return None
    first = sources[0].meta
    elem = _t._DTYPES[first.dtype][1]
    if first.data_bytes != _prod(first.local_shape) * elem:
        logger.error("%s: invalid shard tensor byte size", context)
        return None
    before, after = _prod(shape[:split_dim]), _prod(shape[split_dim + 1:])
    out = bytearray(before * extent * after * elem)
    covered = [False] * extent
    fragments = 0
    for source in sources:
        meta = source.meta
        axis = _tp_axis_of(meta)
        if (len(meta.local_shape) != len(shape)
                or any(i != split_dim and meta.local_shape[i] != shape[i]
                       for i in range(len(shape)))):
            logger.error("%s: shard shape mismatch for key %s", context, source.key)
            return None
        if (meta.layout_kind != _t.LAYOUT_SHARD or axis is None or axis[4] != split_dim
                or not 0 <= axis[2] < axis[3]):
            logger.error("%s: invalid TP shard metadata for key %s", context, source.key)
            return None
        if not _uniform(shape, split_dim, axis[3], context):
            return None
        src_start, src_extent = _shard_range(shape[split_dim], axis[2], axis[3])
        if meta.local_shape[split_dim] != src_extent:
            logger.error("%s: shard extent mismatch for key %s", context, source.key)
            return None
        lo, hi = max(src_start, start), min(src_start + src_extent, start + extent)
        if hi <= lo:
            continue
        row = (hi - lo) * after * elem
        for i in range(lo - start, hi - start):
            covered[i] = True
        for s in range(before):
            dst = (s * extent + lo - start) * after * elem
            src = meta.data_offset + (s * src_extent + lo - src_start) * after * elem
            if src + row > len(source.value):
                logger.error("%s: shard data too short for key %s", context, source.key)
                return None
            out[dst:dst + row] = source.value[src:src + row]
            fragments += 1
    if not all(covered):
        logger.error("%s: shard extents do not cover reconstructed dimension", context)
        return None
    if not fragments and out:
        logger.error("%s: no fragments planned for reconstruction", context)
        return None
    return bytes(out)


def _full_object(found, context):
    sources, shape, split_dim, dtype = found
    data = _assemble(sources, shape, split_dim, 0, shape[split_dim], context)
    if data is None:
        return None
    return _t.encode_metadata(dtype, shape, shape, len(data)) + data


def _shard_object(found, axes, context):
    sources, shape, split_dim, dtype = found
    tp = axes[_find(axes, TP)]
    start, extent = _shard_range(shape[split_dim], tp.rank, tp.size)
    local = list(shape)
    local[split_dim] = extent
    data = _assemble(sources, shape, split_dim, start, extent, context)
    if data is None:
        return None
    head = shard_metadata(dtype, shape, tuple(local), axes, len(data))
    return None if head is None else head + data


def _resolve_shard(store, key, axes):
    """C++ ``resolve_parallelism_shard_read``: the stored shard matching ``axes``."""
    source = _load(store, parallelism_key(key, axes), True)
    if source is not None and _matches(axes, source.meta):
        return source
    if _single_tp(axes):
        a = axes[0]
        writer = Axis(TP, a.rank, a.size, 0 if a.split_dim is None else a.split_dim,
                      None, None)
        source = _load(store, writer_shard_key(key, writer), True)
        if source is not None:
            stored = _stored_axes(source.meta)
            if stored is not None and _single_tp(stored) and _matches(axes, source.meta):
                return source
    return None


def _read(store, key, target, context):
    """What a read of ``key`` by ``target`` gives: ``("object", bytes)`` to decode,
    ``("key", key)`` to read as a plain tensor, or ``None``."""
    parsed = _parse_target(target)
    if parsed is None:
        return None
    mode, par = parsed
    if mode == AS_STORED and par is None:
        return "key", key
    if mode == FULL and par is None:
        found = _writer_sources(store, key, context)
        if found is None:
            return "key", key
        obj = _full_object(found, context)
        return None if obj is None else ("object", obj)
    axes = _validate(par, context)
    if axes is None:
        return None
    if mode == SHARD:
        source = _resolve_shard(store, key, axes)
        if source is not None:
            return "object", source.value
        if _find(axes, TP) is not None:
            found = _full_sources(store, key, axes, context)
            obj = None if found is None else _shard_object(found, axes, context)
            if obj is not None:
                return "object", obj
        if _single_tp(axes) and context == "get_tensor_with_parallelism":
            a = axes[0]
            return "key", key if a.size <= 1 else f"{key}_tp_{a.rank}"
        logger.error("%s: parallelism metadata mismatch for key %s", context, key)
        return None
    if mode == FULL:
        if _find(axes, TP) is None:
            logger.error("%s: full reconstruction requires a TP axis", context)
            return None
        found = _full_sources(store, key, axes, context)
        obj = None if found is None else _full_object(found, context)
        return None if obj is None else ("object", obj)
    logger.error("%s: unsupported ReadTarget mode", context)
    return None


def _get_one(store, torch, key, target):
    read = _read(store, key, target, "get_tensor_with_parallelism")
    if read is None:
        return None
    kind, what = read
    if kind == "key":
        return _t._decode_bytes(torch, store.get(what))
    return _t._decode_bytes(torch, what)


def _get_into_one(store, torch, key, ptr, size, target):
    context = "get_tensor_with_parallelism_into"
    if not ptr:
        logger.error("%s: buffer pointer cannot be null", context)
        return None
    read = _read(store, key, target, context)
    if read is None:
        return None
    kind, what = read
    if kind == "key":
        return _t._decode_at(torch, ptr, store.get_into(what, ptr, size))
    if len(what) > size:
        logger.error("%s: buffer too small for key %s", context, key)
        return None
    ctypes.memmove(ptr, what, len(what))
    return _t._decode_at(torch, ptr, len(what))


# --- the store's methods (bound as methods of MooncakeDistributedStore) ---

def put_tensor_with_parallelism(self, key, tensor, parallelism=None, config=None,
                                writer_partition=None):
    """Stores a tensor whole, as a ``TensorParallelism`` shard, or as a writer partition
    (see the module docstring); 0 or a negative code."""
    return _write(self, key, tensor, parallelism, config, writer_partition, False, False)


def upsert_tensor_with_parallelism(self, key, tensor, parallelism=None, config=None,
                                   writer_partition=None):
    """``put_tensor_with_parallelism``, replacing existing values."""
    return _write(self, key, tensor, parallelism, config, writer_partition, True, False)


def put_tensor_with_parallelism_from(self, key, buffer_ptr, size, parallelism=None,
                                     config=None, writer_partition=None):
    """``put_tensor_with_parallelism`` of the full tensor a buffer holds as
    ``[TensorMetadata][data]``; with a TP axis every TP rank's slice is stored."""
    return _write(self, key, (buffer_ptr, size), parallelism, config, writer_partition,
                  False, True)


def upsert_tensor_with_parallelism_from(self, key, buffer_ptr, size, parallelism=None,
                                        config=None, writer_partition=None):
    """``put_tensor_with_parallelism_from``, replacing existing values."""
    return _write(self, key, (buffer_ptr, size), parallelism, config, writer_partition,
                  True, True)


def batch_put_tensor_with_parallelism(self, keys, tensors_list, parallelisms=None,
                                      config=None, writer_partitions=None):
    """``put_tensor_with_parallelism`` per key (``parallelisms`` or ``writer_partitions``:
    a list, one entry per key); one code per key."""
    return _batch_write(self, keys, list(tensors_list), parallelisms, config,
                        writer_partitions, False, False)


def batch_upsert_tensor_with_parallelism(self, keys, tensors_list, parallelisms=None,
                                         config=None, writer_partitions=None):
    """``batch_put_tensor_with_parallelism``, replacing existing values."""
    return _batch_write(self, keys, list(tensors_list), parallelisms, config,
                        writer_partitions, True, False)


def _buffers(buffer_ptrs, sizes):
    buffer_ptrs, sizes = list(buffer_ptrs), list(sizes)
    if len(buffer_ptrs) != len(sizes):
        return None
    return list(zip(buffer_ptrs, sizes))


def batch_put_tensor_with_parallelism_from(self, keys, buffer_ptrs, sizes,
                                           parallelisms=None, config=None,
                                           writer_partitions=None):
    """``put_tensor_with_parallelism_from`` per buffer; one code per key."""
    values = _buffers(buffer_ptrs, sizes)
    if values is None:
        return [INVALID_PARAMS] * len(list(keys))
    return _batch_write(self, keys, values, parallelisms, config, writer_partitions,
                        False, True)


def batch_upsert_tensor_with_parallelism_from(self, keys, buffer_ptrs, sizes,
                                              parallelisms=None, config=None,
                                              writer_partitions=None):
    """``batch_put_tensor_with_parallelism_from``, replacing existing values."""
    values = _buffers(buffer_ptrs, sizes)
    if values is None:
        return [INVALID_PARAMS] * len(list(keys))
    return _batch_write(self, keys, values, parallelisms, config, writer_partitions,
                        True, True)


def get_tensor_with_parallelism(self, key, target=None):
    """The tensor a ``ReadTarget`` asks for (``None`` reads it as stored), or ``None``."""
    if not self._is_set_up():
        return None
    return _get_one(self, _t._torch(), key, target)


def batch_get_tensor_with_parallelism(self, keys, targets=None):
    """``get_tensor_with_parallelism`` per key; ``targets`` is ``None`` or a list."""
    keys = list(keys)
    if not self._is_set_up():
        return [None] * len(keys)
    if targets is None:
        return _t.batch_get_tensor(self, keys)
    if not isinstance(targets, list) or len(targets) != len(keys):
        logger.error("batch_get_tensor_with_parallelism: targets must be a list of the "
                     "keys' length")
        return [None] * len(keys)
    torch = _t._torch()
    return [_get_one(self, torch, k, t) for k, t in zip(keys, targets)]


def get_tensor_with_parallelism_into(self, key, buffer_ptr, size, target=None):
    """``get_tensor_with_parallelism`` into a buffer, which then holds
    ``[TensorMetadata][data]``; a tensor viewing it, or ``None``."""
    if not self._is_set_up():
        return None
    return _get_into_one(self, _t._torch(), key, buffer_ptr, size, target)


def batch_get_tensor_with_parallelism_into(self, keys, buffer_ptrs, sizes, targets=None):
    """``get_tensor_with_parallelism_into`` per key; all ``None`` when the lists' lengths
    differ."""
    keys, buffer_ptrs, sizes = list(keys), list(buffer_ptrs), list(sizes)
    none = [None] * len(keys)
    if not self._is_set_up():
        return none
    if len(buffer_ptrs) != len(keys) or len(sizes) != len(keys):
        logger.error("batch_get_tensor_with_parallelism_into: keys, buffer_ptrs, and sizes "
                     "must have the same length")
        return none
    if targets is not None and (not isinstance(targets, list) or len(targets) != len(keys)):
        logger.error("batch_get_tensor_with_parallelism_into: targets must be a list of "
                     "the keys' length")
        return none
    torch = _t._torch()
    targets = targets if targets is not None else none
    return [_get_into_one(self, torch, k, p, s, t)
            for k, p, s, t in zip(keys, buffer_ptrs, sizes, targets)]
