"""A program written against the C++ wheel's store API (python-api.md), unchanged.

Run it with either wheel installed:
    python compat_program.py <master host:port> <metadata url>
It prints one JSON list of (call, result) pairs. `compat_expected.json` holds what the C++
wheel 0.3.13.post1 printed on this machine; `test_compat.py` checks ours prints the same.
`record_compat.sh` re-records it (C++ master and store service on free ports).

The first part (up to "close twice") covers python-api.md; the second part, on a new store,
the secondary surface of python-api-2.md (§1 batch_replica_clear, §2 ranged reads and writes,
§3 tasks and their enums, §4 sessions, §5 ReplicateConfig, §11 other methods, §12 calls on a
closed or never set-up store) and the python-api.md calls the first part does not make.
"""

import ctypes
import json
import sys

from mooncake.store import MooncakeDistributedStore, ReplicateConfig

master, metadata = sys.argv[1], sys.argv[2]
out = []


def plain(result):
    if isinstance(result, bytes):
        return {"bytes": len(result), "head": result[:8].hex()}
    if isinstance(result, (list, tuple)):
        return [plain(r) for r in result]
    if isinstance(result, dict):
        return {str(k): plain(result[k]) for k in sorted(result)}
    if hasattr(type(result), "__members__") and hasattr(result, "name"):
        return f"{type(result).__name__}.{result.name}"  # an enum member
    if result is None or isinstance(result, (bool, int, float, str)):
        return result
    return type(result).__name__  # e.g. ReplicaDescriptor: never its addresses


def log(call, result):
    out.append([call, plain(result)])


s = MooncakeDistributedStore()
log("setup", s.setup("127.0.0.1", metadata, 0, 16 * 1024 * 1024, "tcp", "", master))
log("put", s.put("compat-a", b"hello world"))
log("put duplicate", s.put("compat-a", b"other"))
log("get", s.get("compat-a"))
log("upsert", s.upsert("compat-a", b"replaced"))
log("get after upsert", s.get("compat-a"))
log("get missing", s.get("compat-missing"))
log("put empty value", s.put("compat-empty", b""))
log("is_exist", s.is_exist("compat-a"))
log("is_exist missing", s.is_exist("compat-missing"))
log("get_size", s.get_size("compat-a"))
log("get_size missing", s.get_size("compat-missing"))
log("remove leased", s.remove("compat-a"))
log("remove forced", s.remove("compat-a", True))
log("remove missing", s.remove("compat-missing"))
log("put_batch", s.put_batch(["compat-b1", "compat-b2"], [b"one", b"two"]))
log("put_batch length mismatch", s.put_batch(["compat-b3"], [b"x", b"y"]))
log("get_batch", s.get_batch(["compat-b1", "compat-missing", "compat-b2"]))
log("batch_is_exist", s.batch_is_exist(["compat-b1", "compat-missing"]))
log("batch_is_exist empty", s.batch_is_exist([]))

size = 1 << 20
buf = ctypes.create_string_buffer(size)
base = ctypes.addressof(buf)
log("register_buffer", s.register_buffer(base, size))
ctypes.memmove(base, b"zero-copy-bytes!" * 256, 4096)
log("put_from", s.put_from("compat-z", base, 4096))
log("put_from size 0", s.put_from("compat-z0", base, 0))
log("get_into", s.get_into("compat-z", base + 8192, 8192))
log("get_into bytes equal", buf.raw[8192:8192 + 4096] == buf.raw[:4096])
log("get_into too small", s.get_into("compat-z", base + 65536, 100))
log("get_into missing", s.get_into("compat-missing", base + 65536, 100))
keys = ["compat-bz1", "compat-bz2"]
log("batch_put_from", s.batch_put_from(keys, [base, base + 100], [100, 200]))
log("batch_put_from mismatch", s.batch_put_from(keys, [base], [100, 200]))
log("batch_get_into", s.batch_get_into(keys + ["compat-missing"],
                                       [base + 16384, base + 20480, base + 24576],
                                       [4096, 4096, 4096]))
log("batch_get_into too small", s.batch_get_into(keys, [base + 16384, base + 20480], [50, 4096]))
log("multi put", s.batch_put_from_multi_buffers(
    ["compat-m"], [[base, base + 1000]], [[10, 20]]))
log("multi get exact", s.batch_get_into_multi_buffers(
    ["compat-m"], [[base + 30000, base + 31000]], [[15, 15]]))
log("multi get short", s.batch_get_into_multi_buffers(
    ["compat-m"], [[base + 30000]], [[29]]))
log("multi get long", s.batch_get_into_multi_buffers(
    ["compat-m"], [[base + 30000]], [[31]]))
log("multi get missing", s.batch_get_into_multi_buffers(
    ["compat-missing"], [[base + 30000]], [[31]]))
cfg = ReplicateConfig()
cfg.soft_pin_ttl_ms = 1000
log("soft pin ttl without enable", s.put("compat-pin", b"x", cfg))
same = ReplicateConfig()
same.prefer_alloc_in_same_node = True
log("prefer_alloc_in_same_node put", s.put("compat-same", b"x", same))
log("replicas best effort", s.put("compat-r", b"x", ReplicateConfig()))
log("unregister_buffer", s.unregister_buffer(base))
log("unregister_buffer unknown", s.unregister_buffer(base))
log("batch_remove", s.batch_remove(["compat-b1", "compat-missing"], True))
log("remove_all", s.remove_all(True) >= 0)
log("close", s.close())
log("close twice", s.close())

# ---------------------------------------------------------------------------------------
# Part 2: the secondary surface of python-api-2.md, on a new store set up the same way.
# Every call goes through attempt(): an exception is logged as {"raises": <type name>}.
# Nothing host-dependent is logged (segment names, addresses, ids, times): only derived facts.
# The master's lease TTL is 500 ms: a call that needs an expired lease sleeps 0.7 s first.
# ---------------------------------------------------------------------------------------
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import mooncake.store as ms  # noqa: E402

LEASE_GONE = 0.7
MIB = 1 << 20


def attempt(call, fn):
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - the exception's type is the observation
        result = {"raises": type(e).__name__}
    log(call, result)
    return result


def quiet(fn, default=None):
    """A set-up step whose result is not logged (or logged through a derived fact)."""
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default


def task(r):
    """A (task_id, code) result without the id itself."""
    return {"code": r[1], "zero_id": tuple(r[0]) == (0, 0),
            "id_ints": [type(x).__name__ for x in r[0]]}


def config(**attrs):
    c = ReplicateConfig()
    for k, v in attrs.items():
        setattr(c, k, v)
    return c


def pin_config(action, ttl):
    c = ReplicateConfig()
    c.soft_pin_action = getattr(ms.SoftPinAction, action)
    c.soft_pin_ttl_ms = ttl
    return c


s2 = MooncakeDistributedStore()
attempt("p2 setup", lambda: s2.setup("127.0.0.1", metadata, 0, 16 * MIB, "tcp", "", master))
attempt("p2 health_check", lambda: s2.health_check())

bsize = 4 * MIB
b2 = ctypes.create_string_buffer(bsize)
b2base = ctypes.addressof(b2)
attempt("p2 register_buffer", lambda: s2.register_buffer(b2base, bsize))
pattern = bytes(range(256)) * 16  # 4096 bytes
ctypes.memmove(b2base, pattern, len(pattern))
SRC = b2base  # [0, 4096) holds `pattern`; destinations start at 64 KiB


def region(off, n):
    return b2.raw[off:off + n]


def clear_dst(off=65536, n=65536):
    ctypes.memset(b2base + off, 0, n)


# The store service's segment name (never logged): the endpoint of a replica.
attempt("p2 put seg probe", lambda: s2.put("compat2-seg", b"segment probe"))
seg = quiet(lambda: s2.get_replica_desc("compat2-seg")[0]
            .get_memory_descriptor().buffer_descriptor.transport_endpoint, "")
log("p2 segment name found", isinstance(seg, str) and seg.count(":") == 1)

# --- §1 batch_replica_clear ------------------------------------------------------------
attempt("brc empty", lambda: s2.batch_replica_clear([]))
attempt("brc put c1", lambda: s2.put("compat2-c1", b"c1"))
attempt("brc right after put", lambda: s2.batch_replica_clear(["compat2-c1"]))
attempt("brc cleared is_exist", lambda: s2.is_exist("compat2-c1"))
attempt("brc cleared get_size", lambda: s2.get_size("compat2-c1"))
attempt("brc put c2", lambda: s2.put("compat2-c2", b"c2"))
attempt("brc lease is_exist", lambda: s2.is_exist("compat2-c2"))
attempt("brc leased", lambda: s2.batch_replica_clear(["compat2-c2"]))
attempt("brc unknown key", lambda: s2.batch_replica_clear(["compat2-unknown"]))
attempt("brc put c3", lambda: s2.put("compat2-c3", b"c3"))
attempt("brc put c4", lambda: s2.put("compat2-c4", b"c4"))
attempt("brc duplicates", lambda: s2.batch_replica_clear(
    ["compat2-c3", "compat2-c3", "", "compat2-c4"]))
attempt("brc put c5", lambda: s2.put("compat2-c5", b"c5"))
attempt("brc tuple", lambda: s2.batch_replica_clear(("compat2-c5",)))
attempt("brc put c6", lambda: s2.put("compat2-c6", b"c6"))
attempt("brc bare str", lambda: s2.batch_replica_clear("compat2-c6"))
attempt("brc segment None", lambda: s2.batch_replica_clear(["compat2-c6"], None))
attempt("brc wrong segment", lambda: s2.batch_replica_clear(["compat2-c6"], "nope:1"))
attempt("brc wrong segment is_exist", lambda: s2.is_exist("compat2-c6"))
time.sleep(LEASE_GONE)
attempt("brc right segment", lambda: s2.batch_replica_clear(["compat2-c6"], seg))
attempt("brc right segment is_exist", lambda: s2.is_exist("compat2-c6"))
attempt("brc lease expired", lambda: s2.batch_replica_clear(["compat2-c2"]))
attempt("brc put c7", lambda: s2.put("compat2-c7", b"c7"))
attempt("brc keywords", lambda: s2.batch_replica_clear(keys=["compat2-c7"], segment_name=""))
attempt("brc put c8", lambda: s2.put("compat2-c8", b"c8"))
attempt("brc bytes key", lambda: s2.batch_replica_clear([b"compat2-c8"]))
attempt("brc put hard pinned", lambda: s2.put("compat2-c9", b"c9", config(with_hard_pin=True)))
attempt("brc hard pinned", lambda: s2.batch_replica_clear(["compat2-c9"]))
attempt("brc put c10", lambda: s2.put("compat2-c10", b"c10"))
other = MooncakeDistributedStore()
attempt("brc other setup", lambda: other.setup("127.0.0.1", metadata, 0, 16 * MIB, "tcp", "",
                                               master))
attempt("brc other client", lambda: other.batch_replica_clear(["compat2-c10"]))
attempt("brc other close", lambda: other.close())
attempt("brc owner still", lambda: s2.batch_replica_clear(["compat2-c10"]))

# --- §2.1 get_into_ranges ----------------------------------------------------------------
attempt("gir put r1", lambda: s2.put_from("compat2-r1", SRC, 4096))
attempt("gir put r2", lambda: s2.put_from("compat2-r2", SRC + 1000, 1000))
D = 65536
clear_dst()
attempt("gir two keys", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1", "compat2-r2"]], [[[0, 100], [300]]],
    [[[10, 2000], [5]]], [[[50, 60], [7]]]))
log("gir two keys bytes", [region(D, 50) == pattern[10:60],
                           region(D + 100, 60) == pattern[2000:2060],
                           region(D + 300, 7) == pattern[1005:1012],
                           region(D + 50, 50) == bytes(50)])
clear_dst()
attempt("gir two buffers", lambda: s2.get_into_ranges(
    [b2base + D, b2base + D + 8192], [["compat2-r1"], ["compat2-r1", "compat2-r2"]],
    [[[0]], [[0], [16]]], [[[0]], [[4088], [992]]], [[[4096]], [[8], [8]]]))
log("gir two buffers bytes", [region(D, 4096) == pattern,
                              region(D + 8192, 8) == pattern[4088:4096],
                              region(D + 8192 + 16, 8) == pattern[1992:2000]])
attempt("gir zero size", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1"]], [[[0, 8]]], [[[0, 8]]], [[[0, 8]]]))
attempt("gir missing key", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1", "compat2-missing"]], [[[0], [8, 16]]],
    [[[0], [0, 8]]], [[[4], [8, 8]]]))
attempt("gir top-level lengths", lambda: s2.get_into_ranges(
    [b2base + D, b2base + D + 4096], [["compat2-r1"]], [[[0]]], [[[0]]], [[[8]]]))
attempt("gir row lengths", lambda: s2.get_into_ranges(
    [b2base + D, b2base + D + 4096], [["compat2-r1", "compat2-r2"], ["compat2-r1"]],
    [[[0]], [[0]]], [[[0]], [[0]]], [[[8]], [[8]]]))
attempt("gir fragment lengths", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1", "compat2-r2"]], [[[0, 8], [100]]],
    [[[0], [0]]], [[[8, 8], [8]]]))
attempt("gir dst overflow", lambda: s2.get_into_ranges(
    [b2base + bsize - 4096], [["compat2-r1"]], [[[0, 4000]]], [[[0, 0]]], [[[8, 200]]]))
attempt("gir src beyond object", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1"]], [[[0, 8]]], [[[0, 4000]]], [[[8, 200]]]))
attempt("gir src at end", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r2"]], [[[0]]], [[[992]]], [[[8]]]))
attempt("gir empty", lambda: s2.get_into_ranges([], [], [], [], []))
attempt("gir empty keys", lambda: s2.get_into_ranges([b2base + D], [[]], [[]], [[]], [[]]))
attempt("gir zero fragments", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1"]], [[[]]], [[[]]], [[[]]]))
attempt("gir ptr 0", lambda: s2.get_into_ranges(
    [0, b2base + D], [["compat2-r1"], ["compat2-r1"]], [[[0]], [[0]]], [[[0]], [[0]]],
    [[[8]], [[8]]]))
unreg = ctypes.create_string_buffer(65536)
attempt("gir unregistered buffer", lambda: s2.get_into_ranges(
    [ctypes.addressof(unreg)], [["compat2-r1"]], [[[0]]], [[[0]]], [[[8]]]))
log("gir unregistered untouched", unreg.raw[:8] == bytes(8))
attempt("gir negative offset", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1"]], [[[-1]]], [[[0]]], [[[8]]]))
attempt("gir float size", lambda: s2.get_into_ranges(
    [b2base + D], [["compat2-r1"]], [[[0]]], [[[0]]], [[[8.0]]]))
attempt("gir None ptr", lambda: s2.get_into_ranges(
    [None], [["compat2-r1"]], [[[0]]], [[[0]]], [[[8]]]))

# --- §4.1 get sessions and §2.2 batch_get_into_multi_buffer_ranges ----------------------
ctypes.memmove(b2base + 4096, pattern[:64][::-1], 64)
attempt("gs put g1", lambda: s2.put_from("compat2-g1", SRC + 4096, 64))
G = pattern[:64][::-1]
attempt("gs start missing", lambda: s2.batch_get_session_start(["compat2-g1", "compat2-missing"]))
clear_dst()
attempt("gs ranges", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[b2base + D, b2base + D + 100]], [[16, 16]], [[0, 32]]))
log("gs ranges bytes", [region(D, 16) == G[:16], region(D + 100, 16) == G[32:48]])
attempt("gs start", lambda: s2.batch_get_session_start(["compat2-g1"]))
attempt("gs outer lengths", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[b2base + D], [b2base + D]], [[16]], [[0]]))
attempt("gs inner lengths", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[b2base + D, b2base + D + 100]], [[16]], [[0, 32]]))
attempt("gs src beyond size", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[b2base + D]], [[16]], [[60]]))
attempt("gs no session key", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1", "compat2-nosession"], [[b2base + D], [b2base + D + 100]], [[16], [16]],
    [[48], [0]]))
attempt("gs start again", lambda: s2.batch_get_session_start(["compat2-g1"]))
unreg2 = ctypes.create_string_buffer(64)
attempt("gs unregistered dst", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[ctypes.addressof(unreg2)]], [[16]], [[16]]))
log("gs unregistered dst bytes", unreg2.raw[:16] == G[16:32])
attempt("gs end", lambda: s2.batch_get_session_end(["compat2-g1", "compat2-unknown"]))
attempt("gs after end", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[b2base + D]], [[16]], [[0]]))
attempt("gs end empty", lambda: s2.batch_get_session_end([]))
attempt("gs start empty", lambda: s2.batch_get_session_start([]))
attempt("gs start expiring", lambda: s2.batch_get_session_start(["compat2-g1"]))
time.sleep(LEASE_GONE)
attempt("gs lease expired", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[b2base + D]], [[16]], [[0]]))
attempt("gs after expiry", lambda: s2.batch_get_into_multi_buffer_ranges(
    ["compat2-g1"], [[b2base + D]], [[16]], [[0]]))
attempt("gs start failed drops", lambda: s2.batch_get_session_start(["compat2-missing"]))

# --- §4.2 put sessions and §2.3 batch_put_from_multi_buffer_ranges ----------------------
attempt("ps start", lambda: s2.batch_put_session_start(["compat2-p1", "compat2-p2"], [64, 32]))
attempt("ps is_exist while open", lambda: s2.is_exist("compat2-p1"))
attempt("ps get_size while open", lambda: s2.get_size("compat2-p1"))
attempt("ps duplicate start", lambda: s2.batch_put_session_start(["compat2-p1"], [64]))
attempt("ps put existing", lambda: s2.put("compat2-pe", b"exists"))
attempt("ps start existing", lambda: s2.batch_put_session_start(["compat2-pe"], [10]))
attempt("ps start size 0", lambda: s2.batch_put_session_start(["compat2-p0"], [0]))
attempt("ps start empty key", lambda: s2.batch_put_session_start([""], [10]))
attempt("ps start lengths", lambda: s2.batch_put_session_start(
    ["compat2-pa", "compat2-pb"], [10]))
attempt("ps start empty", lambda: s2.batch_put_session_start([], []))
attempt("ps start bad soft pin", lambda: s2.batch_put_session_start(
    ["compat2-pp"], [10], config(soft_pin_ttl_ms=5)))
attempt("ps start group_ids length", lambda: s2.batch_put_session_start(
    ["compat2-pg1", "compat2-pg2"], [10, 10], config(group_ids=["g1"])))
attempt("ps start nof", lambda: s2.batch_put_session_start(
    ["compat2-pn"], [10], config(nof_replica_num=1, replica_num=2)))
attempt("ps ranges", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p1", "compat2-nosession"], [[SRC + 100, SRC + 116], [SRC]], [[32, 32], [8]],
    [[32, 0], [0]]))
attempt("ps ranges overlap", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p1"], [[SRC + 300]], [[8]], [[56]]))
attempt("ps beyond size", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p2"], [[SRC]], [[16]], [[20]]))
attempt("ps outer lengths", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p2"], [[SRC], [SRC]], [[16]], [[0]]))
attempt("ps inner lengths", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p2"], [[SRC, SRC]], [[16]], [[0, 16]]))
attempt("ps whole p2", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p2"], [[SRC + 2048]], [[32]], [[0]]))
attempt("ps end", lambda: s2.batch_put_session_end(["compat2-p1", "compat2-zz"]))
attempt("ps end twice", lambda: s2.batch_put_session_end(["compat2-p1"]))
attempt("ps ranges after end", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p1"], [[SRC]], [[8]], [[0]]))
P1 = pattern[116:148] + pattern[100:124] + pattern[300:308]
attempt("ps get", lambda: s2.get("compat2-p1"))
log("ps get bytes", quiet(lambda: s2.get("compat2-p1")) == P1)
attempt("ps revoke", lambda: s2.batch_put_session_revoke(["compat2-p2", "compat2-zz"]))
attempt("ps revoke twice", lambda: s2.batch_put_session_revoke(["compat2-p2"]))
attempt("ps revoked is_exist", lambda: s2.is_exist("compat2-p2"))
attempt("ps revoked get", lambda: s2.get("compat2-p2"))
attempt("ps ranges after revoke", lambda: s2.batch_put_from_multi_buffer_ranges(
    ["compat2-p2"], [[SRC]], [[8]], [[0]]))
attempt("ps end after revoke", lambda: s2.batch_put_session_end(["compat2-p2"]))
attempt("ps end empty", lambda: s2.batch_put_session_end([]))
attempt("ps revoke empty", lambda: s2.batch_put_session_revoke([]))
attempt("ps start ended key", lambda: s2.batch_put_session_start(["compat2-p1"], [64]))
attempt("ps start 2 then end unwritten", lambda: s2.batch_put_session_start(
    ["compat2-p3"], [16]))
attempt("ps end unwritten", lambda: s2.batch_put_session_end(["compat2-p3"]))
attempt("ps unwritten get_size", lambda: s2.get_size("compat2-p3"))

# --- §3 copy and move tasks --------------------------------------------------------------
attempt("task query zero", lambda: s2.query_task((0, 0)))
attempt("task query list", lambda: s2.query_task([0, 0]))
attempt("task query (1,)", lambda: s2.query_task((1,)))
attempt("task query negative", lambda: s2.query_task((-1, 2)))
attempt("task query str", lambda: s2.query_task("x"))
attempt("task query None", lambda: s2.query_task(None))
attempt("task put t1", lambda: s2.put("compat2-t1", b"task object"))
attempt("copy no targets", lambda: task(s2.create_copy_task("compat2-t1", [])))
attempt("copy missing key", lambda: task(s2.create_copy_task("compat2-missing", [seg])))
attempt("copy missing key no targets", lambda: task(s2.create_copy_task("compat2-missing", [])))
attempt("copy bad target", lambda: task(s2.create_copy_task("compat2-t1", ["nope:1"])))
attempt("copy one bad target", lambda: task(s2.create_copy_task("compat2-t1", [seg, "nope:1"])))
attempt("copy targets str", lambda: task(s2.create_copy_task("compat2-t1", seg)))
attempt("move missing key", lambda: task(s2.create_move_task("compat2-missing", seg, seg)))
attempt("move source == target", lambda: task(s2.create_move_task("compat2-t1", seg, seg)))
attempt("move bad target", lambda: task(s2.create_move_task("compat2-t1", seg, "nope:1")))
attempt("move bad source", lambda: task(s2.create_move_task("compat2-t1", "nope:1", seg)))
copy = quiet(lambda: s2.create_copy_task("compat2-t1", [seg]))
attempt("copy to own segment", lambda: task(copy))
copy_id = quiet(lambda: copy[0] if copy[1] == 0 else None)
done = None
deadline = time.time() + 15
while copy_id is not None and time.time() < deadline:
    done = quiet(lambda: s2.query_task(copy_id))
    if quiet(lambda: int(done[0].status.value) in (2, 3)):
        break
    time.sleep(0.2)
attempt("copy finished", lambda: [done[1], done[0].status, done[0].type, done[0].message])
attempt("copy response facts", lambda: [
    tuple(done[0].id) == tuple(copy_id), done[0].created_at_ms_epoch > 0,
    done[0].last_updated_at_ms_epoch >= done[0].created_at_ms_epoch,
    type(done[0].assigned_client).__name__, tuple(done[0].assigned_client) != (0, 0),
    repr(done[0]).startswith("QueryTaskResponse(id=")])
attempt("copy kept the object", lambda: s2.get("compat2-t1"))
attempt("TaskStatus(3) is SUCCESS", lambda: ms.TaskStatus(3) is ms.TaskStatus.SUCCESS)
attempt("TaskStatus.SUCCESS == 3", lambda: ms.TaskStatus.SUCCESS == 3)
attempt("TaskStatus.SUCCESS == TaskStatus(3)", lambda: ms.TaskStatus.SUCCESS == ms.TaskStatus(3))
attempt("str(TaskStatus.FAILED)", lambda: str(ms.TaskStatus.FAILED))
attempt("int, name, value", lambda: [int(ms.TaskStatus.FAILED), ms.TaskStatus.FAILED.name,
                                      int(ms.TaskStatus.FAILED.value)])
attempt("TaskStatus hashable", lambda: {ms.TaskStatus.SUCCESS: 1}.get(ms.TaskStatus(3)))
attempt("TaskStatus members", lambda: list(ms.TaskStatus.__members__))
attempt("TaskType members", lambda: {k: int(v) for k, v in ms.TaskType.__members__.items()})
attempt("ReplicaStatus members", lambda: {k: int(v)
                                          for k, v in ms.ReplicaStatus.__members__.items()})
attempt("SoftPinAction members", lambda: {k: int(v)
                                          for k, v in ms.SoftPinAction.__members__.items()})
attempt("ObjectDataType members", lambda: {k: int(v)
                                           for k, v in ms.ObjectDataType.__members__.items()})
attempt("module PROCESSING", lambda: ms.PROCESSING is ms.TaskStatus.PROCESSING)
attempt("module FAILED", lambda: ms.FAILED is ms.TaskStatus.FAILED)
attempt("module exports", lambda: {n: plain(getattr(ms, n, None)) for n in [
    "REPLICA_COPY", "REPLICA_MOVE", "PENDING", "PROCESSING", "SUCCESS", "FAILED", "COMPLETE",
    "UNDEFINED", "INITIALIZED", "REMOVED", "KVCACHE", "UNKNOWN", "GENERAL"]})
attempt("module has ENABLE", lambda: hasattr(ms, "ENABLE"))
attempt("QueryTaskResponse() repr", lambda: repr(ms.QueryTaskResponse()))
attempt("QueryTaskResponse() fields", lambda: [
    getattr(ms.QueryTaskResponse(), a) for a in [
        "id", "type", "status", "created_at_ms_epoch", "last_updated_at_ms_epoch",
        "assigned_client", "message"]])


def set_attr(obj, name, value):
    setattr(obj, name, value)
    return "ok"


attempt("QueryTaskResponse set status", lambda: set_attr(
    ms.QueryTaskResponse(), "status", ms.TaskStatus.SUCCESS))
attempt("QueryTaskResponse set message", lambda: set_attr(ms.QueryTaskResponse(), "message", "x"))

# --- §5 ReplicateConfig ------------------------------------------------------------------
attempt("config kwargs", lambda: ReplicateConfig(replica_num=2))
attempt("config positional", lambda: ReplicateConfig(2))
attempt("config get soft_pin_ttl", lambda: ReplicateConfig().soft_pin_ttl)
attempt("config set soft_pin_ttl", lambda: set_attr(ReplicateConfig(), "soft_pin_ttl", 5))
attempt("config get with_soft_pin", lambda: ReplicateConfig().with_soft_pin)
attempt("config set with_soft_pin", lambda: set_attr(ReplicateConfig(), "with_soft_pin", True))
ATTRS = ["replica_num", "nof_replica_num", "dfs_replica_num", "soft_pin_action",
         "soft_pin_ttl_ms", "with_hard_pin", "preferred_segment", "preferred_segments",
         "preferred_nof_segments", "prefer_alloc_in_same_node", "data_type", "group_ids"]
attempt("config defaults", lambda: {a: getattr(ReplicateConfig(), a) for a in ATTRS})
attempt("config repr prefix", lambda: repr(ReplicateConfig()).startswith(
    "<mooncake.store.ReplicateConfig object at 0x"))
attempt("str default config", lambda: str(ReplicateConfig()))


def assign(name, value):
    c = ReplicateConfig()
    setattr(c, name, value)
    return {"ok": getattr(c, name)}


BIG = 2 ** 64
ROWS = [
    ("replica_num", 0), ("replica_num", BIG - 1), ("replica_num", True), ("replica_num", -1),
    ("replica_num", BIG), ("replica_num", 1.5), ("replica_num", None), ("replica_num", "2"),
    ("nof_replica_num", 3), ("nof_replica_num", -1), ("nof_replica_num", None),
    ("dfs_replica_num", 3), ("dfs_replica_num", -1), ("dfs_replica_num", 1.5),
    ("soft_pin_action", "ENABLE"), ("soft_pin_action", "DISABLE"), ("soft_pin_action", 1),
    ("soft_pin_action", 5), ("soft_pin_action", None),
    ("soft_pin_ttl_ms", None), ("soft_pin_ttl_ms", 0), ("soft_pin_ttl_ms", BIG - 1),
    ("soft_pin_ttl_ms", True), ("soft_pin_ttl_ms", -1), ("soft_pin_ttl_ms", BIG),
    ("soft_pin_ttl_ms", 10 ** 30), ("soft_pin_ttl_ms", 1.5), ("soft_pin_ttl_ms", "10"),
    ("with_hard_pin", True), ("with_hard_pin", False), ("with_hard_pin", 0),
    ("with_hard_pin", 1), ("with_hard_pin", None), ("with_hard_pin", "x"),
    ("with_hard_pin", 2),
    ("preferred_segment", "p:1"), ("preferred_segment", None), ("preferred_segment", 1),
    ("preferred_segments", ["a:1", "b:2"]), ("preferred_segments", ("a:1",)),
    ("preferred_segments", "a:1"), ("preferred_segments", None), ("preferred_segments", [1]),
    ("preferred_segments", ["a:1", "a:1", "", "b:2"]), ("preferred_segments", []),
    ("preferred_nof_segments", ["n:1"]), ("preferred_nof_segments", "n:1"),
    ("preferred_nof_segments", None),
    ("prefer_alloc_in_same_node", True), ("prefer_alloc_in_same_node", None),
    ("prefer_alloc_in_same_node", 1), ("prefer_alloc_in_same_node", "x"),
    ("data_type", "KVCACHE"), ("data_type", "GENERAL"), ("data_type", 1),
    ("data_type", None),
    ("group_ids", None), ("group_ids", []), ("group_ids", ["g1", "g2"]), ("group_ids", "g"),
    ("group_ids", [1]), ("group_ids", ("g1",)),
]
for name, value in ROWS:
    if isinstance(value, str) and name in ("soft_pin_action", "data_type"):
        enum_name = "SoftPinAction" if name == "soft_pin_action" else "ObjectDataType"
        shown = f"{enum_name}.{value}"
        attempt(f"config {name} = {shown}",
                lambda: assign(name, getattr(getattr(ms, enum_name), value)))
    else:
        attempt(f"config {name} = {value!r}", lambda: assign(name, value))
copied = quiet(lambda: config(preferred_segments=["a:1"], group_ids=["g1"]), ReplicateConfig())
attempt("config preferred_segments append", lambda: copied.preferred_segments.append("x"))
attempt("config preferred_segments after append", lambda: copied.preferred_segments)
attempt("config group_ids append", lambda: copied.group_ids.append("g2"))
attempt("config group_ids after append", lambda: copied.group_ids)


def configured():
    c = ReplicateConfig()
    c.soft_pin_action = ms.SoftPinAction.ENABLE
    c.soft_pin_ttl_ms = 1000
    c.with_hard_pin = True
    c.preferred_segments = ["a:1", "b:2"]
    c.preferred_segment = "p:1"
    c.group_ids = ["g1"]
    return c


attempt("str configured config", lambda: str(configured()))


def str_with(**attrs):
    c = ReplicateConfig()
    for k, v in attrs.items():
        setattr(c, k, getattr(ms.ObjectDataType, v) if k == "data_type" else v)
    return str(c)


attempt("str config counts", lambda: str_with(replica_num=2, nof_replica_num=1,
                                               dfs_replica_num=1, prefer_alloc_in_same_node=True,
                                               data_type="KVCACHE", soft_pin_ttl_ms=0))
attempt("str config nof segments", lambda: str_with(preferred_nof_segments=["n:1", "n:2"],
                                                     group_ids=[]))


SOFT_PIN = [("ENABLE", None), ("ENABLE", 5000), ("ENABLE", 86400000), ("ENABLE", 0),
            ("ENABLE", 86400001), ("ENABLE", BIG - 1), ("PRESERVE", 0), ("PRESERVE", 5),
            ("DISABLE", 0), ("DISABLE", 5), ("PRESERVE", None), ("DISABLE", None)]
for i, (action, ttl) in enumerate(SOFT_PIN):
    attempt(f"soft pin put {action} {ttl}",
            lambda: s2.put(f"compat2-sp{i}", b"x", pin_config(action, ttl)))
for i, (action, ttl) in enumerate(SOFT_PIN):
    attempt(f"soft pin upsert {action} {ttl}",
            lambda: s2.upsert(f"compat2-sp{i}", b"yy", pin_config(action, ttl)))
attempt("soft pin batch_put_from invalid", lambda: s2.batch_put_from(
    ["compat2-spb1", "compat2-spb2"], [SRC, SRC], [8, 8], pin_config("PRESERVE", 5)))


attempt("put replica_num 0", lambda: s2.put("compat2-rn0", b"x", config(replica_num=0)))
attempt("put replica_num 2 (one segment)", lambda: s2.put("compat2-rn2", b"x",
                                                          config(replica_num=2)))
attempt("replica_num 2 replicas", lambda: len(s2.get_replica_desc("compat2-rn2")))
attempt("put nof_replica_num 1", lambda: s2.put("compat2-nof", b"x", config(nof_replica_num=1)))
attempt("put dfs_replica_num 2", lambda: s2.put("compat2-dfs2", b"x", config(dfs_replica_num=2)))
attempt("put dfs_replica_num 1", lambda: s2.put("compat2-dfs1", b"x", config(dfs_replica_num=1)))
attempt("put dfs 1 replica 0", lambda: s2.put("compat2-dfs0", b"x",
                                              config(dfs_replica_num=1, replica_num=0)))
attempt("put preferred_segment unknown", lambda: s2.put(
    "compat2-ps1", b"x", config(preferred_segment="nope:1")))
attempt("put preferred_segments unknown first", lambda: s2.put(
    "compat2-ps2", b"x", config(preferred_segments=["nope:1", seg])))
attempt("preferred_segments stored on seg", lambda: [
    d.get_memory_descriptor().buffer_descriptor.transport_endpoint == seg
    for d in s2.get_replica_desc("compat2-ps2")])
attempt("put group_ids 1", lambda: s2.put("compat2-gid1", b"x", config(group_ids=["g"])))
attempt("put group_ids 2", lambda: s2.put("compat2-gid2", b"x", config(group_ids=["g", "h"])))
attempt("batch_put_from group_ids 1 for 2", lambda: s2.batch_put_from(
    ["compat2-gid3", "compat2-gid4"], [SRC, SRC], [8, 8], config(group_ids=["g"])))
attempt("batch_put_from group_ids 2 for 2", lambda: s2.batch_put_from(
    ["compat2-gid5", "compat2-gid6"], [SRC, SRC], [8, 8], config(group_ids=["g", "h"])))
attempt("put data_type", lambda: s2.put("compat2-dt", b"x",
                                        config(data_type=ms.ObjectDataType.TENSOR)))

# --- §11 other methods -------------------------------------------------------------------
attempt("get_replica_desc missing", lambda: s2.get_replica_desc("compat2-missing"))
attempt("get_replica_desc", lambda: s2.get_replica_desc("compat2-t1"))
attempt("replica desc facts", lambda: [
    (d.status, d.is_memory_replica(), d.is_disk_replica(),
     d.get_memory_descriptor().buffer_descriptor.size,
     type(d.get_memory_descriptor().buffer_descriptor.buffer_address).__name__)
    for d in s2.get_replica_desc("compat2-t1")])
attempt("batch_get_replica_desc", lambda: s2.batch_get_replica_desc(
    ["compat2-t1", "compat2-missing", "compat2-r1"]))
attempt("batch_get_replica_desc missing", lambda: s2.batch_get_replica_desc(["compat2-missing"]))
attempt("batch_get_replica_desc empty", lambda: s2.batch_get_replica_desc([]))
for k in ("compat2-rx1", "compat2-rx2", "compat2-rx3", "compat2-rx4"):
    attempt(f"regex put {k}", lambda: s2.put(k, b"rx"))
attempt("regex lease", lambda: s2.is_exist("compat2-rx4"))
attempt("remove_by_regex", lambda: s2.remove_by_regex("^compat2-rx[0-9]$"))
attempt("remove_by_regex force", lambda: s2.remove_by_regex("^compat2-rx[0-9]$", True))
attempt("remove_by_regex none", lambda: s2.remove_by_regex("^compat2-rx"))
attempt("remove_by_regex is_exist", lambda: s2.batch_is_exist(["compat2-rx1", "compat2-rx4"]))
attempt("remove_by_regex invalid", lambda: s2.remove_by_regex("(", True))
META = 1 * MIB
ctypes.memmove(b2base + META, b"M" * 64, 64)
attempt("pfwm size 0", lambda: s2.put_from_with_metadata("compat2-m0", SRC, b2base + META, 0, 64))
attempt("pfwm size 0 is_exist", lambda: s2.is_exist("compat2-m0"))
attempt("pfwm", lambda: s2.put_from_with_metadata("compat2-m1", SRC, b2base + META, 100, 64))
attempt("pfwm get_size", lambda: s2.get_size("compat2-m1"))
log("pfwm bytes", quiet(lambda: s2.get("compat2-m1")) == b"M" * 64 + pattern[:100])
attempt("pfwm existing", lambda: s2.put_from_with_metadata(
    "compat2-m1", SRC, b2base + META, 10, 64))
attempt("pfwm meta 0", lambda: s2.put_from_with_metadata("compat2-m2", SRC, b2base + META, 10, 0))
attempt("pfwm meta 0 get", lambda: s2.get("compat2-m2"))
attempt("pfwm soft pin invalid", lambda: s2.put_from_with_metadata(
    "compat2-m3", SRC, b2base + META, 10, 8, pin_config("PRESERVE", 5)))
attempt("pfwm same node", lambda: s2.put_from_with_metadata(
    "compat2-m4", SRC, b2base + META, 10, 8, config(prefer_alloc_in_same_node=True)))
huge_size = 300 * MIB
huge = ctypes.create_string_buffer(huge_size)
attempt("register huge", lambda: s2.register_buffer(ctypes.addressof(huge), huge_size))
attempt("pfwm too large", lambda: s2.put_from_with_metadata(
    "compat2-m5", ctypes.addressof(huge), ctypes.addressof(huge), huge_size - 64, 64))
attempt("put_from too large", lambda: s2.put_from("compat2-m6", ctypes.addressof(huge),
                                                 huge_size))
attempt("unregister huge", lambda: s2.unregister_buffer(ctypes.addressof(huge)))
del huge

# --- python-api.md calls the first part does not make ----------------------------------
attempt("put_parts", lambda: s2.put_parts("compat2-pp1", b"ab", b"cd"))
attempt("put_parts get", lambda: s2.get("compat2-pp1"))
attempt("put_parts existing", lambda: s2.put_parts("compat2-pp1", b"zz"))
attempt("put_parts existing get", lambda: s2.get("compat2-pp1"))
attempt("upsert_parts", lambda: s2.upsert_parts("compat2-pp1", b"x", b"yz"))
attempt("upsert_parts get", lambda: s2.get("compat2-pp1"))
attempt("put_parts no parts", lambda: s2.put_parts("compat2-pp2"))
attempt("put_parts empty parts", lambda: s2.put_parts("compat2-pp3", b"", b""))
attempt("put_parts empty is_exist", lambda: s2.batch_is_exist(["compat2-pp2", "compat2-pp3"]))
attempt("upsert_batch", lambda: s2.upsert_batch(["compat2-ub1", "compat2-ub2"], [b"1", b"22"]))
attempt("upsert_batch get", lambda: s2.get_batch(["compat2-ub1", "compat2-ub2"]))
attempt("upsert_batch again", lambda: s2.upsert_batch(["compat2-ub1"], [b"333"]))
attempt("upsert_batch again get", lambda: s2.get("compat2-ub1"))
attempt("upsert_batch mismatch", lambda: s2.upsert_batch(["compat2-ub1"], [b"1", b"22"]))
attempt("upsert_from", lambda: s2.upsert_from("compat2-uf", SRC, 100))
attempt("upsert_from smaller", lambda: s2.upsert_from("compat2-uf", SRC + 8, 10))
attempt("upsert_from get", lambda: s2.get("compat2-uf"))
attempt("batch_upsert_from", lambda: s2.batch_upsert_from(
    ["compat2-bu1", "compat2-bu2"], [SRC, SRC + 5], [5, 6]))
attempt("batch_upsert_from get", lambda: s2.get_batch(["compat2-bu1", "compat2-bu2"]))
attempt("batch_upsert_from mismatch", lambda: s2.batch_upsert_from(
    ["compat2-bu1"], [SRC, SRC], [5, 6]))
attempt("get_buffer", lambda: (lambda h: [type(h).__name__, len(h), h.size(), bytes(h),
                                          isinstance(h.ptr(), int), bytes(memoryview(h))])(
    s2.get_buffer("compat2-pp1")))
attempt("get_buffer missing", lambda: s2.get_buffer("compat2-missing"))
attempt("batch_get_buffer", lambda: s2.batch_get_buffer(["compat2-pp1", "compat2-missing"]))
attempt("put empty key", lambda: s2.put("", b"x"))
attempt("upsert empty key", lambda: s2.upsert("", b"x"))
attempt("upsert empty value", lambda: s2.upsert("compat2-ue", b""))
dict_conf = {"local_hostname": "127.0.0.1", "metadata_server": metadata,
             "global_segment_size": 0, "local_buffer_size": "16MB", "protocol": "tcp",
             "master_server_addr": master}
by_dict = MooncakeDistributedStore()
attempt("setup dict", lambda: by_dict.setup(dict_conf))
attempt("setup dict health_check", lambda: by_dict.health_check())
attempt("setup dict put", lambda: by_dict.put("compat2-dict", b"dict"))
attempt("setup dict get", lambda: by_dict.get("compat2-dict"))
attempt("setup dict remove", lambda: by_dict.remove("compat2-dict", True))
attempt("setup dict close", lambda: by_dict.close())
for name, change in [("no local_hostname", {"local_hostname": None}),
                     ("global_segment_size 100", {"global_segment_size": 100}),
                     ("local_buffer_size 512", {"local_buffer_size": "512"})]:
    bad = MooncakeDistributedStore()
    conf = {k: v for k, v in {**dict_conf, **change}.items() if v is not None}
    attempt(f"setup dict {name}", lambda: bad.setup(conf))
    attempt(f"setup dict {name} health_check", lambda: bad.health_check())

attempt("get_offload_rpc_read_count", lambda: s2.get_offload_rpc_read_count())
attempt("_get_pyclient_capsule", lambda: type(s2._get_pyclient_capsule()).__name__)
attempt("unmount_segment unknown", lambda: s2.unmount_segment(["1-2"]))
attempt("unmount_segment garbage", lambda: s2.unmount_segment(["garbage"]))
attempt("unmount_and_free_segment unknown", lambda: s2.unmount_and_free_segment(["1-2"]))
attempt("unmount_segment empty", lambda: s2.unmount_segment([]))
attempt("unmount_local_disk_segment", lambda: s2.unmount_local_disk_segment())
attempt("remove_all", lambda: s2.remove_all(True) > 0)
attempt("remove_all empty", lambda: s2.remove_all(True))
attempt("remove_all put 1", lambda: s2.put("compat2-ra1", b"1"))
attempt("remove_all put 2", lambda: s2.put("compat2-ra2", b"2"))
attempt("remove_all lease", lambda: s2.is_exist("compat2-ra2"))
attempt("remove_all unforced", lambda: s2.remove_all())
attempt("remove_all forced", lambda: s2.remove_all(True))
# Segments mounted by this client (nothing is put while they are mounted).
with tempfile.NamedTemporaryFile(prefix="compat2-") as f:
    f.truncate(16 * MIB)
    f.flush()
    mounted = quiet(lambda: s2.mount_segment(f.name, 16 * MIB), {})
    ids = mounted.get("segment_ids", []) if isinstance(mounted, dict) else []
    log("mount_segment", {
        "ret": mounted.get("ret") if isinstance(mounted, dict) else mounted,
        "segment_ids": len(ids), "keys": sorted(mounted) if isinstance(mounted, dict) else [],
        "id_form": [isinstance(i, str) and i.count("-") == 1 for i in ids]})
    attempt("unmount_segment", lambda: s2.unmount_segment(ids))
    attempt("unmount_segment twice", lambda: s2.unmount_segment(ids))
attempt("mount_segment missing file", lambda: s2.mount_segment("/nonexistent/compat2", MIB)["ret"])
alloc = quiet(lambda: s2.allocate_and_mount_segment(MIB), {})
alloc = alloc if isinstance(alloc, dict) else {"ret": alloc}
log("allocate_and_mount_segment", {"ret": alloc.get("ret"),
                                   "segment_ids": len(alloc.get("segment_ids", [])),
                                   "allocated_size": alloc.get("allocated_size"),
                                   "keys": sorted(alloc)})
attempt("unmount_and_free_segment", lambda: s2.unmount_and_free_segment(alloc["segment_ids"]))
attempt("unmount_and_free_segment twice", lambda: s2.unmount_and_free_segment(
    alloc["segment_ids"]))
attempt("unregister b2", lambda: s2.unregister_buffer(b2base))

# --- §12 guarded methods after close(), and before setup --------------------------------
attempt("close", lambda: s2.close())
attempt("close twice", lambda: s2.close())
attempt("closed health_check", lambda: s2.health_check())
CLOSED = [
    ("get", lambda c: c.get("compat2-x")),
    ("get_batch", lambda c: c.get_batch(["compat2-x", "compat2-y"])),
    ("put_from", lambda c: c.put_from("compat2-x", SRC, 8)),
    ("put_from_with_metadata", lambda c: c.put_from_with_metadata(
        "compat2-x", SRC, SRC, 8, 8)),
    ("upsert", lambda c: c.upsert("compat2-x", b"x")),
    ("upsert_from", lambda c: c.upsert_from("compat2-x", SRC, 8)),
    ("upsert_parts", lambda c: c.upsert_parts("compat2-x", b"a", b"b")),
    ("upsert_batch", lambda c: c.upsert_batch(["compat2-x"], [b"x"])),
    ("batch_upsert_from", lambda c: c.batch_upsert_from(
        ["compat2-x", "compat2-y"], [SRC, SRC], [8, 8])),
    ("batch_put_from_multi_buffers", lambda c: c.batch_put_from_multi_buffers(
        ["compat2-x"], [[SRC]], [[8]])),
    ("batch_put_session_start", lambda c: c.batch_put_session_start(["compat2-x"], [8])),
    ("batch_put_from_multi_buffer_ranges", lambda c: c.batch_put_from_multi_buffer_ranges(
        ["compat2-x"], [[SRC]], [[8]], [[0]])),
    ("batch_put_session_end", lambda c: c.batch_put_session_end(["compat2-x"])),
    ("batch_put_session_revoke", lambda c: c.batch_put_session_revoke(["compat2-x"])),
    ("batch_get_session_start", lambda c: c.batch_get_session_start(["compat2-x"])),
    ("batch_get_into_multi_buffer_ranges", lambda c: c.batch_get_into_multi_buffer_ranges(
        ["compat2-x"], [[SRC]], [[8]], [[0]])),
    ("batch_get_session_end", lambda c: c.batch_get_session_end(["compat2-x"])),
    ("batch_replica_clear", lambda c: c.batch_replica_clear(["compat2-x"])),
    ("mount_segment", lambda c: c.mount_segment("/nonexistent/compat2", MIB)),
    ("unmount_segment", lambda c: c.unmount_segment(["1-2"])),
    ("allocate_and_mount_segment", lambda c: c.allocate_and_mount_segment(MIB)),
    ("unmount_and_free_segment", lambda c: c.unmount_and_free_segment(["1-2"])),
    ("unmount_local_disk_segment", lambda c: c.unmount_local_disk_segment()),
    ("get_offload_rpc_read_count", lambda c: c.get_offload_rpc_read_count()),
    ("_get_pyclient_capsule is None", lambda c: c._get_pyclient_capsule() is None),
    ("health_check", lambda c: c.health_check()),
    ("close", lambda c: c.close()),
]
for name, call in CLOSED:
    attempt(f"closed {name}", lambda: call(s2))
fresh = MooncakeDistributedStore()
for name, call in CLOSED:
    attempt(f"not set up {name}", lambda: call(fresh))
attempt("first store closed health_check", lambda: s.health_check())
attempt("first store closed get", lambda: s.get("compat-a"))
attempt("setup again after close", lambda: s2.setup("127.0.0.1", metadata, 0, 16 * MIB, "tcp",
                                                    "", master))
attempt("again health_check", lambda: s2.health_check())
attempt("again put", lambda: s2.put("compat2-again", b"again"))
attempt("again get", lambda: s2.get("compat2-again"))
attempt("again remove", lambda: s2.remove("compat2-again", True))
attempt("again close", lambda: s2.close())
print(json.dumps(out))
