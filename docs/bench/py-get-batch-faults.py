"""Page faults and time per get_batch of 32 values, the same keys again and again: python py-get-batch-faults.py MASTER METADATA [SIZE] [LABEL] (a pure client; docs/bench/tcp.md section 11)."""
import sys, time, resource, os
from mooncake.store import MooncakeDistributedStore
master, meta = sys.argv[1], sys.argv[2]
size=int(sys.argv[3]) if len(sys.argv)>3 else 1<<20
s = MooncakeDistributedStore()
assert s.setup("127.0.0.1", meta, 0, 1<<30, "tcp", "", master) == 0
keys=[f"gb-{size}-{i}" for i in range(32)]
v=os.urandom(size)
assert s.put_batch(keys,[v]*32)==0
for rep in range(3):
    f0=resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t=time.perf_counter(); n=10
    for _ in range(n):
        r=s.get_batch(keys); assert len(r[0])==size
        del r
    dt=(time.perf_counter()-t)/n
    f1=resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(f"{sys.argv[4] if len(sys.argv)>4 else ''} get_batch 32x{size>>10}KiB {dt*1e3:.2f} ms {32*size/dt/1e6:.0f} MB/s faults/call {(f1-f0)/n:.0f}")
s.close()
