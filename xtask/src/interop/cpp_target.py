"""C++ Mooncake engine as target for a Rust initiator (run by `cargo xtask interop`).

argv: metadata_url name region_size seed_a
Registers two regions A and B of region_size bytes, fills A with the pattern, prints
`READY <addr>`, then waits for `VERIFY <seed_b> <total>` on stdin and checks region B.
"""
import ctypes
import sys

from mooncake.engine import TransferEngine


def pattern(off, n, seed):
    block = bytes(((j % 251) * 7 + seed) % 256 for j in range(251))
    start = off % 251
    return (block[start:] + block * (n // 251 + 2))[:n]


def main():
    meta, name, region, seed_a = sys.argv[1:5]
    region, seed_a = int(region), int(seed_a)
    te = TransferEngine()
    assert te.initialize(name, meta, "tcp", "") == 0, "initialize failed"
    buf = ctypes.create_string_buffer(2 * region)
    addr = ctypes.addressof(buf)
    ctypes.memmove(addr, pattern(0, region, seed_a), region)
    assert te.register_memory(addr, 2 * region) == 0, "register_memory failed"
    print(f"READY {addr}", flush=True)
    line = sys.stdin.readline().split()
    assert line and line[0] == "VERIFY", f"unexpected command {line}"
    seed_b, total = int(line[1]), int(line[2])
    got = ctypes.string_at(addr + region, total)
    want = pattern(0, total, seed_b)
    if got != want:
        first = next(i for i in range(total) if got[i] != want[i])
        print(f"MISMATCH at byte {first}", flush=True)
        sys.exit(1)
    print(f"VERIFIED {total} bytes", flush=True)
    te.unregister_memory(addr)


main()
