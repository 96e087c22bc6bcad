"""``mooncake.store``: the distributed KV-cache store client.

The same surface as the C++ wheel's ``mooncake.store`` (see ``python-api.md``): integer
Mooncake codes instead of exceptions, ``b''`` for a failed ``get``, per-key lists.
"""

import ctypes
import enum

from mooncake._mooncake import MooncakeDistributedStore as _NativeStore
from mooncake._mooncake import ReplicateConfig

__all__ = [
    "MooncakeDistributedStore",
    "ReplicateConfig",
    "BufferHandle",
    "SoftPinAction",
    "ReplicaStatus",
    "ObjectDataType",
    "TaskType",
    "TaskStatus",
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


class TaskType(enum.IntEnum):
    REPLICA_COPY = 0
    REPLICA_MOVE = 1


class TaskStatus(enum.IntEnum):
    PENDING = 0
    PROCESSING = 1
    FAILED = 2
    SUCCESS = 3


# The C++ module exports the enums' members at module level too (mooncake.store.COMPLETE).
for _enum in (SoftPinAction, ReplicaStatus, ObjectDataType, TaskType):
    for _member in _enum:
        globals().setdefault(_member.name, _member)
# TaskStatus.FAILED would shadow ReplicaStatus.FAILED; the C++ module keeps the replica one.
for _member in TaskStatus:
    globals().setdefault(_member.name, _member)
del _enum, _member


class BufferHandle(bytearray):
    """A value copied out of the store: bytes-like (buffer protocol, ``len()``), with the
    C++ wheel's ``ptr()`` and ``size()``."""

    def ptr(self) -> int:
        if not self:
            return 0
        return ctypes.addressof(ctypes.c_char.from_buffer(self))

    def size(self) -> int:
        return len(self)


class MooncakeDistributedStore(_NativeStore):
    """A Mooncake store client: ``setup(...)``, then put and get by key."""

    def get_buffer(self, key):
        """The value in a :class:`BufferHandle`, or ``None`` on any failure."""
        value = self.get_or_none(key)
        return None if value is None else BufferHandle(value)

    def batch_get_buffer(self, keys):
        """A :class:`BufferHandle` (or ``None``) per key."""
        return [self.get_buffer(k) for k in keys]
