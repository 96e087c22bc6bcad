"""The store workload plan of observed-behaviour.md, at the Python level.

It uses only the API the C++ wheel and ours share, so the same script measures either:
whichever ``mooncake`` package the interpreter imports. A pure client
(``global_segment_size=0``) against a separate store service; prints one JSON object.

    python store_bench.py --master 127.0.0.1:50051 --metadata http://127.0.0.1:8080/metadata
"""

import argparse
import json
import mmap
import os
import sys
import time

from mooncake.store import MooncakeDistributedStore

KIB, MIB = 1 << 10, 1 << 20
# value size -> (single calls, batch calls of 32)
PLAN = {4 * KIB: (2000, 60), 64 * KIB: (1000, 30), 1 * MIB: (256, 12), 16 * MIB: (48, 3)}
BATCH = 32


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p / 100))] * 1e6


def row(size, op, items, total_s, lat):
    return {
        "size": size, "op": op, "items": items,
        "mb_s": items * size / total_s / 1e6, "ops_s": items / total_s,
        "p50_us": pct(lat, 50), "p99_us": pct(lat, 99),
    }


def timed(calls):
    lat = []
    start = time.perf_counter()
    for call in calls:
        t = time.perf_counter()
        call()
        lat.append(time.perf_counter() - t)
    return time.perf_counter() - start, lat


def check(ok, what):
    if not ok:
        raise SystemExit(f"store_bench: {what} failed")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--metadata", required=True)
    ap.add_argument("--sizes", default="4096,65536,1048576,16777216")
    ap.add_argument("--local-buffer", type=int, default=1 << 30)
    ap.add_argument("--warmup-bytes", type=int, default=512 * MIB)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply call counts")
    args = ap.parse_args()

    s = MooncakeDistributedStore()
    rc = s.setup("127.0.0.1", args.metadata, 0, args.local_buffer, "tcp", "", args.master)
    check(rc == 0, f"setup ({rc})")
    sizes = [int(x) for x in args.sizes.split(",")]
    region = max(size * BATCH for size in sizes)
    buf = mmap.mmap(-1, 2 * region)
    buf.write(os.urandom(region))
    import ctypes
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    check(s.register_buffer(base, 2 * region) == 0, "register_buffer")

    # Warm-up: pre-fault the contributor's segment and our local buffer.
    n = max(1, args.warmup_bytes // (16 * MIB))
    keys = [f"warm-{i}" for i in range(n)]
    vals = [bytes(buf[:16 * MIB])] * n
    for i in range(0, n, 8):
        s.put_batch(keys[i:i + 8], vals[i:i + 8])
        s.get_batch(keys[i:i + 8])
    s.batch_remove(keys, True)

    rows = []
    for size in sizes:
        singles, batches = PLAN.get(size, (64, 4))
        singles = max(1, int(singles * args.scale))
        batches = max(1, int(batches * args.scale))
        value = bytes(buf[:size])
        keys = [f"k{size}-{i}" for i in range(singles)]

        t, lat = timed(lambda k=k: check(s.put(k, value) == 0, "put") for k in keys)
        rows.append(row(size, "put", singles, t, lat))
        t, lat = timed(lambda k=k: check(len(s.get(k)) == size, "get") for k in keys)
        rows.append(row(size, "get", singles, t, lat))
        s.batch_remove(keys, True)

        t, lat = timed(lambda k=k: check(s.put_from(k, base, size) == 0, "put_from") for k in keys)
        rows.append(row(size, "put_from", singles, t, lat))
        t, lat = timed(lambda k=k: check(s.get_into(k, base + region, size) == size, "get_into")
                       for k in keys)
        rows.append(row(size, "get_into", singles, t, lat))
        s.batch_remove(keys, True)

        groups = [[f"b{size}-{b}-{i}" for i in range(BATCH)] for b in range(batches)]
        values = [value] * BATCH
        t, lat = timed(lambda g=g: check(s.put_batch(g, values) == 0, "put_batch") for g in groups)
        rows.append(row(size, f"put_batch[{BATCH}]", batches * BATCH, t, lat))
        t, lat = timed(lambda g=g: check(all(len(v) == size for v in s.get_batch(g)), "get_batch")
                       for g in groups)
        rows.append(row(size, f"get_batch[{BATCH}]", batches * BATCH, t, lat))
        for g in groups:
            s.batch_remove(g, True)

        ptrs = [base + i * size for i in range(BATCH)]
        outs = [base + region + i * size for i in range(BATCH)]
        sz = [size] * BATCH
        t, lat = timed(lambda g=g: check(s.batch_put_from(g, ptrs, sz) == [0] * BATCH,
                                         "batch_put_from") for g in groups)
        rows.append(row(size, f"batch_put_from[{BATCH}]", batches * BATCH, t, lat))
        t, lat = timed(lambda g=g: check(s.batch_get_into(g, outs, sz) == sz, "batch_get_into")
                       for g in groups)
        rows.append(row(size, f"batch_get_into[{BATCH}]", batches * BATCH, t, lat))
        for g in groups:
            s.batch_remove(g, True)
        print(f"store_bench: {size} bytes done", file=sys.stderr)

    s.unregister_buffer(base)
    s.close()
    json.dump({"rows": rows}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
