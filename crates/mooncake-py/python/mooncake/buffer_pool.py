"""``mooncake.buffer_pool``: ``BufferPool`` (leases of registered memory for zero-copy
calls) under the name the C++ wheel gives it here, and its older name
``RegisteredBufferPool``. Both are ``mooncake.store.BufferPool``, or ``None`` when the
store module cannot be loaded."""

try:
    import mooncake.store as _store

    BufferPool = _store.BufferPool
except (ImportError, AttributeError):
    BufferPool = None

RegisteredBufferPool = BufferPool

__all__ = ["BufferPool", "RegisteredBufferPool"]
