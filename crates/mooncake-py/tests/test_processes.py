"""Separate Python processes sharing data through a separate store service, and the
contributor-exit case: what an exiting contributor held is gone, what the store service
holds survives."""

import subprocess
import sys
import textwrap
import time

import pytest

from conftest import Cluster, script

SETUP = """
import hashlib, sys
from mooncake.store import MooncakeDistributedStore, ReplicateConfig
s = MooncakeDistributedStore()
rc = s.setup("127.0.0.1", {metadata!r}, {segment}, 16 << 20, "tcp", "", {master!r})
assert rc == 0, rc
def value(i):
    return hashlib.sha256(str(i).encode()).digest() * (64 + i)
"""


def run_python(cluster, body, segment=0):
    code = SETUP.format(metadata=cluster.metadata, master=cluster.master_addr, segment=segment)
    code += textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def short_ttl_cluster():
    c = Cluster(client_ttl=2)
    yield c
    c.stop()


def test_two_processes_share_data_through_the_store_service(short_ttl_cluster):
    c = short_ttl_cluster
    run_python(c, """
        keys = [f"shared-{i}" for i in range(100)]
        assert s.put_batch(keys, [value(i) for i in range(100)]) == 0
        s.close()
    """)
    out = run_python(c, """
        keys = [f"shared-{i}" for i in range(100)]
        got = s.get_batch(keys)
        bad = [i for i, v in enumerate(got) if v != value(i)]
        print("bad", bad)
    """)
    assert "bad []" in out, out


def test_contributor_exit_loses_its_data_but_not_the_store_services(short_ttl_cluster):
    c = short_ttl_cluster
    # A contributor stores 20 objects on its own segment and 20 on the store service's,
    # then exits without close(), as an inference process that dies does.
    run_python(c, f"""
        mine, service = ReplicateConfig(), ReplicateConfig()
        mine.preferred_segment = s.get_hostname()
        service.preferred_segment = {c.service.segment!r}
        for i in range(20):
            assert s.put(f"own-{{i}}", value(i), mine) == 0
            assert s.put(f"kept-{{i}}", value(i), service) == 0
        import os
        os._exit(0)
    """, segment=64 << 20)
    # Liveness expires after client_ttl (2 s); the master then drops the contributor's objects.
    deadline = time.time() + 15
    while time.time() < deadline:
        out = run_python(c, """
            print("own", sum(s.is_exist(f"own-{i}") for i in range(20)))
        """)
        if "own 0" in out:
            break
        time.sleep(1)
    assert "own 0" in out, out
    out = run_python(c, """
        print("own", [s.get(f"own-{i}") for i in range(20)].count(b""))
        print("kept", sum(s.get(f"kept-{i}") == value(i) for i in range(20)))
    """)
    assert "own 20" in out and "kept 20" in out, out


def test_a_contributor_that_closes_cleanly_keeps_its_data(short_ttl_cluster):
    """The seed's case: an inference process with global_segment_size > 0 that exits
    through close() no longer loses what it held: close() drains its segment first."""
    c = short_ttl_cluster
    run_python(c, """
        mine = ReplicateConfig()
        mine.preferred_segment = s.get_hostname()
        for i in range(1000):
            assert s.put(f"drained-{i}", value(i % 50), mine) == 0
        assert s.close() == 0
    """, segment=64 << 20)
    out = run_python(c, """
        print("kept", sum(s.get(f"drained-{i}") == value(i % 50) for i in range(1000)))
    """)
    assert "kept 1000" in out, out


def test_console_scripts_take_the_binaries_flags():
    for name in ("mooncake_master", "mooncake_store_service", "mooncake_client"):
        r = subprocess.run([script(name), "--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "--global_segment_size" in r.stdout or "--rpc_port" in r.stdout
    r = subprocess.run([script("mooncake_master"), "--no_such_flag=1"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0 and "no_such_flag" in r.stderr
