"""Master HA from Python: `setup(..., master_server_addr="etcd://host:port")` follows the
leader of a group of masters, and keeps working when the leader is killed: the standby
takes over with every object, the store service remounts, reads and writes go on.
Real etcd, masters, store service and metadata server; skipped without `etcd` on PATH
unless MOONCAKE_TEST_REQUIRE_SERVICES=1."""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import MIB, Proc, free_port, script


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def etcd(tmp_path):
    binary = shutil.which("etcd")
    if binary is None:
        if os.environ.get("MOONCAKE_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail("etcd is not on PATH and MOONCAKE_TEST_REQUIRE_SERVICES=1: "
                        "install the Debian package etcd-server")
        pytest.skip("etcd is not on PATH (Debian package etcd-server)")
    client, peer = free_port(), free_port()
    p = subprocess.Popen([
        binary, "--name=py", f"--data-dir={tmp_path}/etcd",
        f"--listen-client-urls=http://127.0.0.1:{client}",
        f"--advertise-client-urls=http://127.0.0.1:{client}",
        f"--listen-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
        f"--initial-cluster=py=http://127.0.0.1:{peer}", "--log-level=warn",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, ETCD_UNSUPPORTED_ARCH=os.uname().machine))
    wait_port(client)
    yield f"127.0.0.1:{client}"
    p.kill()
    p.wait()


def http_get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def metric(port, name):
    text = http_get(port, "/metrics") or ""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait(what, ok, timeout=15):
    deadline = time.time() + timeout
    while not ok():
        assert time.time() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


def test_a_python_client_follows_the_leader_through_a_failover(etcd, monkeypatch):
    from mooncake.store import MooncakeDistributedStore

    cluster = f"py-ha-{os.getpid()}"
    monkeypatch.setenv("MC_STORE_CLUSTER_ID", cluster)
    http = free_port()
    meta = Proc([script("mooncake_http_metadata_server"), "--host", "127.0.0.1",
                 "--port", str(http)])
    wait_port(http)
    metadata = f"http://127.0.0.1:{http}/metadata"
    masters = []
    for _ in range(2):
        port = free_port()
        p = Proc([script("mooncake_master"), "--enable_ha",
                  f"--ha_backend_connstring=etcd://{etcd}", f"--cluster_id={cluster}",
                  "--rpc_port=0", "--rpc_address=127.0.0.1", "--metrics_host=127.0.0.1",
                  f"--metrics_port={port}", "--client_ttl=5"])
        p.wait_for("metrics on")
        masters.append((p, port))

    def leaders():
        return [i for i, (_, port) in enumerate(masters)
                if http_get(port, "/role") == "leader\n"]

    wait("a leader", lambda: len(leaders()) == 1, timeout=20)
    leader = leaders()[0]
    service = Proc([script("mooncake_store_service"), "--host=127.0.0.1", "--port=0",
                    "--global_segment_size=64MB", "--shared_memory=false",
                    f"--master_server_address=etcd://{etcd}", f"--metadata_server={metadata}"])
    service.wait_for("mounted")
    store = MooncakeDistributedStore()
    assert store.setup("127.0.0.1", metadata, 0, 16 * MIB, "tcp", "", f"etcd://{etcd}") == 0
    values = {f"k{i}": bytes([i]) * 4096 for i in range(100)}
    for k, v in values.items():
        assert store.put(k, v) == 0
    standby_port = masters[1 - leader][1]
    wait("the standby holds every object",
         lambda: metric(standby_port, "master_ha_standby_objects") == 100.0)

    killed = time.time()
    masters[leader][0].stop(signal.SIGKILL)
    wait("the standby leads", lambda: http_get(standby_port, "/role") == "leader\n")
    took = time.time() - killed
    assert metric(standby_port, "master_restored_key_count") == 100.0
    # The store service remounts at its next ping; then every object is served again.
    wait("the store service remounted",
         lambda: (metric(standby_port, "master_remount_segment_requests_total") or 0) >= 1)
    for k, v in values.items():
        assert store.get(k) == v, k
    assert store.put("after", b"x" * 4096) == 0
    assert store.get("after") == b"x" * 4096
    assert metric(standby_port, "master_put_start_requests_total") == 1.0
    print(f"python client: standby served {took:.2f} s after the leader was killed")
    store.close()
    service.stop()
    masters[1 - leader][0].stop()
    meta.stop()
