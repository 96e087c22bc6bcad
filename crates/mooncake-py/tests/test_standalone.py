"""Standalone mode (`setup_dummy`): thin clients in separate processes forward every call to
the node's store service and share a memory pool with it."""

import os
import shutil
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


def test_task_calls_are_forwarded_to_the_store_service(cluster):
    # A second segment to copy to; the copy is executed by the node's store service, which
    # owns the segment the key lives on.
    other = cluster.add_service(segment="64MB")
    address = f"127.0.0.1:{cluster.service.port}"
    out = run_dummy(address, f"""
        import time
        from mooncake.store import ReplicateConfig, TaskStatus
        here = ReplicateConfig()
        here.preferred_segment = s.get_hostname()
        assert s.put("dummy-task", b"t" * 1000, here) == 0
        tid, rc = s.create_copy_task("dummy-task", [{other.segment!r}])
        assert rc == 0 and tid != (0, 0), (tid, rc)
        for _ in range(100):
            resp, rc = s.query_task(tid)
            if resp.status in (TaskStatus.SUCCESS, TaskStatus.FAILED):
                break
            time.sleep(0.1)
        print("status", resp.status.name, resp.id == tid)
        print("missing", s.create_copy_task("dummy-none", [{other.segment!r}])[1])
        print("move same", s.create_move_task("dummy-task", "a:1", "a:1")[1])
        print("query unknown", s.query_task((0, 0)))
        print("regex", s.remove_by_regex("^dummy-task$", True))
        print("clear", s.batch_replica_clear(["x"]))
    """)
    assert "status SUCCESS True" in out, out
    assert "missing -704" in out and "move same -600" in out
    assert "query unknown (None, -1400)" in out and "regex 1" in out and "clear []" in out
    other.stop()


def test_get_into_ranges_reads_into_the_shared_pool(cluster):
    address = f"127.0.0.1:{cluster.service.port}"
    out = run_dummy(address, """
        data = bytes(range(256)) * 16
        assert s.put("dummy-ranges", data) == 0
        buf = s.alloc_from_mem_pool(1 << 16)
        r = s.get_into_ranges([buf], [["dummy-ranges", "dummy-none"]],
                              [[[0, 100], [200]]], [[[10, 4000], [0]]], [[[50, 96], [5]]])
        print("r", r)
        print("bytes", ctypes.string_at(buf, 50) == data[10:60],
              ctypes.string_at(buf + 100, 96) == data[4000:4096])
        outside = ctypes.create_string_buffer(64)
        print("outside", s.get_into_ranges([ctypes.addressof(outside)], [["dummy-ranges"]],
                                           [[[0]]], [[[0]]], [[[8]]]))
        print("beyond", s.get_into_ranges([buf], [["dummy-ranges"]], [[[0]]], [[[4090]]],
                                          [[[10]]]))
    """)
    assert "r [[[50, 96], [-704]]]" in out, out
    assert "bytes True True" in out and "outside [[[-600]]]" in out
    assert "beyond [[[-600]]]" in out


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run a client as another user")
def test_a_client_of_another_user_is_refused(cluster):
    address = f"127.0.0.1:{cluster.service.port}"
    code = ("from mooncake.store import MooncakeDistributedStore\n"
            "s = MooncakeDistributedStore()\n"
            f"print('rc', s.setup_dummy(16 << 20, 4 << 20, {address!r}))\n")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert "rc -900" in r.stdout, (r.stdout, r.stderr)
    # Our client refuses first: the socket is held by another user.
    assert "not by this user" in r.stderr, r.stderr
    # The service refuses too, for a client that does not check (a raw hello).
    raw = ("import json, socket, struct\n"
           "s = socket.socket(socket.AF_UNIX)\n"
           f"s.connect('\\0mooncake_client_{cluster.service.port}.sock')\n"
           "body = json.dumps({'op': 'hello', 'pool': '/dev/shm/x', 'size': 4096}).encode()\n"
           "s.sendall(struct.pack('<I', len(body)) + body)\n"
           "n = struct.unpack('<I', s.recv(4))[0]\n"
           "print(s.recv(n).decode())\n")
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        sys.executable, "-c", raw], capture_output=True, text=True,
                       timeout=60)
    assert "may not use it" in r.stdout, (r.stdout, r.stderr)
    # The same call as this user works.
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        timeout=60)
    assert "rc 0" in ok.stdout, (ok.stdout, ok.stderr)


SQUATTER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind("\\0" + sys.argv[1])
s.listen(8)
print("bound", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    print("got", len(data), flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to squat a socket as another user")
def test_a_squatted_socket_gets_no_request(tmp_path):
    """Another user holding the abstract names first: the master says so loudly and
    serves over TCP; clients send nothing to the squatter (not the master's local socket,
    not the standalone socket)."""
    from conftest import Proc, script
    rpc = free_port()
    squatters = []
    for name in (f"mooncake_master_{rpc}.sock", f"mooncake_client_{rpc + 1}.sock"):
        p = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-u", "-c", SQUATTER, name],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "bound"
        squatters.append(p)
    http, metrics = free_port(), free_port()
    master = Proc([script("mooncake_master"), f"--rpc_port={rpc}", "--rpc_address=127.0.0.1",
                   "--enable_http_metadata_server=1", "--http_metadata_server_host=127.0.0.1",
                   f"--http_metadata_server_port={http}", "--metrics_host=127.0.0.1",
                   f"--metrics_port={metrics}"])
    try:
        master.wait_for("metrics on")
        code = ("from mooncake.store import MooncakeDistributedStore as S\n"
                "s = S()\n"
                f"print('rc', s.setup('127.0.0.1', 'http://127.0.0.1:{http}/metadata', 0,"
                f" 1 << 20, 'tcp', '', '127.0.0.1:{rpc}'))\n"
                "print('exist', s.is_exist('nothing'))\n"
                f"print('dummy', S().setup_dummy(1 << 20, 1 << 20, '127.0.0.1:{rpc + 1}'))\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60)
        assert "rc 0" in r.stdout and "exist 0" in r.stdout, (r.stdout, r.stderr)
        assert "dummy -900" in r.stdout and "not by this user" in r.stderr, r.stderr
        assert "held by another user" in r.stderr, r.stderr
    finally:
        master.stop()
        for p in squatters:
            p.terminate()
    logs = [p.communicate(timeout=10)[0] for p in squatters]
    for log in logs:
        assert all(line == "got 0" for line in log.splitlines()), log
    err = master.p.stderr.read()
    assert "is another process holding the name" in err, err
