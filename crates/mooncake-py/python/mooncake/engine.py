"""``mooncake.engine``: the transfer engine (TCP), as in the C++ wheel (``python-api-2.md`` §9).

The RPC interface (``RpcInterface``, alias ``CoroRPCInterface``, ``ReceivedData``,
``ReceivedTensor``, ``create_rpc_client``, ``create_rpc_server``) is ``mooncake._rpc``, wire
compatible with the C++ wheel's. ``SharedSegment`` (host memory shared by a group of ranks,
POSIX-shm backend) is ``mooncake._shared_segment``, its blobs byte-compatible with the C++
wheel's.
"""

import enum

from mooncake._mooncake import InnerTransferEngine, TransferNotify
from mooncake._mooncake import TransferEngine as _NativeEngine
from mooncake._rpc import (
    CoroRPCInterface, ReceivedData, ReceivedTensor, RpcInterface, create_rpc_client,
    create_rpc_server,
)
from mooncake._shared_segment import SharedSegment

__all__ = [
    "CoroRPCInterface", "InnerTransferEngine", "Read", "ReceivedData", "ReceivedTensor",
    "RpcInterface", "SharedSegment", "TransferEngine", "TransferNotify", "TransferOpcode",
    "Write", "create_rpc_client", "create_rpc_server",
]

# Transports compiled into this build: TCP only, like the wheel's non-CUDA build.
SUPPORT_CUDA = False
SUPPORT_EFA = False
SUPPORT_HIP = False
SUPPORT_INTRA_NVLINK = False
SUPPORT_MNNVL = False
SUPPORT_MUSA = False


class TransferOpcode(enum.Enum):
    """The direction of a transfer. Like the wheel's pybind enum, a member converts to an
    int (``int()``, ``operator.index``) but does not compare equal to one:
    ``TransferOpcode.Read == 0`` is ``False``."""

    Read = 0
    Write = 1

    def __int__(self):
        return self.value

    def __index__(self):
        return self.value


Read = TransferOpcode.Read
Write = TransferOpcode.Write


class TransferEngine(_NativeEngine):
    """Registers local memory and moves bytes to and from peer segments."""

    TransferOpcode = TransferOpcode
