"""Memory freed by the values of one call is kept for the next (`MC_MALLOC_RETAIN`): a
repeated `get_batch` of large values does not fault its memory in again, and `0` (or
glibc's own variables) leaves the allocator alone. Page faults are counted (getrusage),
not timed."""

import os
import subprocess
import sys

import pytest

PROGRAM = r"""
import resource, sys
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
assert s.setup("127.0.0.1", sys.argv[2], 0, 64 << 20, "tcp", "", sys.argv[1]) == 0
keys = [f"retain-{i}" for i in range(32)]
assert s.put_batch(keys, [bytes([i]) * (1 << 20) for i in range(32)]) == 0
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    values = s.get_batch(keys)
    assert [v[:1] for v in values] == [bytes([i]) for i in range(32)]
    del values
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
s.batch_remove(keys, True)
s.close()
print(min(faults[1:]))
"""


def faults_per_batch(cluster, **env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("MC_MALLOC_RETAIN", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PROGRAM, cluster.master_addr, cluster.metadata],
                         env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_repeated_large_get_batch_reuses_the_memory_it_freed(cluster):
    # 32 MiB of new bytes per call: 8,192 pages if every call faults them in again.
    kept = faults_per_batch(cluster)
    assert kept < 1000, f"{kept} page faults per get_batch with freed memory kept"
    handed_back = faults_per_batch(cluster, MC_MALLOC_RETAIN="0")
    assert handed_back > 4000, f"{handed_back} page faults per get_batch with MC_MALLOC_RETAIN=0"
    assert faults_per_batch(cluster, MALLOC_TRIM_THRESHOLD_="131072") > 4000
    # A value that is no size is reported and changes nothing.
    assert faults_per_batch(cluster, MC_MALLOC_RETAIN="lots") > 4000
