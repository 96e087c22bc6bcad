"""The tensor helpers of ``MooncakeDistributedStore`` (``put_tensor`` and the rest).

The C++ wheel implements them natively (``mooncake-integration/store/store_py.cpp``);
here they are Python on top of the store's byte calls, with the same arguments, return
values and stored layout, so that either wheel reads what the other wrote:

- A stored tensor is one object: a 304-byte ``TensorMetadata`` (little-endian, no padding,
  laid out below) followed by the tensor's bytes in row-major (contiguous) order.
- ``torch`` is imported on the first call that makes or returns a tensor, and
  ``safetensors`` by the two safetensors calls; ``import mooncake.store`` needs neither.
  Without torch such a call raises :class:`ImportError`, unless the store is not set up:
  then every call returns its not-initialised value (``-600``, ``None``, or a list of
  them) and never raises. The ``*_tensor_from`` calls, which only check the metadata of a
  buffer the caller filled, and the CUDA calls need no torch, as in C++.
- Puts return 0 or a negative Mooncake code (``-600`` for a value that is not a tensor of
  a supported dtype), batch puts one code per key; gets return a tensor or ``None``.
- ``put_tensor_with_tp`` splits along ``split_dim`` into ``tp_size`` equal shards (a
  dimension that does not divide evenly is refused with ``-600``) and stores every shard
  as ``"{key}_tp_{rank}"``; its ``tp_rank`` is accepted and unused, as in C++.
- Tensors are written through ``put``/``upsert`` (and ``put_batch``/``upsert_batch`` for
  several keys, with a per-key retry for the codes when the batch fails), which copy into
  the store's local (staging) buffer. An object larger than that buffer is registered for
  the call and written with ``put_from``/``upsert_from`` instead: C++ writes a tensor
  from its own memory, so its tensor puts are not bounded by the local buffer. (Its
  ``get_tensor`` is, like ours: read such a tensor with ``get_tensor_into``.)
- ``get_tensor`` returns a tensor owning a private copy of the value. ``get_tensor_into``
  returns a tensor viewing the caller's buffer, which must outlive it. As in C++, a
  0-dimensional tensor comes back with shape ``(1,)``.
"""

import collections
import ctypes
import logging
import struct

logger = logging.getLogger("mooncake.store")

__all__ = [
    "METADATA_SIZE", "TensorMetadata", "encode_metadata", "decode_metadata",
    "put_tensor", "pub_tensor", "upsert_tensor", "upsert_pub_tensor",
    "batch_put_tensor", "batch_pub_tensor", "batch_upsert_tensor", "batch_upsert_pub_tensor",
    "put_tensor_from", "upsert_tensor_from", "batch_put_tensor_from",
    "batch_upsert_tensor_from", "get_tensor", "batch_get_tensor", "get_tensor_into",
    "batch_get_tensor_into", "get_tensor_into_cuda", "batch_get_tensor_into_cuda",
    "put_tensor_with_tp", "pub_tensor_with_tp", "put_tensor_with_tp_from",
    "batch_put_tensor_with_tp", "batch_pub_tensor_with_tp", "batch_put_tensor_with_tp_from",
    "get_tensor_with_tp", "get_tensor_with_tp_into", "batch_get_tensor_with_tp",
    "batch_get_tensor_with_tp_into", "save_tensor_to_safetensor",
    "load_tensor_from_safetensor",
]

NEED_TORCH = "the tensor helpers of mooncake.store need PyTorch: pip install torch"

# ErrorCode values returned here.
INVALID_PARAMS = -600  # also the value of every call on a store that is not set up
FILE_NOT_FOUND = -1100

# --- TensorMetadata (mooncake-integration/integration_utils.h) ---
#
# TensorObjectHeader, 40 bytes:
#   u32 magic 'MOON' (0x4d4f4f4e), u16 version 1, u16 header_size (304), i32 dtype,
#   i32 ndim, u32 layout_kind (0 full, 1 shard), u32 reserved_flags,
#   u64 data_offset (304), u64 data_bytes
# TensorLayoutMetadata, 264 bytes:
#   i64 global_shape[8], i64 local_shape[8] (unused dims -1), u32 axis_count, u32 reserved,
#   LayoutAxis axes[4], each 32 bytes:
#     i32 kind (0 DP, 1 TP, 2 EP, 3 PP, 4 reserved), i32 axis_index, i32 shard_rank,
#     i32 shard_count, i32 split_dim (-1 none), i32 reserved0, i64 reserved1 (for an axis
#     with a split_dim: the shard's extent along it)
MAGIC = 0x4D4F4F4E
VERSION = 1
MAX_DIMS = 8
MAX_AXES = 4
LAYOUT_FULL = 0
LAYOUT_SHARD = 1
AXIS_TP = 1
AXIS_KIND_MAX = 4

_HEADER = struct.Struct("<IHHiiIIQQ")
_SHAPE = struct.Struct(f"<{MAX_DIMS}q")
_AXIS_COUNT = struct.Struct("<II")
_AXIS = struct.Struct("<iiiiiiq")
METADATA_SIZE = _HEADER.size + 2 * _SHAPE.size + _AXIS_COUNT.size + MAX_AXES * _AXIS.size
assert METADATA_SIZE == 304, METADATA_SIZE

# TensorDtype: code -> (torch attribute, element size). The codes are the C++ enum's.
_DTYPES = {
    0: ("float32", 4), 1: ("float64", 8), 2: ("int8", 1), 3: ("uint8", 1),
    4: ("int16", 2), 5: ("uint16", 2), 6: ("int32", 4), 7: ("uint32", 4),
    8: ("int64", 8), 9: ("uint64", 8), 10: ("bool", 1), 11: ("float16", 2),
    12: ("bfloat16", 2), 13: ("float8_e4m3fn", 1), 14: ("float8_e5m2", 1),
}


class TensorMetadata(collections.namedtuple(
        "TensorMetadata", "dtype ndim layout_kind data_offset data_bytes global_shape "
        "local_shape axes")):
    """A decoded, validated ``TensorMetadata``. ``axes`` holds tuples
    ``(kind, axis_index, shard_rank, shard_count, split_dim, reserved0, reserved1)``."""

    __slots__ = ()


def _padded(shape):
    return tuple(shape) + (-1,) * (MAX_DIMS - len(shape))


def encode_metadata(dtype, global_shape, local_shape, data_bytes, layout_kind=LAYOUT_FULL,
                    axes=()):
    """The 304 bytes of a ``TensorMetadata`` (what C++ ``BuildTensorMetadata`` makes, with
    ``data_bytes`` set). ``axes``: up to four 7-tuples as in :class:`TensorMetadata`."""
    if len(global_shape) > MAX_DIMS or len(local_shape) > MAX_DIMS or len(axes) > MAX_AXES:
        raise ValueError("a tensor has at most 8 dimensions and 4 layout axes")
    out = bytearray(METADATA_SIZE)
    _HEADER.pack_into(out, 0, MAGIC, VERSION, METADATA_SIZE, dtype, len(global_shape),
                      layout_kind, 0, METADATA_SIZE, data_bytes)
    at = _HEADER.size
    _SHAPE.pack_into(out, at, *_padded(global_shape))
    _SHAPE.pack_into(out, at + _SHAPE.size, *_padded(local_shape))
    at += 2 * _SHAPE.size
    _AXIS_COUNT.pack_into(out, at, len(axes), 0)
    at += _AXIS_COUNT.size
    for i, axis in enumerate(axes):
        _AXIS.pack_into(out, at + i * _AXIS.size, *axis)
    return bytes(out)


def decode_metadata(prefix, total_length):
    """The metadata at the start of a stored object of ``total_length`` bytes (``prefix``
    holds at least its first 304), or ``None`` when C++ ``ValidateTensorMetadata`` would
    refuse it."""
    if total_length < METADATA_SIZE or len(prefix) < METADATA_SIZE:
        return None
    (magic, version, header_size, dtype, ndim, layout_kind, _flags, data_offset,
     data_bytes) = _HEADER.unpack_from(prefix, 0)
    if magic != MAGIC or version != VERSION or header_size != METADATA_SIZE:
        return None
    if dtype not in _DTYPES or not 0 <= ndim <= MAX_DIMS or layout_kind > LAYOUT_SHARD:
        return None
    at = _HEADER.size
    global_dims = _SHAPE.unpack_from(prefix, at)
    local_dims = _SHAPE.unpack_from(prefix, at + _SHAPE.size)
    at += 2 * _SHAPE.size
    axis_count, _ = _AXIS_COUNT.unpack_from(prefix, at)
    at += _AXIS_COUNT.size
    if axis_count > MAX_AXES:
        return None
    if not METADATA_SIZE <= data_offset <= total_length:
        return None
    if data_bytes != total_length - data_offset:
        return None
    if any(d < 0 for d in global_dims[:ndim] + local_dims[:ndim]):
        return None
    if any(d != -1 for d in global_dims[ndim:] + local_dims[ndim:]):
        return None
    numel = 1
    for d in local_dims[:ndim]:
        numel *= d
    if numel * _DTYPES[dtype][1] != data_bytes:
        return None
    axes = [_AXIS.unpack_from(prefix, at + i * _AXIS.size) for i in range(axis_count)]
    for kind, _index, rank, count, split_dim, _r0, _r1 in axes:
        if not 0 <= kind <= AXIS_KIND_MAX or count <= 0 or not 0 <= rank < count:
            return None
        if not -1 <= split_dim < ndim:
            return None
    return TensorMetadata(dtype, ndim, layout_kind, data_offset, data_bytes,
                          global_dims[:ndim], local_dims[:ndim], axes)


# --- torch and tensors ---

def _torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(NEED_TORCH) from e
    return torch


def _dtype_code(torch, dtype):
    for code, (name, _size) in _DTYPES.items():
        if getattr(torch, name, None) == dtype:
            return code
    return None


def _torch_dtype(torch, code):
    return getattr(torch, _DTYPES[code][0], None)


def _payload(tensor, nbytes):
    """A buffer over a contiguous CPU tensor's bytes (valid while ``tensor`` lives)."""
    return (ctypes.c_char * nbytes).from_address(tensor.data_ptr())


def _host_contiguous(tensor):
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    return tensor.contiguous()


def _full_object(torch, tensor, key):
    """The stored object of a whole tensor, or ``None`` (logged) if it cannot be stored."""
    # C++ accepts any object whose class name contains "Tensor" (so not nn.Parameter).
    if "Tensor" not in type(tensor).__name__:
        logger.error("Input for %s is not a PyTorch tensor", key)
        return None
    try:
        t = _host_contiguous(tensor)
        code = _dtype_code(torch, t.dtype)
        shape = tuple(int(d) for d in t.shape)
        if code is None or len(shape) > MAX_DIMS:
            logger.error("Unsupported tensor dtype or rank for %s", key)
            return None
        nbytes = t.numel() * t.element_size()
        meta = encode_metadata(code, shape, shape, nbytes)
        return b"".join((meta, _payload(t, nbytes))) if nbytes else meta
    except Exception as e:  # noqa: BLE001 - C++ logs and refuses whatever went wrong
        logger.error("Error extracting tensor info for %s: %s", key, e)
        return None


def _shard_objects(torch, tensor, tp_size, split_dim, key):
    """The ``tp_size`` stored shard objects of a tensor split evenly along ``split_dim``,
    or ``None`` (logged) if it cannot be split so."""
    try:
        return _split(torch, tensor, tp_size, split_dim, key)
    except Exception as e:  # noqa: BLE001 - C++ logs and refuses whatever went wrong
        logger.error("Failed to put tensor %s with tp: %s", key, e)
        return None


def _split(torch, tensor, tp_size, split_dim, key):
    code = _dtype_code(torch, tensor.dtype)
    shape = tuple(int(d) for d in tensor.shape)
    if code is None or len(shape) > MAX_DIMS:
        logger.error("Unsupported tensor dtype or rank for %s", key)
        return None
    if not 0 <= split_dim < len(shape) or tp_size <= 0 or shape[split_dim] % tp_size:
        logger.error("%s: only uniform sharding along an existing dimension is supported",
                     key)
        return None
    extent = shape[split_dim]
    objects = []
    for rank in range(tp_size):
        start = extent * rank // tp_size
        length = extent * (rank + 1) // tp_size - start
        chunk = _host_contiguous(tensor.narrow(split_dim, start, length))
        local = tuple(int(d) for d in chunk.shape)
        nbytes = chunk.numel() * chunk.element_size()
        axis = (AXIS_TP, 0, rank, tp_size, split_dim, 0, local[split_dim])
        meta = encode_metadata(code, shape, local, nbytes, LAYOUT_SHARD, (axis,))
        objects.append(b"".join((meta, _payload(chunk, nbytes))) if nbytes else meta)
    return objects


def _tensor_from(torch, meta, buffer):
    """A tensor over ``buffer`` (writable, holding the data at ``meta.data_offset``)."""
    dtype = _torch_dtype(torch, meta.dtype)
    if dtype is None:
        logger.error("dtype %d is not available in this torch", meta.dtype)
        return None
    if meta.data_bytes == 0:
        return torch.empty(meta.local_shape, dtype=dtype)
    numel = meta.data_bytes // _DTYPES[meta.dtype][1]
    tensor = torch.frombuffer(buffer, dtype=dtype, count=numel, offset=meta.data_offset)
    # C++ leaves a 0-dimensional tensor as the 1-D array it read.
    return tensor.reshape(meta.local_shape) if meta.ndim else tensor


def _decode_bytes(torch, value):
    """A tensor owning a copy of a stored object, or ``None`` (an empty or invalid one)."""
    meta = decode_metadata(value, len(value))
    if meta is None:
        if value:
            logger.error("Invalid tensor metadata")
        return None
    return _tensor_from(torch, meta, bytearray(value))


def _decode_at(torch, address, length):
    """A tensor viewing the ``length``-byte object at ``address``, or ``None`` when
    ``length`` is an error code or the metadata is invalid."""
    if length < METADATA_SIZE:
        if length < 0:
            logger.error("Get tensor into failed with error code: %d", length)
        return None
    meta = decode_metadata(ctypes.string_at(address, METADATA_SIZE), length)
    if meta is None:
        logger.error("Invalid tensor metadata")
        return None
    return _tensor_from(torch, meta, (ctypes.c_char * length).from_address(address))


def _valid_object_at(address, size):
    """Whether ``[address, address+size)`` holds a valid stored tensor object."""
    if not address or size < METADATA_SIZE:
        return False
    return decode_metadata(ctypes.string_at(address, METADATA_SIZE), size) is not None


# --- writing ---

_CONFIG_FIELDS = ("replica_num", "nof_replica_num", "dfs_replica_num", "soft_pin_action",
                  "soft_pin_ttl_ms", "with_hard_pin", "preferred_segments",
                  "preferred_nof_segments", "preferred_segment", "data_type")


def _config_for(config, group_ids):
    """A copy of ``config`` with these ``group_ids``. ``prefer_alloc_in_same_node`` is
    cleared: C++ writes tensors with the multi-buffer put, which accepts it as a hint."""
    if config is None:
        return None
    from mooncake._mooncake import ReplicateConfig

    out = ReplicateConfig()
    for name in _CONFIG_FIELDS:
        setattr(out, name, getattr(config, name))
    out.group_ids = group_ids
    return out


def _config_error(config):
    """C++ ``validate_replicate_config``: -600 when ``preferred_segments`` is given and its
    length is not ``replica_num``; else 0."""
    if config is None:
        return 0
    preferred = config.preferred_segments
    if preferred and len(preferred) != config.replica_num:
        logger.error("Preferred segments size (%d) must match replica_num (%d)",
                     len(preferred), config.replica_num)
        return INVALID_PARAMS
    return 0


def _write(store, keys, objects, config, upsert):
    """Stores ``objects[i]`` under ``keys[i]``; one code per key, -600 where the object
    is ``None``. ``config.group_ids``, when set, names one group per key."""
    groups = None if config is None else config.group_ids
    if groups is not None and len(groups) != len(keys):
        logger.error("group_ids size must match keys size")
        return [INVALID_PARAMS] * len(keys)

    def one_config(i):
        return _config_for(config, None if groups is None else [groups[i]])

    results = [INVALID_PARAMS] * len(keys)
    limit = store._local_buffer_size()
    staged = [i for i, obj in enumerate(objects) if obj is not None and len(obj) <= limit]
    if len(staged) > 1:
        write_batch = store.upsert_batch if upsert else store.put_batch
        batch_groups = None if groups is None else [groups[i] for i in staged]
        rc = write_batch([keys[i] for i in staged], [objects[i] for i in staged],
                         _config_for(config, batch_groups))
        if rc == 0:
            for i in staged:
                results[i] = 0
            staged = []
    # One key, or a batch that failed: the batch calls return only the first error, so
    # each key is written (again) alone for its own code; a put of a key the batch did
    # store returns 0.
    write_one = store.upsert if upsert else store.put
    for i in staged:
        results[i] = write_one(keys[i], objects[i], one_config(i))
    for i, obj in enumerate(objects):
        if obj is not None and len(obj) > limit:
            results[i] = _write_registered(store, keys[i], obj, one_config(i), upsert)
    return results


def _write_registered(store, key, obj, config, upsert):
    """Writes an object larger than the staging (local) buffer straight from the memory of
    ``obj``, registered for the call: C++ writes a tensor from its own memory, so its size
    is not bounded by the local buffer."""
    address = ctypes.cast(ctypes.c_char_p(obj), ctypes.c_void_p).value
    if store.register_buffer(address, len(obj)) != 0:
        return (store.upsert if upsert else store.put)(key, obj, config)
    try:
        write = store.upsert_from if upsert else store.put_from
        return write(key, address, len(obj), config)
    finally:
        store.unregister_buffer(address)


def _put_one(store, key, tensor, config, upsert):
    torch = _torch()
    obj = _full_object(torch, tensor, key)
    if obj is None:
        return INVALID_PARAMS
    return _write(store, [key], [obj], config, upsert)[0]


def _put_many(store, keys, tensors_list, config, upsert):
    keys = list(keys)
    if not store._is_set_up():
        return [INVALID_PARAMS] * len(keys)
    if not keys or len(keys) != len(tensors_list):
        return [INVALID_PARAMS] * len(keys)
    if _config_error(config):
        return [INVALID_PARAMS] * len(keys)
    torch = _torch()
    objects = [_full_object(torch, t, k) for k, t in zip(keys, tensors_list)]
    return _write(store, keys, objects, config, upsert)


def _tp_key(key, rank):
    return f"{key}_tp_{rank}"


def _put_tp(store, key, tensor, config, tp_size, split_dim):
    """Stores every shard; 0, or the first shard's error."""
    shards = _shard_objects(_torch(), tensor, tp_size, split_dim, key)
    if shards is None:
        return INVALID_PARAMS
    keys = [_tp_key(key, rank) for rank in range(tp_size)]
    return next((rc for rc in _write(store, keys, shards, config, False) if rc), 0)


def _put_tp_many(store, base_keys, tensors, config, tp_size, split_dim):
    """Stores every shard of every tensor; per base key 0 or its first shard's error."""
    groups = None if config is None else config.group_ids
    if groups is not None and len(groups) != len(base_keys):
        logger.error("batch_put_tensor_with_tp: group_ids size must match keys size")
        return [INVALID_PARAMS] * len(base_keys)
    torch = _torch()
    results = [INVALID_PARAMS] * len(base_keys)
    done, keys, objects, shard_groups = [], [], [], []
    for i, (key, tensor) in enumerate(zip(base_keys, tensors)):
        if tensor is None:
            continue
        shards = _shard_objects(torch, tensor, tp_size, split_dim, key)
        if shards is None:
            continue
        done.append(i)
        keys += [_tp_key(key, rank) for rank in range(tp_size)]
        objects += shards
        if groups is not None:
            shard_groups += [groups[i]] * tp_size
    if not done:
        return results
    codes = _write(store, keys, objects,
                   _config_for(config, shard_groups if groups is not None else None), False)
    for n, i in enumerate(done):
        results[i] = next((rc for rc in codes[n * tp_size:(n + 1) * tp_size] if rc), 0)
    return results


def _put_from_many(store, keys, buffer_ptrs, sizes, upsert):
    keys = list(keys)
    if not store._is_set_up():
        return [INVALID_PARAMS] * len(keys)
    if not keys:
        return []
    if len(keys) != len(buffer_ptrs) or len(keys) != len(sizes):
        return [INVALID_PARAMS] * len(keys)
    for i, (ptr, size) in enumerate(zip(buffer_ptrs, sizes)):
        if not _valid_object_at(ptr, size):
            logger.error("Invalid tensor buffer at index %d", i)
            return [INVALID_PARAMS] * len(keys)
    write = store.batch_upsert_from if upsert else store.batch_put_from
    return write(keys, list(buffer_ptrs), list(sizes))


def _put_from_one(store, key, buffer_ptr, size, upsert):
    if not buffer_ptr or not store._is_set_up():
        return INVALID_PARAMS
    if not _valid_object_at(buffer_ptr, size):
        logger.error("Invalid tensor metadata in the buffer for %s", key)
        return INVALID_PARAMS
    write = store.upsert_from if upsert else store.put_from
    return write(key, buffer_ptr, size)


# --- the store's methods (bound as methods of MooncakeDistributedStore) ---

def put_tensor(self, key, tensor):
    """Stores a tensor with the default config; 0 or a negative code."""
    if not self._is_set_up():
        return INVALID_PARAMS
    return _put_one(self, key, tensor, None, False)


def pub_tensor(self, key, tensor, config=None):
    """``put_tensor`` with a ``ReplicateConfig``."""
    if not self._is_set_up():
        return INVALID_PARAMS
    return _config_error(config) or _put_one(self, key, tensor, config, False)


def upsert_tensor(self, key, tensor):
    """Stores a tensor, replacing an existing value; 0 or a negative code."""
    if not self._is_set_up():
        return INVALID_PARAMS
    return _put_one(self, key, tensor, None, True)


def upsert_pub_tensor(self, key, tensor, config=None):
    """``upsert_tensor`` with a ``ReplicateConfig``."""
    if not self._is_set_up():
        return INVALID_PARAMS
    return _config_error(config) or _put_one(self, key, tensor, config, True)


def batch_put_tensor(self, keys, tensors_list):
    """Stores several tensors; one code per key."""
    return _put_many(self, keys, tensors_list, None, False)


def batch_pub_tensor(self, keys, tensors_list, config=None):
    """``batch_put_tensor`` with a ``ReplicateConfig``."""
    return _put_many(self, keys, tensors_list, config, False)


def batch_upsert_tensor(self, keys, tensors_list):
    """``batch_put_tensor``, replacing existing values."""
    return _put_many(self, keys, tensors_list, None, True)


def batch_upsert_pub_tensor(self, keys, tensors_list, config=None):
    """``batch_upsert_tensor`` with a ``ReplicateConfig``."""
    return _put_many(self, keys, tensors_list, config, True)


def put_tensor_from(self, key, buffer_ptr, size):
    """Stores the ``[TensorMetadata][data]`` object a registered buffer holds, without
    copying; -600 if its metadata is invalid."""
    return _put_from_one(self, key, buffer_ptr, size, False)


def upsert_tensor_from(self, key, buffer_ptr, size):
    """``put_tensor_from``, replacing an existing value."""
    return _put_from_one(self, key, buffer_ptr, size, True)


def batch_put_tensor_from(self, keys, buffer_ptrs, sizes):
    """``put_tensor_from`` for several buffers; all -600 if any buffer is invalid."""
    return _put_from_many(self, keys, buffer_ptrs, sizes, False)


def batch_upsert_tensor_from(self, keys, buffer_ptrs, sizes):
    """``batch_put_tensor_from``, replacing existing values."""
    return _put_from_many(self, keys, buffer_ptrs, sizes, True)


def get_tensor(self, key):
    """The stored tensor (owning a copy), or ``None``."""
    if not self._is_set_up():
        return None
    torch = _torch()
    return _decode_bytes(torch, self.get(key))


def batch_get_tensor(self, keys):
    """A tensor or ``None`` per key."""
    keys = list(keys)
    if not self._is_set_up():
        return [None] * len(keys)
    torch = _torch()
    values = self.get_batch(keys)
    if len(values) != len(keys):
        return [None] * len(keys)
    return [_decode_bytes(torch, v) for v in values]


def get_tensor_into(self, key, buffer_ptr, size):
    """Reads the object into a registered buffer and returns a tensor viewing it, or
    ``None``."""
    if not self._is_set_up() or not buffer_ptr:
        return None
    torch = _torch()
    return _decode_at(torch, buffer_ptr, self.get_into(key, buffer_ptr, size))


def batch_get_tensor_into(self, keys, buffer_ptrs, sizes):
    """``get_tensor_into`` per key. As in C++, ``[-600] * len(keys)`` when the store is not
    set up, the lengths differ or a pointer is null."""
    keys = list(keys)
    invalid = [INVALID_PARAMS] * len(keys)
    if not self._is_set_up():
        return invalid
    if len(keys) != len(buffer_ptrs) or len(keys) != len(sizes) or not all(buffer_ptrs):
        return invalid
    torch = _torch()
    lengths = self.batch_get_into(keys, list(buffer_ptrs), list(sizes))
    if len(lengths) != len(keys):
        return invalid
    return [_decode_at(torch, ptr, n) for ptr, n in zip(buffer_ptrs, lengths)]


def get_tensor_into_cuda(self, key, tensor):
    """-600: reading into CUDA tensors needs a CUDA build in standalone (dummy) mode."""
    return batch_get_tensor_into_cuda(self, [key], [tensor])[0]


def batch_get_tensor_into_cuda(self, keys, tensors_list):
    """-600 per key (see ``get_tensor_into_cuda``)."""
    keys = list(keys)
    if self._is_set_up():
        logger.error("batch_get_tensor_into_cuda: CUDA IPC tensor reads are not supported "
                     "by this build")
    return [INVALID_PARAMS] * len(keys)


def put_tensor_with_tp(self, key, tensor, tp_rank=0, tp_size=1, split_dim=0):
    """Stores ``tp_size`` shards of the tensor (split along ``split_dim``) as
    ``"{key}_tp_{rank}"``; a plain ``put_tensor`` when ``tp_size <= 1``."""
    if not self._is_set_up():
        return INVALID_PARAMS
    if tp_size <= 1:
        return put_tensor(self, key, tensor)
    return _put_tp(self, key, tensor, None, tp_size, split_dim)


def pub_tensor_with_tp(self, key, tensor, config=None, tp_rank=0, tp_size=1, split_dim=0):
    """``put_tensor_with_tp`` with a ``ReplicateConfig``."""
    if not self._is_set_up():
        return INVALID_PARAMS
    rc = _config_error(config)
    if rc:
        return rc
    if tp_size <= 1:
        return pub_tensor(self, key, tensor, config)
    return _put_tp(self, key, tensor, config, tp_size, split_dim)


def put_tensor_with_tp_from(self, key, buffer_ptr, size, tp_rank=0, tp_size=1,
                            split_dim=0):
    """``put_tensor_with_tp`` of the full tensor a buffer holds as
    ``[TensorMetadata][data]``; ``put_tensor_from`` when ``tp_size <= 1``."""
    if not self._is_set_up() or not buffer_ptr or size < METADATA_SIZE:
        return INVALID_PARAMS
    if tp_size <= 1:
        return put_tensor_from(self, key, buffer_ptr, size)
    tensor = _decode_at(_torch(), buffer_ptr, size)
    if tensor is None:
        return INVALID_PARAMS
    return _put_tp(self, key, tensor, None, tp_size, split_dim)


def batch_put_tensor_with_tp(self, base_keys, tensors_list, tp_rank=0, tp_size=1,
                             split_dim=0):
    """``put_tensor_with_tp`` for several tensors; one code per base key."""
    if tp_size <= 1:
        return batch_put_tensor(self, base_keys, tensors_list)
    base_keys = list(base_keys)
    if not self._is_set_up() or not base_keys or len(base_keys) != len(tensors_list):
        return [INVALID_PARAMS] * len(base_keys)
    return _put_tp_many(self, base_keys, tensors_list, None, tp_size, split_dim)


def batch_pub_tensor_with_tp(self, base_keys, tensors_list, config=None, tp_rank=0,
                             tp_size=1, split_dim=0):
    """``batch_put_tensor_with_tp`` with a ``ReplicateConfig``."""
    if tp_size <= 1:
        return batch_pub_tensor(self, base_keys, tensors_list, config)
    base_keys = list(base_keys)
    if not self._is_set_up() or not base_keys or len(base_keys) != len(tensors_list):
        return [INVALID_PARAMS] * len(base_keys)
    if _config_error(config):
        return [INVALID_PARAMS] * len(base_keys)
    return _put_tp_many(self, base_keys, tensors_list, config, tp_size, split_dim)


def batch_put_tensor_with_tp_from(self, base_keys, buffer_ptrs, sizes, tp_rank=0,
                                  tp_size=1, split_dim=0):
    """``put_tensor_with_tp_from`` for several buffers; one code per base key."""
    base_keys = list(base_keys)
    if not self._is_set_up():
        return [INVALID_PARAMS] * len(base_keys)
    if tp_size <= 1:
        return batch_put_tensor_from(self, base_keys, buffer_ptrs, sizes)
    n = len(base_keys)
    if not n or n != len(buffer_ptrs) or n != len(sizes):
        return [INVALID_PARAMS] * n
    torch = _torch()
    results = [0] * n
    done, tensors = [], []
    for i, (ptr, size) in enumerate(zip(buffer_ptrs, sizes)):
        tensor = _decode_at(torch, ptr, size) if ptr and size >= METADATA_SIZE else None
        if tensor is None:
            results[i] = INVALID_PARAMS
            continue
        done.append(i)
        tensors.append(tensor)
    if done:
        codes = _put_tp_many(self, [base_keys[i] for i in done], tensors, None, tp_size,
                             split_dim)
        for i, rc in zip(done, codes):
            results[i] = rc
    return results


def get_tensor_with_tp(self, key, tp_rank=0, tp_size=1, split_dim=0):
    """The shard ``"{key}_tp_{tp_rank}"``, or ``key`` itself when ``tp_size <= 1``."""
    return get_tensor(self, key if tp_size <= 1 else _tp_key(key, tp_rank))


def batch_get_tensor_with_tp(self, base_keys, tp_rank=0, tp_size=1):
    """``get_tensor_with_tp`` per base key."""
    keys = list(base_keys) if tp_size <= 1 else [_tp_key(k, tp_rank) for k in base_keys]
    return batch_get_tensor(self, keys)


def get_tensor_with_tp_into(self, key, buffer_ptr, size, tp_rank=0, tp_size=1,
                            split_dim=0):
    """``get_tensor_into`` of the shard ``get_tensor_with_tp`` reads."""
    if not self._is_set_up():
        return None
    return get_tensor_into(self, key if tp_size <= 1 else _tp_key(key, tp_rank),
                           buffer_ptr, size)


def batch_get_tensor_with_tp_into(self, base_keys, buffer_ptrs, sizes, tp_rank=0,
                                  tp_size=1):
    """``batch_get_tensor_into`` of the shards; a list of ``None`` when not set up."""
    base_keys = list(base_keys)
    if not self._is_set_up():
        return [None] * len(base_keys)
    keys = base_keys if tp_size <= 1 else [_tp_key(k, tp_rank) for k in base_keys]
    return batch_get_tensor_into(self, keys, buffer_ptrs, sizes)


def save_tensor_to_safetensor(self, key, file_name=None):
    """Writes the tensor at ``key`` to a safetensors file (``file_name``, else ``key``)
    under the name ``key``: 0; -1100 if there is no such tensor; -600 if the save fails
    (``safetensors`` missing included)."""
    if not self._is_set_up():
        return INVALID_PARAMS
    tensor = get_tensor(self, key)
    if tensor is None:
        logger.error("Failed to fetch tensor for key: %s", key)
        return FILE_NOT_FOUND
    if file_name is not None and not isinstance(file_name, str):
        raise TypeError("file_name must be a str or None")
    try:
        from safetensors.torch import save_file

        save_file({key: tensor}, key if file_name is None else file_name)
    except Exception as e:  # noqa: BLE001 - C++ returns -600 for any Python error here
        logger.error("Failed to save tensor to safetensor file (needs safetensors: "
                     "pip install safetensors): %s", e)
        return INVALID_PARAMS
    return 0


def load_tensor_from_safetensor(self, key=None, file_name=None):
    """Stores one tensor of a safetensors file under ``key`` (``file_name`` when ``key``
    is ``None``) and returns it, or ``None``. The tensor is the one named ``key``, or the
    file's first when there is none of that name."""
    if not isinstance(file_name, str):
        raise TypeError("load_tensor_from_safetensor() needs file_name, a str")
    if key is not None and not isinstance(key, str):
        raise TypeError("key must be a str or None")
    if not self._is_set_up():
        return None
    _torch()
    try:
        from safetensors.torch import load_file

        loaded = load_file(file_name)
    except Exception as e:  # noqa: BLE001 - C++ returns None for any Python error here
        logger.error("Failed to load tensor from safetensor file (needs safetensors: "
                     "pip install safetensors): %s", e)
        return None
    if not loaded:
        logger.error("No tensors found in safetensor file: %s", file_name)
        return None
    names = list(loaded)
    name = key if key in loaded else names[0]
    if key is not None and key not in loaded:
        logger.warning("Key %s not found in safetensor file; using first entry", key)
    target = file_name if key is None else key
    tensor = loaded[name]
    rc = put_tensor(self, target, tensor)
    if rc != 0:
        logger.error("Failed to store tensor for key %s, rc=%d", target, rc)
        return None
    return tensor


# --- the module-level helpers of mooncake.store: _serialize_tensor and the rest ---
#
# C++ ``serialize_tensor_metadata`` / ``deserialize_tensor_from_bytes`` /
# ``tensor_metadata_size`` (store_py.cpp), used by the C++ wheel's Python modules to build
# and read a stored tensor object themselves. Same arguments (positional only), results,
# errors (ValueError with the C++ messages) and bytes.

_NOT_SERIALIZABLE = "unsupported tensor for Mooncake tensor serialization"
_BAD_PAYLOAD = "invalid serialized Mooncake tensor payload"


def _serialize_tensor(tensor, /):
    # C++ accepts any object whose class name contains "Tensor" (so not nn.Parameter).
    if "Tensor" not in tensor.__class__.__name__:
        logger.error("Input  is not a PyTorch tensor")
        raise ValueError(_NOT_SERIALIZABLE)
    torch = _torch()
    try:
        # As in C++: made contiguous (the tensor itself when it already is), not moved
        # to the host; the data pointer is the owner's, wherever it lives.
        owner = tensor.contiguous()
        data_ptr = int(owner.data_ptr())
        nbytes = int(owner.numel()) * int(owner.element_size())
        code = _dtype_code(torch, owner.dtype)
        shape = tuple(int(d) for d in owner.shape)
    except Exception as e:  # noqa: BLE001 - C++ logs and refuses whatever went wrong
        logger.error("Error extracting tensor info: %s", e)
        raise ValueError(_NOT_SERIALIZABLE) from None
    if code is None:
        logger.error("Unsupported tensor dtype")
        raise ValueError(_NOT_SERIALIZABLE)
    if len(shape) > MAX_DIMS:
        logger.error("Tensor has more than %d dimensions: %d", MAX_DIMS, len(shape))
        raise ValueError(_NOT_SERIALIZABLE)
    if data_ptr == 0 and nbytes != 0:
        raise ValueError(_NOT_SERIALIZABLE)
    return encode_metadata(code, shape, shape, nbytes), data_ptr, nbytes, owner


_serialize_tensor.__doc__ = """_serialize_tensor(arg0: object) -> tuple

Inspect a torch tensor as Mooncake tensor metadata, data pointer, size, and owner.

Returns ``(metadata, data_ptr, nbytes, owner)``: the 304 bytes of the tensor's
``TensorMetadata`` (full layout, ``data_bytes`` set), the address and byte size of its
data, and ``owner``, the contiguous tensor holding that data (the tensor itself when it is
contiguous, else a contiguous copy), which must outlive any use of the address.
``metadata`` followed by the ``nbytes`` bytes at ``data_ptr`` is the stored object.
Raises ValueError for a value that is not a tensor of a supported dtype and rank.
"""


def _deserialize_tensor(payload, /):
    if not isinstance(payload, bytes):
        raise TypeError(
            "_deserialize_tensor(): incompatible function arguments. The following "
            "argument types are supported:\n    1. (arg0: bytes) -> object\n\n"
            f"Invoked with: {payload!r}")
    if len(payload) < METADATA_SIZE:
        logger.error("Invalid data format: insufficient data for metadata")
        raise ValueError(_BAD_PAYLOAD)
    meta = decode_metadata(payload, len(payload))
    if meta is None:
        logger.error("Invalid tensor metadata")
        raise ValueError(_BAD_PAYLOAD)
    torch = _torch()
    try:
        tensor = _tensor_from(torch, meta, bytearray(payload))
    except Exception as e:  # noqa: BLE001 - C++ logs and refuses whatever went wrong
        logger.error("Failed to convert buffer to tensor: %s", e)
        tensor = None
    if tensor is None:
        raise ValueError(_BAD_PAYLOAD)
    return tensor


_deserialize_tensor.__doc__ = """_deserialize_tensor(arg0: bytes) -> object

Deserialize Mooncake tensor metadata plus payload bytes.

The inverse of ``_serialize_tensor``: a tensor owning a private, writable copy of the
data. ``payload`` must be exactly one stored object (metadata and data, nothing after).
As for ``get_tensor``, a 0-dimensional tensor comes back with shape ``(1,)``. Raises
ValueError for an invalid payload.
"""


def _tensor_metadata_size():
    return METADATA_SIZE


_tensor_metadata_size.__doc__ = """_tensor_metadata_size() -> int

Return the serialized Mooncake tensor metadata size.
"""
