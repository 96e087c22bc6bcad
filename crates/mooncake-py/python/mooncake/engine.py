"""``mooncake.engine``: the transfer engine (TCP), as in the C++ wheel."""

import enum

from mooncake._mooncake import TransferEngine as _NativeEngine

__all__ = ["TransferEngine", "TransferOpcode", "TransferNotify", "Read", "Write"]

SUPPORT_CUDA = False
SUPPORT_RDMA = False


class TransferOpcode(enum.IntEnum):
    Read = 0
    Write = 1


Read = TransferOpcode.Read
Write = TransferOpcode.Write


class TransferNotify:
    """A notification received on the engine's RPC port."""

    def __init__(self, name: str, msg: str):
        self.name = name
        self.msg = msg

    def __repr__(self):
        return f"TransferNotify(name={self.name!r}, msg={self.msg!r})"


class TransferEngine(_NativeEngine):
    """Registers local memory and moves bytes to and from peer segments."""

    def get_notifies(self):
        """Drains the notifications received so far."""
        return [TransferNotify(n, m) for n, m in self.get_notifies_raw()]

    def get_engine(self):
        return self
