"""``mooncake.engine``: the transfer engine (TCP), as in the C++ wheel (``python-api-2.md`` §9).

Not provided: the RPC interface (``RpcInterface``, ``CoroRPCInterface``, ``ReceivedData``,
``ReceivedTensor``, ``create_rpc_client``, ``create_rpc_server``) and ``SharedSegment``.
"""

import enum

from mooncake._mooncake import InnerTransferEngine, TransferNotify
from mooncake._mooncake import TransferEngine as _NativeEngine

__all__ = [
    "InnerTransferEngine", "Read", "TransferEngine", "TransferNotify", "TransferOpcode",
    "Write",
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
