"""``BufferPool``: leases of registered host memory for zero-copy ``put_from``/``get_into``.

The C++ wheel implements this natively (``mooncake.store.BufferPool``, alias
``RegisteredBufferPool``). Here it is Python on top of the store's public calls, with the
same constructor, checks, blocking rules and ``RuntimeError`` messages:

- Each lease is its own anonymous private ``mmap`` (page-aligned, its length rounded up to
  a page), registered with ``store.register_buffer(ptr, size)``; ``release()`` calls
  ``store.unregister_buffer(ptr)`` and unmaps it. The C++ pool first carves leases out of
  the store's local buffer; that allocator is not reachable from Python, so every lease
  takes the C++ pool's other ("overflow") path. Capacity and the local-buffer requirement
  are computed as in C++, from ``_local_buffer_size()`` of the store's client.
- The store is anything with ``_get_pyclient_capsule()`` returning a capsule named
  ``mooncake.PyClient.shared_ptr`` whose pointer is the client store object
  (``mooncake.store.MooncakeDistributedStore`` makes one from ``id(self)``). The pool
  holds the store and the client, as the C++ pool holds the store and a shared pointer
  to its client.
- ``lease.buffer`` returns a new ``memoryview`` (format ``'B'``, 1-D, writable) whose
  exporter is a :class:`BufferLeaseView`. A Python class cannot implement the buffer
  protocol before 3.12, so ``BufferLeaseView`` is a ctypes array of ``c_ubyte`` laid over
  the lease's memory (``from_address``), one subclass per length. The memoryview, and
  every slice of it, keeps its view object alive; a ``weakref.finalize`` on the view
  counts it down when it goes, which is when the last memoryview on it is released. While
  any such view lives, ``release()`` refuses; the finalizer holds the lease, so the
  memory stays mapped until then.
"""

import ctypes
import functools
import logging
import mmap
import operator
import threading
import time
import weakref

__all__ = ["BufferPool", "BufferLease", "BufferLeaseView"]

logger = logging.getLogger("mooncake.buffer_pool")

CAPSULE_NAME = b"mooncake.PyClient.shared_ptr"

# The classes are exported, and named in reprs and errors, as the C++ wheel's are.
_PUBLIC_MODULE = "mooncake.store"

_NOT_INITIALIZED = "MooncakeDistributedStore is not initialized"
_NOT_A_STORE = ("BufferPool store parameter must be a PyClient or store wrapper that "
                "implements _get_pyclient_capsule()")

_capsule_is_valid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))


def _client_of(store):
    """The store object a ``mooncake.PyClient.shared_ptr`` capsule of ``store`` points to."""
    if store is None:
        raise RuntimeError(_NOT_INITIALIZED)
    method = getattr(store, "_get_pyclient_capsule", None)
    if method is None:
        raise RuntimeError(_NOT_A_STORE)
    capsule = method()
    if capsule is None:
        raise RuntimeError(_NOT_INITIALIZED)
    if type(capsule).__name__ != "PyCapsule":
        raise RuntimeError("store wrapper returned a non-capsule PyClient handle")
    if not _capsule_is_valid(capsule, CAPSULE_NAME):
        raise RuntimeError("store wrapper returned an unexpected PyClient capsule type")
    # The capsule was just made by a live store and holds that store's address; reading
    # it back gives a new strong reference.
    return ctypes.cast(_capsule_pointer(capsule, CAPSULE_NAME), ctypes.py_object).value


def _size_t(name, value):
    """``value`` as a non-negative int, refusing what a C ``size_t`` parameter refuses."""
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}") from None
    if number < 0:
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    return number


class _Region:
    """One lease's memory: an anonymous private mapping of at least ``size`` bytes."""

    __slots__ = ("ptr", "size", "_map")

    def __init__(self, size):
        length = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self._map = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE,
                              prot=mmap.PROT_READ | mmap.PROT_WRITE)
        anchor = ctypes.c_char.from_buffer(self._map)
        self.ptr = ctypes.addressof(anchor)
        del anchor  # drops the export, so that free() can unmap
        self.size = size

    def free(self):
        self._map.close()


class BufferPool:
    """Leases of registered memory, bounded in bytes and (optionally) in count.

    ``max_bytes=0`` allows twice the store's local buffer, any other value at least the
    local buffer. ``acquire`` blocks (by default) until enough leases are released.
    ``min_size_class``, ``max_size_class`` and ``alignment`` are validated only (the C++
    pool has no size classes on this path either); prewarming does nothing.
    """

    __module__ = _PUBLIC_MODULE

    def __init__(self, store, max_bytes: int = 0, min_size_class: int = 65536,
                 max_size_class=None, alignment: int = 8388608,
                 block_on_exhaustion: bool = True, default_timeout=None, max_regions=None,
                 prewarm_size=None, prewarm_count: int = 0):
        client = _client_of(store)
        max_bytes = _size_t("max_bytes", max_bytes)
        min_size_class = _size_t("min_size_class", min_size_class)
        alignment = _size_t("alignment", alignment)
        if max_size_class is not None:
            _size_t("max_size_class", max_size_class)
        if max_regions is not None:
            max_regions = _size_t("max_regions", max_regions)
        if default_timeout is not None:
            default_timeout = float(default_timeout)
        if prewarm_size is not None:
            prewarm_size = _size_t("prewarm_size", prewarm_size)
        prewarm_count = _size_t("prewarm_count", prewarm_count)
        if min_size_class == 0 or alignment == 0:
            raise RuntimeError("min_size_class and alignment must be positive")
        if alignment < ctypes.sizeof(ctypes.c_void_p) or alignment & (alignment - 1):
            raise RuntimeError("alignment must be a power of two and at least sizeof(void*)")
        local = int(client._local_buffer_size())
        if local <= 0:
            raise RuntimeError("BufferPool requires a store configured with a local buffer")

        self._store = store
        self._client = client  # kept alive with the pool, as the C++ pool's shared pointer
        self._capacity = 2 * local if max_bytes == 0 else max(max_bytes, local)
        self._block_on_exhaustion = bool(block_on_exhaustion)
        self._default_timeout = default_timeout
        self._max_regions = max_regions
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._closing = False
        self._used_bytes = 0  # bytes of live leases
        self._leases = 0  # live leases
        self._reserved_bytes = 0  # bytes of acquires between the check and registration
        self._reserved = 0
        if prewarm_size is not None and prewarm_count > 0:
            self.prewarm(prewarm_size, prewarm_count)

    def acquire(self, size: int, block=None, timeout=None) -> "BufferLease":
        """A lease of ``size`` bytes (at least one is allocated).

        ``block=None`` uses ``block_on_exhaustion``; ``timeout=None`` uses
        ``default_timeout``, where ``None`` waits for ever."""
        size = _size_t("size", size)
        should_block = self._block_on_exhaustion if block is None else bool(block)
        timeout = self._default_timeout if timeout is None else float(timeout)
        if timeout is not None and timeout < 0:
            raise RuntimeError("timeout must be non-negative")
        deadline = None if timeout is None else time.monotonic() + timeout
        allocation = max(size, 1)
        if allocation > self._capacity:
            raise RuntimeError("requested buffer size exceeds pool capacity")
        with self._cond:
            while True:
                self._raise_unless_open()
                if self._has_room(allocation):
                    break
                if not should_block:
                    raise RuntimeError("buffer pool is exhausted")
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError("timed out waiting for buffer")
                self._cond.wait(remaining)
            self._reserved_bytes += allocation
            self._reserved += 1
        # Mapping and registering happen outside the lock: registration may wait on the
        # transfer engine, and releases must go on meanwhile.
        try:
            region = self._register(allocation)
        except BaseException:
            with self._cond:
                self._unreserve(allocation)
            raise
        with self._cond:
            # One step from reservation to lease, so that no other acquire sees the
            # bytes as free in between.
            self._unreserve(allocation)
            state = self._closed_state()
            if state is None:
                self._used_bytes += allocation
                self._leases += 1
                return BufferLease._make(self, region, size)
        self._unregister(region)
        raise RuntimeError(state)

    def buffer(self, size: int, block=None, timeout=None) -> "BufferLease":
        """The same as :meth:`acquire`."""
        return self.acquire(size, block, timeout)

    def prewarm(self, size: int, count: int) -> None:
        """Does nothing, as in the C++ pool when leases come from the local buffer."""
        _size_t("size", size)
        _size_t("count", count)

    def close(self) -> None:
        """Closes the pool once no lease is alive; idempotent. With live leases it raises
        and the pool stays usable."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            while self._reserved:
                self._cond.wait()
            if self._leases:
                self._closing = False
                self._cond.notify_all()
                raise RuntimeError("cannot close buffer pool with active leases")
            self._closed = True
            self._closing = False
            self._cond.notify_all()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _raise_unless_open(self):
        state = self._closed_state()
        if state is not None:
            raise RuntimeError(state)

    def _closed_state(self):
        if self._closed:
            return "buffer pool is closed"
        if self._closing:
            return "buffer pool is closing"
        return None

    def _unreserve(self, allocation):
        self._reserved_bytes -= allocation
        self._reserved -= 1
        self._cond.notify_all()  # close() waits for reservations to end

    def _has_room(self, allocation):
        if self._used_bytes + self._reserved_bytes + allocation > self._capacity:
            return False
        return self._max_regions is None or self._leases + self._reserved < self._max_regions

    def _register(self, allocation):
        region = _Region(allocation)
        try:
            rc = self._store.register_buffer(region.ptr, allocation)
        except BaseException:
            region.free()
            raise
        if rc != 0:
            region.free()
            raise RuntimeError("overflow buffer registration failed")
        return region

    def _unregister(self, region):
        try:
            rc = self._store.unregister_buffer(region.ptr)
        except Exception as e:
            logger.warning("unregister_buffer(%#x) raised %r", region.ptr, e)
        else:
            if rc != 0:
                # The store is closed (its engine has gone) or no longer knows the range;
                # either way nothing can reach the memory any more.
                logger.debug("unregister_buffer(%#x) returned %s", region.ptr, rc)
        region.free()

    def _give_back(self, region):
        """Takes back a released lease's memory."""
        self._unregister(region)
        with self._cond:
            self._used_bytes -= region.size
            self._leases -= 1
            self._cond.notify_all()


class BufferLease:
    """``size`` bytes of registered memory at ``ptr``, until ``release()`` (or until the
    lease is dropped). Made by :meth:`BufferPool.acquire` only."""

    __module__ = _PUBLIC_MODULE

    __slots__ = ("_pool", "_region", "_size", "_exports", "_lock", "__weakref__")

    def __init__(self, *args, **kwargs):
        raise TypeError("mooncake.store.BufferLease: No constructor defined!")

    @classmethod
    def _make(cls, pool, region, size):
        lease = object.__new__(cls)
        lease._pool = pool
        lease._region = region
        lease._size = size
        lease._exports = 0
        lease._lock = threading.Lock()
        return lease

    @property
    def ptr(self) -> int:
        """The address of the memory."""
        region = self._region
        if region is None:
            raise RuntimeError("buffer lease is closed")
        return region.ptr

    @property
    def size(self) -> int:
        """The size asked for (readable after release too)."""
        return self._size

    @property
    def buffer(self) -> memoryview:
        """A new writable ``memoryview`` of the lease; it blocks ``release()`` while alive."""
        with self._lock:
            region = self._region
            if region is None:
                raise RuntimeError("buffer lease is closed")
            view = _view_class(self._size).from_address(region.ptr)
            self._exports += 1
        finalizer = weakref.finalize(view, self._drop_export)
        finalizer.atexit = False
        return memoryview(view).cast("B")

    def release(self) -> None:
        """Returns the memory to the pool; idempotent. It raises while a memoryview from
        ``buffer`` is alive."""
        self._release(check_views=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.release()

    def __del__(self):
        # Views hold the lease, so none is left by now.
        try:
            self._release(check_views=False)
        except Exception:
            pass

    def __repr__(self):
        if self._region is None:
            return f"<BufferLease size={self._size} released>"
        return f"<BufferLease ptr={self._region.ptr:#x} size={self._size}>"

    def _drop_export(self):
        with self._lock:
            self._exports -= 1

    def _release(self, check_views):
        with self._lock:
            region, pool = self._region, self._pool
            if region is None:
                return
            if check_views and self._exports:
                raise RuntimeError("cannot release buffer while exported views exist")
            self._region = None
            self._pool = None
        pool._give_back(region)


class BufferLeaseView(ctypes.Array):
    """The exporter behind ``BufferLease.buffer``: the lease's bytes as a ctypes array of
    ``c_ubyte`` (each length is a subclass). Its ``buffer`` is a ``'B'`` memoryview of it."""

    __module__ = _PUBLIC_MODULE

    _type_ = ctypes.c_ubyte
    _length_ = 0

    @property
    def buffer(self) -> memoryview:
        return memoryview(self).cast("B")


@functools.lru_cache(maxsize=256)
def _view_class(length):
    """The ``BufferLeaseView`` subclass of ``length`` bytes (ctypes fixes a length per
    class); recent lengths are cached."""
    if length == 0:
        return BufferLeaseView
    return type("BufferLeaseView", (BufferLeaseView,), {
        "_length_": length,
        "__module__": _PUBLIC_MODULE,
        "__qualname__": "BufferLeaseView",
    })
