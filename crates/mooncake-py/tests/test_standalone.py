"""Standalone mode (`setup_dummy`): thin clients in separate processes forward every call to
the node's store service and share a memory pool with it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import MIB, Cluster, free_port

DUMMY = """
import ctypes, hashlib, sys
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
rc = s.setup_dummy(64 << 20, 16 << 20, {address!r})
assert rc == 0, rc
def value(i):
    return hashlib.sha256(str(i).encode()).digest() * (32 + i)
"""


def run_dummy(address, body):
    code = DUMMY.format(address=address) + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_two_ranks_share_data_through_one_store_service(cluster):
    address = f"127.0.0.1:{cluster.service.port}"
    run_dummy(address, """
        keys = [f"rank0-{i}" for i in range(50)]
        assert s.put_batch(keys, [value(i) for i in range(50)]) == 0
        assert s.put("rank0-single", b"hello") == 0 and s.put("rank0-single", b"x") == 0
        buf = s.alloc_from_mem_pool(1 << 20)
        assert buf != 0 and s.register_buffer(buf, 1 << 20) == 0
        ctypes.memmove(buf, value(7), len(value(7)))
        assert s.batch_put_from(["rank0-zc"], [buf], [len(value(7))]) == [0]
        assert s.batch_put_from_multi_buffers(["rank0-mb"], [[buf, buf + 100]], [[10, 20]]) == [0]
        outside = ctypes.create_string_buffer(64)
        assert s.put_from("rank0-out", ctypes.addressof(outside), 64) == -600
        assert s.get_hostname() != ""
        assert s.close() == 0
    """)
    out = run_dummy(address, """
        keys = [f"rank0-{i}" for i in range(50)]
        got = s.get_batch(keys)
        print("bad", [i for i, v in enumerate(got) if v != value(i)])
        print("single", s.get("rank0-single"))
        print("exist", s.batch_is_exist(["rank0-zc", "nope"]), s.get_size("rank0-zc"))
        buf = s.alloc_from_mem_pool(1 << 20)
        n = s.get_into("rank0-zc", buf, 1 << 20)
        print("zc", n == len(value(7)) and ctypes.string_at(buf, n) == value(7))
        print("small", s.get_into("rank0-zc", buf, 10))
        print("multi", s.batch_get_into_multi_buffers(["rank0-mb", "rank0-mb"], [[buf, buf + 500], [buf]], [[15, 15], [29]]))
        print("missing", s.get("nope"), s.get_into("nope", buf, 10), s.remove("nope"))
        print("health", s.health_check())
        print("removed", s.remove("rank0-single", True), s.is_exist("rank0-single"))
    """)
    assert "bad []" in out, out
    assert "single b'hello'" in out, out
    assert "exist [1, 0] " in out, out
    assert "zc True" in out and "small -600" in out, out
    assert "multi [30, -600]" in out, out
    assert "missing b'' -704 -704" in out, out
    assert "health 0" in out and "removed 0 0" in out, out


def test_an_unreachable_store_service_is_a_clear_error_at_setup():
    code = """
import time
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
t = time.time()
print("rc", s.setup_dummy(1 << 20, 1 << 20, "127.0.0.1:1"), time.time() - t < 5)
print("bad", s.setup_dummy(1 << 20, 1 << 20, "no-port"))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "rc -900 True" in r.stdout, (r.stdout, r.stderr)
    assert "mooncake_client_1.sock" in r.stderr, r.stderr
    assert "bad -600" in r.stdout, r.stdout


def test_dummy_data_survives_a_durable_store_service_restart():
    c = Cluster(segment="128MB")
    path = f"/dev/shm/mooncake-pytest-durable-{os.getpid()}"
    port = free_port()
    try:
        svc = c.add_service("128MB", port=port, extra=(f"--segment_path={path}",))
        address = f"127.0.0.1:{port}"
        here = svc.segment
        run_dummy(address, f"""
            from mooncake.store import ReplicateConfig
            cfg = ReplicateConfig()
            cfg.preferred_segment = {here!r}
            for i in range(30):
                assert s.put(f"durable-{{i}}", value(i), cfg) == 0
        """)
        svc.stop(signal.SIGKILL)
        c.services.remove(svc)
        c.add_service("128MB", port=port, extra=(f"--segment_path={path}",))
        out = run_dummy(address, """
            print("kept", sum(s.get(f"durable-{i}") == value(i) for i in range(30)))
        """)
        assert "kept 30" in out, out
    finally:
        c.stop()
        for p in (path, path + ".mooncake.json"):
            if os.path.exists(p):
                os.remove(p)
