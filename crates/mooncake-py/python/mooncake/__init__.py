"""Mooncake in Rust: a drop-in for the C++ wheel's ``mooncake`` package.

``mooncake.store.MooncakeDistributedStore`` and ``mooncake.engine.TransferEngine`` keep the
C++ wheel's names, arguments and return conventions; the work is done by the native
module ``mooncake._mooncake``, built from ``crates/mooncake-py``. As in the C++ wheel,
``import mooncake`` loads the store module at once, for ``mooncake.BufferPool``.
"""

import pkgutil

__path__ = pkgutil.extend_path(__path__, __name__)

from mooncake._mooncake import __version__  # noqa: E402
from mooncake.buffer_pool import BufferPool, RegisteredBufferPool  # noqa: E402

__all__ = ["BufferPool", "RegisteredBufferPool"]
