"""``mooncake.store``: the distributed KV-cache store client.

The same surface as the C++ wheel's ``mooncake.store`` (see ``python-api.md``): integer
Mooncake codes instead of exceptions, ``b''`` for a failed ``get``, per-key lists.
"""

import atexit
import ctypes
import enum
import weakref

from mooncake._mooncake import MooncakeDistributedStore as _NativeStore
from mooncake._mooncake import ReplicateConfig
from mooncake import _mooncake as _native

__all__ = [
    "MooncakeDistributedStore",
    "ReplicateConfig",
    "BufferHandle",
    "SoftPinAction",
    "ReplicaStatus",
    "ObjectDataType",
    "TaskType",
    "TaskStatus",
    "QueryTaskResponse",
    "ReplicaDescriptor",
]


class SoftPinAction(enum.IntEnum):
    PRESERVE = 0
    ENABLE = 1
    DISABLE = 2


class ReplicaStatus(enum.IntEnum):
    UNDEFINED = 0
    INITIALIZED = 1
    PROCESSING = 2
    COMPLETE = 3
    REMOVED = 4
    FAILED = 5


class ObjectDataType(enum.IntEnum):
    UNKNOWN = 0
    KVCACHE = 1
    TENSOR = 2
    WEIGHT = 3
    SAMPLE = 4
    ACTIVATION = 5
    GRADIENT = 6
    OPTIMIZER_STATE = 7
    METADATA = 8
    GENERAL = 9


class _NativeEnum(enum.Enum):
    """A pybind11-style enum: ``int()`` and hashing work, but a member never equals a
    plain int (``TaskStatus.SUCCESS == 3`` is ``False``), as in the C++ wheel."""

    def __int__(self):
        return self.value

    def __index__(self):
        return self.value


class TaskType(_NativeEnum):
    REPLICA_COPY = 0
    REPLICA_MOVE = 1


class TaskStatus(_NativeEnum):
    # The C++ wheel lists its members in this order.
    PENDING = 0
    PROCESSING = 1
    SUCCESS = 3
    FAILED = 2


# The C++ module exports the enums' members at module level too (mooncake.store.COMPLETE).
# TaskStatus is exported after ReplicaStatus, so PROCESSING and FAILED are TaskStatus's.
for _enum in (ObjectDataType, ReplicaStatus, TaskType, TaskStatus):
    for _member in _enum:
        globals()[_member.name] = _member
del _enum, _member

QueryTaskResponse = _native.QueryTaskResponse


class BufferDescriptor:
    """Where a memory replica's bytes are: ``buffer_address``, ``size`` and
    ``transport_endpoint`` (the owner's segment name)."""

    def __init__(self, buffer_address, size, transport_endpoint):
        self.buffer_address = buffer_address
        self.size = size
        self.transport_endpoint = transport_endpoint

    def __repr__(self):
        return (f"BufferDescriptor(buffer_address={self.buffer_address}, size={self.size}, "
                f"transport_endpoint={self.transport_endpoint!r})")


class MemoryDescriptor:
    """A memory replica's location (``buffer_descriptor``)."""

    def __init__(self, buffer_descriptor):
        self.buffer_descriptor = buffer_descriptor


class LocalDiskDescriptor:
    """A copy on a holder's disk tier (``get_local_disk_descriptor``)."""

    def __init__(self, segment_name, size):
        self.segment_name = segment_name
        self.object_size = size

    def __repr__(self):
        return f"LocalDiskDescriptor(segment_name={self.segment_name!r}, size={self.object_size})"


class ReplicaDescriptor:
    """One complete replica of an object (``get_replica_desc``): in memory, or on a
    holder's disk tier (``replica_type`` 2, Mooncake's ``LOCAL_DISK``)."""

    def __init__(self, buffer_address, size, transport_endpoint, segment_name, replica_type=0):
        self._memory = MemoryDescriptor(
            BufferDescriptor(buffer_address, size, transport_endpoint))
        self.segment_name = segment_name
        self.replica_type = replica_type
        self.status = ReplicaStatus.COMPLETE

    def is_memory_replica(self):
        return self.replica_type == 0

    def is_disk_replica(self):
        return False

    def is_local_disk_replica(self):
        return self.replica_type == 2

    def get_memory_descriptor(self):
        if not self.is_memory_replica():
            raise RuntimeError("not a memory replica")
        return self._memory

    def get_local_disk_descriptor(self):
        if not self.is_local_disk_replica():
            raise RuntimeError("not a local disk replica")
        return LocalDiskDescriptor(self.segment_name, self._memory.buffer_descriptor.size)

    def __repr__(self):
        if self.is_local_disk_replica():
            return f"ReplicaDescriptor(local_disk, segment_name={self.segment_name!r})"
        return f"ReplicaDescriptor(memory, {self._memory.buffer_descriptor!r})"


class BufferHandle(bytearray):
    """A value copied out of the store: bytes-like (buffer protocol, ``len()``), with the
    C++ wheel's ``ptr()`` and ``size()``."""

    def ptr(self) -> int:
        if not self:
            return 0
        return ctypes.addressof(ctypes.c_char.from_buffer(self))

    def size(self) -> int:
        return len(self)


# Every store object alive in this process: at interpreter exit each one still set up is
# closed (its segment unmounted), as the C++ wheel's atexit handler does.
_LIVE = weakref.WeakSet()


@atexit.register
def _close_live_stores():
    for store in list(_LIVE):
        try:
            store.close()
        except Exception:  # noqa: BLE001 - exit must go on whatever one store does
            pass


class MooncakeDistributedStore(_NativeStore):
    """A Mooncake store client: ``setup(...)``, then put and get by key.

    Dropping the last reference tears the client down as ``close()`` does: its segment
    is unmounted at once (after its objects are drained to other segments)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        _LIVE.add(self)

    def get_buffer(self, key):
        """The value in a :class:`BufferHandle`, or ``None`` on any failure."""
        value = self.get_or_none(key)
        return None if value is None else BufferHandle(value)

    def batch_get_buffer(self, keys):
        """A :class:`BufferHandle` (or ``None``) per key."""
        return [self.get_buffer(k) for k in keys]

    def get_replica_desc(self, key):
        """The key's readable replicas (grants a read lease); ``[]`` when missing."""
        found = self._replicas([key])[0]
        return [ReplicaDescriptor(*r) for r in found or ()]

    def batch_get_replica_desc(self, keys):
        """``{key: [ReplicaDescriptor, ...]}``; missing keys are left out."""
        keys = list(keys)
        return {k: [ReplicaDescriptor(*r) for r in found]
                for k, found in zip(keys, self._replicas(keys)) if found is not None}

    def _get_pyclient_capsule(self):
        """A capsule named ``mooncake.PyClient.shared_ptr`` that ``BufferPool`` accepts as
        this store's client (it holds ``id(self)``), or ``None`` before ``setup`` and
        after ``close``."""
        if not self._is_set_up():
            return None
        return _capsule_new(id(self), _CAPSULE_NAME, None)

    # The tensor helpers: Python functions of mooncake._tensor, bound here as methods.
    # torch (and safetensors) are imported on the first call that needs them.
    from mooncake._tensor import (  # noqa: E402
        put_tensor, pub_tensor, upsert_tensor, upsert_pub_tensor, batch_put_tensor,
        batch_pub_tensor, batch_upsert_tensor, batch_upsert_pub_tensor, put_tensor_from,
        upsert_tensor_from, batch_put_tensor_from, batch_upsert_tensor_from, get_tensor,
        batch_get_tensor, get_tensor_into, batch_get_tensor_into, get_tensor_into_cuda,
        batch_get_tensor_into_cuda, put_tensor_with_tp, pub_tensor_with_tp,
        put_tensor_with_tp_from, batch_put_tensor_with_tp, batch_pub_tensor_with_tp,
        batch_put_tensor_with_tp_from, get_tensor_with_tp, get_tensor_with_tp_into,
        batch_get_tensor_with_tp, batch_get_tensor_with_tp_into, save_tensor_to_safetensor,
        load_tensor_from_safetensor,
    )

    # The *_with_parallelism* tensor calls (mooncake._tensor_parallel).
    from mooncake._tensor_parallel import (  # noqa: E402
        put_tensor_with_parallelism, put_tensor_with_parallelism_from,
        upsert_tensor_with_parallelism, upsert_tensor_with_parallelism_from,
        batch_put_tensor_with_parallelism, batch_put_tensor_with_parallelism_from,
        batch_upsert_tensor_with_parallelism, batch_upsert_tensor_with_parallelism_from,
        get_tensor_with_parallelism, get_tensor_with_parallelism_into,
        batch_get_tensor_with_parallelism, batch_get_tensor_with_parallelism_into,
    )


from mooncake._tensor_parallel import ParallelAxis, ReadTarget, TensorParallelism  # noqa: E402

__all__ += ["ParallelAxis", "TensorParallelism", "ReadTarget"]


# The capsule keeps a pointer to its name, so the name lives as long as the module.
_CAPSULE_NAME = b"mooncake.PyClient.shared_ptr"
_capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                                 ctypes.c_void_p)(("PyCapsule_New", ctypes.pythonapi))

from mooncake._buffer_pool import BufferLease, BufferLeaseView, BufferPool  # noqa: E402

RegisteredBufferPool = BufferPool
RegisteredBufferLease = BufferLease
RegisteredBufferLeaseView = BufferLeaseView

__all__ += [
    "BufferPool",
    "BufferLease",
    "BufferLeaseView",
    "RegisteredBufferPool",
    "RegisteredBufferLease",
    "RegisteredBufferLeaseView",
]

# The module-level tensor object helpers of the C++ wheel (python-api-2.md: store_py.cpp
# _serialize_tensor / _deserialize_tensor / _tensor_metadata_size).
from mooncake._tensor import (  # noqa: E402
    _deserialize_tensor, _serialize_tensor, _tensor_metadata_size,
)
