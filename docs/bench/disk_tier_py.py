#!/usr/bin/env python3
"""The disk-tier workload from Python, for either wheel (ours or the C++ one).

A pure client (no memory of its own) puts COUNT objects of SIZE bytes into a store
service whose memory segment is much smaller (256 MB for 1 GiB in docs/disk-tier.md),
waits for the holder's disk to settle, then reads every object back: single `get`s with a
byte comparison (hit rate), `get_batch` of 32 (throughput), and single `get`s of 200 keys
twice (p50 of a disk-tier get, then of the same keys from memory when the tier promoted
them). Prints one line per phase.

    python disk_tier_py.py --master 127.0.0.1:50051 --metadata http://127.0.0.1:8080/metadata
"""

import argparse
import os
import sys
import time


def value(i, size):
    head = f"object {i:08d} ".encode()
    body = bytes((i * 7 + j) & 0xFF for j in range(4096))
    v = (head + body * (size // len(body) + 1))[:size]
    return v


def drop_cache(root):
    """Evicts the tier's files from the page cache, so reads go to the device (a tier
    with buffered I/O would otherwise be read from memory: 1 GiB fits in RAM here)."""
    if not root:
        return
    for d, _, files in os.walk(root):
        for f in files:
            try:
                fd = os.open(os.path.join(d, f), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--master", required=True)
    ap.add_argument("--metadata", required=True)
    ap.add_argument("--count", type=int, default=1024)
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait after the fill")
    ap.add_argument("--prefix", default="dt")
    ap.add_argument("--drop-cache", default="", help="the tier's directory: evict its files from the page cache before each read phase")
    ap.add_argument(
        "--retry",
        type=float,
        default=0.0,
        help="retry a failed put for up to this many seconds (a writer that waits for room)",
    )
    a = ap.parse_args()

    from mooncake.store import MooncakeDistributedStore

    s = MooncakeDistributedStore()
    rc = s.setup("127.0.0.1", a.metadata, 0, 256 << 20, "tcp", "", a.master)
    if rc != 0:
        print(f"setup failed: {rc}")
        return 1
    keys = [f"{a.prefix}-{i}" for i in range(a.count)]
    vals = {}

    t = time.perf_counter()
    failed = retries = 0
    for i, k in enumerate(keys):
        v = value(i, a.size)
        vals[k] = v
        until = time.perf_counter() + a.retry
        while s.put(k, v) != 0:
            if time.perf_counter() >= until:
                failed += 1
                break
            retries += 1
            time.sleep(0.05)
    el = time.perf_counter() - t
    mb = a.count * a.size / 1e6
    print(
        f"fill: {a.count} puts, {failed} failed, {retries} retries, {el:.2f} s, {mb / el:.0f} MB/s",
        flush=True,
    )
    time.sleep(a.settle)

    drop_cache(a.drop_cache)
    t = time.perf_counter()
    ok = bad = missing = 0
    for k in keys:
        got = s.get(k)
        if not got:
            missing += 1
        elif got == vals[k]:
            ok += 1
        else:
            bad += 1
    el = time.perf_counter() - t
    print(
        f"verify (single get): {ok}/{a.count} byte-exact, {bad} wrong, {missing} missing; "
        f"{ok * a.size / 1e6 / el:.0f} MB/s of good bytes",
        flush=True,
    )

    # Everything read once: with a promote-on-read tier, memory now holds the newest
    # 256 MB; the batch pass below reads the rest from disk again.
    for rnd in range(2):
        drop_cache(a.drop_cache)
        t = time.perf_counter()
        got_bytes = good = 0
        for c in range(0, a.count, 32):
            chunk = keys[c : c + 32]
            for k, v in zip(chunk, s.get_batch(chunk)):
                if v and len(v) == a.size:
                    good += 1
                    got_bytes += len(v)
        el = time.perf_counter() - t
        print(
            f"get_batch(32) pass {rnd + 1}: {good}/{a.count} full length, "
            f"{got_bytes / 1e6 / el:.0f} MB/s",
            flush=True,
        )

    for rnd, label in ((0, "first pass (from disk unless in memory)"), (1, "second pass")):
        if rnd == 0:
            drop_cache(a.drop_cache)
        lat = []
        for k in keys[:200]:
            t = time.perf_counter()
            v = s.get(k)
            lat.append((time.perf_counter() - t) * 1e6)
            if len(v) != a.size:
                lat[-1] = float("nan")
        good = [x for x in lat if x == x]
        good.sort()
        if good:
            p = lambda q: good[min(len(good) - 1, int(q * len(good)))]
            print(
                f"latency {label}: {len(good)}/200 ok, p50 {p(0.5):.0f} us, "
                f"p90 {p(0.9):.0f} us, p99 {p(0.99):.0f} us",
                flush=True,
            )
        else:
            print(f"latency {label}: 0/200 ok")
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
