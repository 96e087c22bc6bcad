"""The store workload plan of observed-behaviour.md, at the Python level.

It uses only the API the C++ wheel and ours share, so the same script measures either:
whichever ``mooncake`` package the interpreter imports. A pure client
(``global_segment_size=0``) against a separate store service; prints one JSON object.

    python store_bench.py --master 127.0.0.1:50051 --metadata http://127.0.0.1:8080/metadata

With ``--redis host:port`` it runs the same plan against a Redis server with redis-py
instead (``SET``/``GET`` for the single rows, ``MSET``/``MGET`` of 32 keys for the batch
rows; Redis has no zero-copy calls), the yardstick of observed-behaviour.md section 5.
"""

import argparse
import json
import mmap
import os
import sys
import time


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
    ap.add_argument("--master")
    ap.add_argument("--metadata")
    ap.add_argument("--redis", help="host:port of a Redis server to measure instead")
    ap.add_argument("--local-hostname", default="127.0.0.1",
                    help="this client's address (another host's, between namespaces)")
    ap.add_argument("--sizes", default="4096,65536,1048576,16777216")
    ap.add_argument("--local-buffer", type=int, default=1 << 30)
    ap.add_argument("--warmup-bytes", type=int, default=512 * MIB)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply call counts")
    ap.add_argument("--procs", type=int, default=0,
                    help="also run the concurrency plan with this many client processes")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.redis and not (args.master and args.metadata):
        ap.error("--master and --metadata are required (or --redis)")
    if args.worker:
        return worker(args)
    if args.redis:
        rows = redis_rows(args)
    else:
        rows = mooncake_rows(args)
    if args.procs > 0:
        rows += concurrency(args)
    json.dump({"rows": rows}, sys.stdout)
    print()


def connect(args, local_buffer):
    """A Redis client or a pure Mooncake client, as the arguments say."""
    if args.redis:
        import redis

        host, port = args.redis.rsplit(":", 1)
        return redis.Redis(host=host, port=int(port))
    from mooncake.store import MooncakeDistributedStore

    s = MooncakeDistributedStore()
    rc = s.setup(args.local_hostname, args.metadata, 0, local_buffer, "tcp", "", args.master)
    check(rc == 0, f"setup ({rc})")
    return s


def worker(args):
    """One process of the concurrency plan: waits for "put" on stdin, writes its keys,
    reports start and end times, then the same for "get"."""
    index, size, count = (int(x) for x in args.worker.split(":"))
    c = connect(args, 64 * MIB)
    value = os.urandom(size)
    keys = [f"p{index}-{size}-{i}" for i in range(count)]
    put = (lambda k: c.set(k, value)) if args.redis else (lambda k: c.put(k, value) == 0)
    get = c.get
    print("ready", flush=True)
    for phase, call, ok in (("put", put, lambda r: r), ("get", get, lambda r: len(r) == size)):
        check(sys.stdin.readline().strip() == phase, f"worker phase {phase}")
        t0 = time.time()
        for k in keys:
            check(ok(call(k)), phase)
        print(f"{t0} {time.time()}", flush=True)
    if not args.redis:
        c.close()


def concurrency(args):
    """observed-behaviour.md section 4.3: N processes, 64 KiB x 600 and 1 MiB x 150 ops
    each, puts then gets; aggregate MB/s from the first start to the last end."""
    import subprocess

    rows = []
    for size, count in ((64 * KIB, 600), (1 * MIB, 150)):
        count = max(1, int(count * args.scale))
        base = [sys.executable, __file__, "--local-hostname", args.local_hostname]
        if args.redis:
            base += ["--redis", args.redis]
        else:
            base += ["--master", args.master, "--metadata", args.metadata]
        procs = [subprocess.Popen(base + ["--worker", f"{i}:{size}:{count}"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for i in range(args.procs)]
        for p in procs:
            check(p.stdout.readline().strip() == "ready", "worker start")
        for phase in ("put", "get"):
            for p in procs:
                p.stdin.write(phase + "\n")
                p.stdin.flush()
            spans = [tuple(float(x) for x in p.stdout.readline().split()) for p in procs]
            check(all(len(sp) == 2 for sp in spans), f"worker {phase}")
            wall = max(e for _, e in spans) - min(b for b, _ in spans)
            items = count * args.procs
            rows.append({"size": size, "op": f"{args.procs} procs {phase}", "items": items,
                         "mb_s": items * size / wall / 1e6, "ops_s": items / wall,
                         "p50_us": 0.0, "p99_us": 0.0})
        for p in procs:
            p.stdin.close()
            check(p.wait() == 0, "worker exit")
    return rows


def mooncake_rows(args):
    s = connect(args, args.local_buffer)
    sizes = [int(x) for x in args.sizes.split(",")]
    region = max(size * BATCH for size in sizes)
    buf = mmap.mmap(-1, 2 * region)
    buf.write(os.urandom(region))
    import ctypes
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    check(s.register_buffer(base, 2 * region) == 0, "register_buffer")

    # Warm-up (untimed, observed-behaviour.md section 2): pre-fault the contributor's
    # segment, our local buffer and the memory the calls read into, so no row pays the
    # first touch of fresh pages: the half of `buf` the zero-copy reads fill (written
    # nowhere else; a batch read of 32 x 16 MiB would otherwise fault in 131,072 pages),
    # and, through `get_batch` calls as large as the plan's, the heap new `bytes` come from.
    zero = bytes(16 * MIB)
    for off in range(region, 2 * region, len(zero)):
        n = min(len(zero), 2 * region - off)
        buf[off:off + n] = zero[:n]
    n = max(1, args.warmup_bytes // (16 * MIB))
    keys = [f"warm-{i}" for i in range(n)]
    vals = [bytes(buf[:16 * MIB])] * n
    for i in range(0, n, BATCH):
        s.put_batch(keys[i:i + BATCH], vals[i:i + BATCH])
        s.get_batch(keys[i:i + BATCH])
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
    return rows


def redis_rows(args):
    r = connect(args, 0)
    r.flushall()
    rows = []
    for size in [int(x) for x in args.sizes.split(",")]:
        singles, batches = PLAN.get(size, (64, 4))
        singles = max(1, int(singles * args.scale))
        batches = max(1, int(batches * args.scale))
        value = os.urandom(size)
        keys = [f"k{size}-{i}" for i in range(singles)]
        t, lat = timed(lambda k=k: check(r.set(k, value), "SET") for k in keys)
        rows.append(row(size, "put", singles, t, lat))
        t, lat = timed(lambda k=k: check(len(r.get(k)) == size, "GET") for k in keys)
        rows.append(row(size, "get", singles, t, lat))
        r.delete(*keys)
        groups = [[f"b{size}-{b}-{i}" for i in range(BATCH)] for b in range(batches)]
        t, lat = timed(lambda g=g: check(r.mset({k: value for k in g}), "MSET") for g in groups)
        rows.append(row(size, f"put_batch[{BATCH}]", batches * BATCH, t, lat))
        t, lat = timed(lambda g=g: check(all(len(v) == size for v in r.mget(g)), "MGET")
                       for g in groups)
        rows.append(row(size, f"get_batch[{BATCH}]", batches * BATCH, t, lat))
        r.flushall()
        print(f"store_bench (redis): {size} bytes done", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
