"""Mooncake in Rust: a drop-in for the C++ wheel's ``mooncake`` package.

``mooncake.store.MooncakeDistributedStore`` and ``mooncake.engine.TransferEngine`` keep the
C++ wheel's names, arguments and return conventions; the work is done by the native
module ``mooncake._mooncake``, built from ``crates/mooncake-py``.
"""

from mooncake._mooncake import __version__

__all__ = ["__version__"]
