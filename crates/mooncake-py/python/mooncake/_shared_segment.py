"""``mooncake.engine.SharedSegment``: one span of host memory shared by a group of ranks.

The C++ wheel's class (``mooncake-transfer-engine/src/shared_segment/`` and
``mooncake-integration/transfer_engine/shared_segment_py.cpp``), here in Python over
``ctypes`` with its POSIX-shm ("mmap") backend, the only one a non-CUDA, non-Ascend build
has. The pages exist once, in ``owner_rank``'s process; every other rank maps them at a
rank-local address. Creation is two-phase, the caller exchanging the blobs:

1. ``SharedSegment.create(name, size, world_size, rank_id, ...)`` returns
   ``(segment, blob)``. The owner creates a ``/dev/shm`` object ``/mcss_<pid>_<random>``
   of ``size`` rounded up to the page size (the huge page size when shmem THP is on) and
   maps it; any other rank reserves an address window of that size.
2. ``segment.complete(blobs)``, ``blobs`` the all-gathered blobs indexed by rank, checks
   that every rank declared the same segment and maps the owner's pages into the window.

The blob is the C++ one byte for byte (160 bytes: a 32-byte header, then the owner's shm
name), so a group may mix both wheels. Errors are :class:`RuntimeError` with the C++
``Status`` text (``"InvalidArgument: ..."``); arguments are checked like pybind11's
(:class:`TypeError`). The owner unlinks its shm object, and every rank unmaps its window,
when its segment is garbage collected; the owner must outlive the others.
"""

import ctypes
import ctypes.util
import logging
import operator
import os
import random
import struct
import threading

logger = logging.getLogger("mooncake.engine")

__all__ = ["SharedSegment"]

_BLOB_MAGIC = 0x4D435353  # "MCSS"
_BLOB_VERSION = 1
_MMAP_BACKEND_ID = 3
_MAX_HANDLE_BYTES = 128
_HEADER = struct.Struct("<IHHIIQQ")  # magic, version, backend_id, rank_id, handle_bytes,
#                                       fingerprint, alloc_size
_BLOB_BYTES = _HEADER.size + _MAX_HANDLE_BYTES
_MAX_SEGMENT_BYTES = 1 << 46
_FNV_OFFSET_BASIS = 1469598103934665603
_FNV_PRIME = 1099511628211
_U64 = (1 << 64) - 1
_FALLBACK_HUGE_PAGE = 2 << 20
_THP_PMD_SIZE = "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"
_SHMEM_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"

_PROT_NONE, _PROT_READ, _PROT_WRITE = 0, 1, 2
_MAP_SHARED, _MAP_PRIVATE, _MAP_FIXED, _MAP_ANONYMOUS = 0x01, 0x02, 0x10, 0x20
_MADV_HUGEPAGE = 14
_MAP_FAILED = ctypes.c_void_p(-1).value


def _load_libc():
    libc = ctypes.CDLL(None, use_errno=True)
    rt = libc
    if not hasattr(libc, "shm_open"):  # glibc < 2.34 keeps it in librt
        rt = ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.restype = ctypes.c_int
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    rt.shm_open.restype = ctypes.c_int
    rt.shm_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint]
    rt.shm_unlink.restype = ctypes.c_int
    rt.shm_unlink.argtypes = [ctypes.c_char_p]
    return libc, rt


_libc, _rt = _load_libc()


def _strerror():
    return os.strerror(ctypes.get_errno())


# --- the C++ helpers (shared_segment.cpp, mmap_shared_segment.cpp) ---

def _hash_bytes(seed, data):
    h = seed
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h


def _fingerprint(name, size, world_size, owner_rank, mmap, host_register):
    """``ComputeSegmentFingerprint``: FNV-1a over the name, then over each value as a
    little-endian u64. ``rank_id`` and ``device_id`` are not part of it."""
    h = _hash_bytes(_FNV_OFFSET_BASIS, name)
    for value in (size, world_size, owner_rank, int(mmap), int(host_register)):
        h = _hash_bytes(h, value.to_bytes(8, "little"))
    return h


def _first_line(path):
    try:
        with open(path) as f:
            return f.readline()
    except OSError:
        return None


def _shmem_thp_enabled():
    line = _first_line(_SHMEM_THP_ENABLED)
    if not line or "[" not in line:
        return False
    mode = line.split("[", 1)[1]
    if "]" not in mode or mode.startswith("]"):
        return False
    return mode.split("]", 1)[0] not in ("never", "deny")


def _huge_page_size():
    line = _first_line(_THP_PMD_SIZE)
    try:
        value = int(line.split()[0]) if line else 0
    except ValueError:
        value = 0
    return value if value > 0 and value & (value - 1) == 0 else _FALLBACK_HUGE_PAGE


def _granularity():
    if _shmem_thp_enabled():
        return _huge_page_size()
    try:
        page = os.sysconf("SC_PAGESIZE")
    except (ValueError, OSError):
        page = 0
    return page if page > 0 else 4096


_rng = random.SystemRandom()


def _make_shm_name():
    return f"/mcss_{os.getpid()}_{_rng.getrandbits(64):016x}"


class _Error(Exception):
    """A failed C++ ``Status``; raised to Python as ``RuntimeError(str)``."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")


def _invalid(message):
    return _Error("InvalidArgument", message)


# --- pybind11-style argument conversion ---

def _signature_error(fn, signature, args):
    shown = ", ".join(repr(a) for a in args)
    return TypeError(f"{fn}(): incompatible function arguments. The following argument "
                     f"types are supported:\n    1. {signature}\n\nInvoked with: {shown}")


class _Mismatch(Exception):
    pass


def _int(value, lo, hi):
    if isinstance(value, float):
        raise _Mismatch
    try:
        v = operator.index(value)
    except TypeError:
        try:  # pybind11 converts any other number with __int__ (not float)
            v = int(value) if hasattr(value, "__int__") and not isinstance(value, str) \
                else None
        except (TypeError, ValueError):
            v = None
        if v is None:
            raise _Mismatch from None
    if not lo <= v <= hi:
        raise _Mismatch
    return v


def _bool(value):
    """pybind11's ``bool`` caster: ``None`` is false; else any value whose type has
    ``__bool__`` (``int``, ``float``, numpy scalars, ...), not ``str`` or containers."""
    if value is True or value is False:
        return value
    if value is None:
        return False
    if hasattr(type(value), "__bool__"):
        try:
            return bool(value)
        except Exception:  # noqa: BLE001 - a failed conversion is a mismatch
            pass
    raise _Mismatch


def _string(value):
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Mismatch from None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise _Mismatch


_CREATE_SIGNATURE = (
    "(name: str, size: int, world_size: int, rank_id: int, owner_rank: int = 0, "
    "device_id: int = 0, mmap: bool = True, host_register: bool = False) -> "
    "tuple[mooncake.engine.SharedSegment, bytes]")
_SUPPORTED_SIGNATURE = "(mmap: bool = True, host_register: bool = False) -> bool"
_COMPLETE_SIGNATURE = "(self: mooncake.engine.SharedSegment, blobs: list[str]) -> None"


class SharedSegment:
    __slots__ = ("_name", "_size", "_world_size", "_rank_id", "_owner_rank", "_device_id",
                 "_mmap", "_host_register", "_fingerprint", "_alloc_size", "_base_addr",
                 "_ready", "_addr", "_mapped_size", "_shm_name", "_unlink", "_lock",
                 "__weakref__")

    def __init__(self, *args, **kwargs):
        raise TypeError("mooncake.engine.SharedSegment: No constructor defined!")

    def __reduce_ex__(self, protocol):
        raise TypeError("cannot pickle 'mooncake.engine.SharedSegment' object")

    # --- phase one ---

    @staticmethod
    def create(name, size, world_size, rank_id, owner_rank=0, device_id=0, mmap=True,
               host_register=False):
        args = (name, size, world_size, rank_id, owner_rank, device_id, mmap, host_register)
        try:
            name_b = _string(name)
            size = _int(size, 0, _U64)
            world_size = _int(world_size, 0, 0xFFFFFFFF)
            rank_id = _int(rank_id, 0, 0xFFFFFFFF)
            owner_rank = _int(owner_rank, 0, 0xFFFFFFFF)
            device_id = _int(device_id, -(1 << 31), (1 << 31) - 1)
            mmap = _bool(mmap)
            host_register = _bool(host_register)
        except _Mismatch:
            raise _signature_error("create", _CREATE_SIGNATURE, args) from None
        try:
            return SharedSegment._create(name_b, size, world_size, rank_id, owner_rank,
                                         device_id, mmap, host_register)
        except _Error as e:
            raise RuntimeError(str(e)) from None

    @staticmethod
    def _create(name, size, world_size, rank_id, owner_rank, device_id, mmap,
                host_register):
        if world_size == 0:
            raise _invalid("Shared segment world_size must not be zero")
        if rank_id >= world_size or owner_rank >= world_size:
            raise _invalid("Shared segment rank_id and owner_rank must be below world_size")
        if host_register and not mmap:
            raise _invalid("Shared segment host_register requires mmap=true")
        if size == 0 or size > _MAX_SEGMENT_BYTES:
            raise _invalid(f"Shared segment size must be in (0, {_MAX_SEGMENT_BYTES}]")
        if not mmap:
            raise _Error("NotImplemented", "This build has no VMM backend for shared segments")

        seg = object.__new__(SharedSegment)
        seg._name, seg._size, seg._world_size = name, size, world_size
        seg._rank_id, seg._owner_rank, seg._device_id = rank_id, owner_rank, device_id
        seg._mmap, seg._host_register = mmap, host_register
        seg._fingerprint = _fingerprint(name, size, world_size, owner_rank, mmap,
                                        host_register)
        granularity = _granularity()
        seg._alloc_size = (size + granularity - 1) // granularity * granularity
        seg._base_addr, seg._ready = 0, False
        seg._addr, seg._mapped_size, seg._shm_name, seg._unlink = None, 0, None, False
        seg._lock = threading.Lock()

        handle = b""
        try:
            if rank_id == owner_rank:
                handle = seg._create_owner()
            else:
                seg._reserve_local()
        except _Error:
            seg._release()
            raise
        blob = _HEADER.pack(_BLOB_MAGIC, _BLOB_VERSION, _MMAP_BACKEND_ID, rank_id,
                            len(handle), seg._fingerprint, seg._alloc_size)
        blob += handle.ljust(_MAX_HANDLE_BYTES, b"\0")
        # Python may fold a layout tag after '|'; log the bare name only.
        bare = name.split(b"|", 1)[0].decode("utf-8", "replace")
        logger.info("Shared segment %s create: rank %d of %d, base 0x%x, %d bytes", bare,
                    rank_id, world_size, seg._base_addr, seg._alloc_size)
        return seg, blob

    def _map_shared(self, shm_name, create, hint):
        flags = (os.O_CREAT | os.O_EXCL | os.O_RDWR) if create else os.O_RDWR
        fd = _rt.shm_open(shm_name, flags, 0o600)
        if fd < 0:
            raise _Error("Memory", "shm_open failed: " + _strerror())
        try:
            if create:
                try:
                    os.ftruncate(fd, self._alloc_size)
                except OSError as e:
                    _rt.shm_unlink(shm_name)
                    raise _Error("Memory", "ftruncate failed: " + os.strerror(e.errno)) \
                        from None
            map_flags = _MAP_SHARED | (_MAP_FIXED if hint else 0)
            mapped = _libc.mmap(hint, self._alloc_size, _PROT_READ | _PROT_WRITE,
                                map_flags, fd, 0)
            map_error = _strerror()
        finally:
            os.close(fd)
        if mapped is None or mapped == _MAP_FAILED:
            if create:
                _rt.shm_unlink(shm_name)
            raise _Error("Memory", "mmap failed: " + map_error)
        if _shmem_thp_enabled():  # a hint only; failure does not abort the segment
            _libc.madvise(mapped, self._alloc_size, _MADV_HUGEPAGE)
        return mapped

    def _register_mapped(self):
        if self._host_register:  # aclrtHostRegister: Ascend builds only
            raise _Error("NotImplemented", "Shared segment mmap needs Ascend for HostRegister")

    def _create_owner(self):
        shm_name = _make_shm_name().encode()
        self._addr = self._map_shared(shm_name, True, None)
        self._mapped_size, self._shm_name, self._unlink = self._alloc_size, shm_name, True
        self._register_mapped()
        self._base_addr = self._addr
        return shm_name

    def _reserve_local(self):
        reserved = _libc.mmap(None, self._alloc_size, _PROT_NONE,
                              _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
        if reserved is None or reserved == _MAP_FAILED:
            raise _Error("Memory", "mmap reserve failed: " + _strerror())
        self._addr, self._mapped_size = reserved, self._alloc_size
        self._base_addr = reserved

    # --- phase two ---

    def complete(self, blobs):
        if not isinstance(self, SharedSegment):
            raise _signature_error("complete", _COMPLETE_SIGNATURE, (self, blobs))
        try:
            # pybind11's list caster: any sequence but a str, bytes or mapping.
            if isinstance(blobs, (str, bytes, bytearray, dict)) \
                    or not hasattr(blobs, "__len__") or not hasattr(blobs, "__getitem__"):
                raise _Mismatch
            blobs = [_string(b) for b in blobs]
        except _Mismatch:
            raise _signature_error("complete", _COMPLETE_SIGNATURE, (self, blobs)) from None
        with self._lock:
            try:
                self._complete(blobs)
            except _Error as e:
                raise RuntimeError(str(e)) from None

    def _complete(self, blobs):
        if self._ready:
            raise _invalid("SharedSegment::Complete has already been called")
        if len(blobs) != self._world_size:
            raise _invalid(f"Shared segment expects one blob per rank, got {len(blobs)}")
        owner_handle = b""
        for rank, blob in enumerate(blobs):
            handle = self._check_peer_blob(rank, blob)
            if rank == self._owner_rank:
                owner_handle = handle
        if not owner_handle:
            raise _invalid("Shared segment owner rank did not export a handle")
        if self._rank_id != self._owner_rank:
            self._import_and_map(owner_handle)
        self._ready = True

    def _check_peer_blob(self, rank, blob):
        if len(blob) != _BLOB_BYTES:
            raise _invalid("Shared segment blob has an unexpected length")
        (magic, version, backend_id, rank_id, handle_bytes, fingerprint,
         alloc_size) = _HEADER.unpack_from(blob)
        if magic != _BLOB_MAGIC:
            raise _invalid("Shared segment blob magic mismatch")
        if version != _BLOB_VERSION:
            raise _invalid("Shared segment blob version mismatch, peers run different builds")
        if handle_bytes > _MAX_HANDLE_BYTES:
            raise _invalid("Shared segment blob declares an oversized handle")
        if rank_id != rank:
            raise _invalid(f"Shared segment blob of rank {rank} carries a different rank id")
        if backend_id != _MMAP_BACKEND_ID:
            raise _invalid(f"Shared segment backend of rank {rank} differs")
        if fingerprint != self._fingerprint:
            raise _invalid(f"Shared segment declaration of rank {rank} differs from the "
                           "local one")
        if alloc_size != self._alloc_size:
            raise _invalid(f"Shared segment allocation size of rank {rank} differs from the "
                           "local one")
        return blob[_HEADER.size:_HEADER.size + handle_bytes]

    def _import_and_map(self, handle):
        if not self._addr or not self._mapped_size:
            raise _invalid("Shared segment import needs a reserved address window")
        if not handle or len(handle) > _MAX_HANDLE_BYTES:
            raise _invalid("Shared segment owner handle has an unexpected length")
        if handle[:1] != b"/":
            raise _invalid("Shared segment owner handle is not a POSIX shm name")
        # shm_open takes a C string: a name with a NUL in it ends there, as in C++.
        self._addr = self._map_shared(handle.split(b"\0", 1)[0], False, self._addr)
        self._shm_name = handle
        self._register_mapped()

    # --- accessors ---

    def ready(self):
        return self._ready

    def base_addr(self):
        return self._base_addr

    def device_addr(self):
        return 0  # no HostRegister in this build: base_addr() is what a device would use

    def size(self):
        return self._size

    @staticmethod
    def supported(mmap=True, host_register=False):
        try:
            mmap, host_register = _bool(mmap), _bool(host_register)
        except _Mismatch:
            raise _signature_error("supported", _SUPPORTED_SIGNATURE,
                                   (mmap, host_register)) from None
        # POSIX shm without HostRegister is all this build has.
        return mmap and not host_register

    # --- teardown ---

    def _release(self):
        addr, self._addr = self._addr, None
        if addr:
            _libc.munmap(addr, self._mapped_size)
        if self._unlink and self._shm_name:
            _rt.shm_unlink(self._shm_name)
            self._unlink = False
        self._shm_name, self._mapped_size = None, 0

    def __del__(self):
        try:
            if getattr(self, "_lock", None) is not None:
                self._release()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


SharedSegment.__module__ = "mooncake.engine"
SharedSegment.create.__doc__ = (
    f"create{_CREATE_SIGNATURE}\n\nPhase one; returns (segment, blob).\n")
SharedSegment.supported.__doc__ = (
    f"supported{_SUPPORTED_SIGNATURE}\n\nWhether this build can share memory across "
    "processes.\n")
SharedSegment.complete.__doc__ = (
    f"complete{_COMPLETE_SIGNATURE}\n\nPhase two; blobs are indexed by rank.\n")
SharedSegment.ready.__doc__ = "ready(self: mooncake.engine.SharedSegment) -> bool\n"
SharedSegment.base_addr.__doc__ = "base_addr(self: mooncake.engine.SharedSegment) -> int\n"
SharedSegment.device_addr.__doc__ = (
    "device_addr(self: mooncake.engine.SharedSegment) -> int\n")
SharedSegment.size.__doc__ = "size(self: mooncake.engine.SharedSegment) -> int\n"
