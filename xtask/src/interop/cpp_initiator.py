"""C++ Mooncake engine as initiator against a Rust target (run by `cargo xtask interop`).

argv: metadata_url target_name region_a region_b sizes(comma) seed_a seed_b
Reads every size from region A and checks it, writes every size to region B (at a running
offset), then probes an out-of-range read, which must fail without breaking later reads.
"""
import ctypes
import sys

from mooncake.engine import TransferEngine


def pattern(off, n, seed):
    block = bytes(((j % 251) * 7 + seed) % 256 for j in range(251))
    start = off % 251
    return (block[start:] + block * (n // 251 + 2))[:n]


def main():
    meta, target, a, b, sizes, seed_a, seed_b = sys.argv[1:8]
    a, b, seed_a, seed_b = int(a), int(b), int(seed_a), int(seed_b)
    sizes = [int(s) for s in sizes.split(",")]
    te = TransferEngine()
    assert te.initialize("127.0.0.1:17391", meta, "tcp", "") == 0, "initialize failed"
    cap = max(sizes)
    buf = ctypes.create_string_buffer(cap)
    addr = ctypes.addressof(buf)
    assert te.register_memory(addr, cap) == 0, "register_memory failed"
    off = 0
    for n in sizes:
        rc = te.transfer_sync_read(target, addr, a + off, n)
        assert rc == 0, f"read of {n} bytes returned {rc}"
        got = ctypes.string_at(addr, n)
        assert got == pattern(off, n, seed_a), f"read of {n} bytes at +{off}: content differs"
        ctypes.memmove(addr, pattern(off, n, seed_b), n)
        rc = te.transfer_sync_write(target, addr, b + off, n)
        assert rc == 0, f"write of {n} bytes returned {rc}"
        print(f"cpp->rust ok {n} bytes", flush=True)
        off += n
    rc = te.transfer_sync_read(target, addr, b + (1 << 40), 4096)
    assert rc != 0, "an out-of-range read succeeded"
    rc = te.transfer_sync_read(target, addr, a, 4096)
    assert rc == 0, f"read after a rejected request returned {rc}"
    print("cpp->rust out-of-range read refused; server still serving", flush=True)
    te.unregister_memory(addr)
    print("DONE", flush=True)


main()
