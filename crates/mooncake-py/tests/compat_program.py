"""A program written against the C++ wheel's store API (python-api.md), unchanged.

Run it with either wheel installed:
    python compat_program.py <master host:port> <metadata url>
It prints one JSON list of (call, result) pairs. `compat_expected.json` holds what the C++
wheel 0.3.13.post1 printed on this machine; `test_compat.py` checks ours prints the same.
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
    if isinstance(result, list):
        return [plain(r) for r in result]
    return result


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
print(json.dumps(out))
