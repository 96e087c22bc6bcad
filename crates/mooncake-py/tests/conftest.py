"""Fixtures: a real master and a real store service, started as separate processes
through the wheel's console scripts, on free 127.0.0.1 ports."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

BIN = os.path.dirname(sys.executable)
MIB = 1 << 20


def script(name):
    path = shutil.which(name, path=BIN)
    assert path, f"console script {name} is not installed next to {sys.executable}"
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process whose stdout announcements we wait for."""

    def __init__(self, args):
        self.args = args
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, bufsize=1)

    def wait_for(self, needle, timeout=30):
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            line = self.p.stdout.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return line
        err = self.p.stderr.read() if self.p.poll() is not None else ""
        raise AssertionError(f"{self.args[0]} never printed {needle!r}: {seen} {err}")

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


class Cluster:
    def __init__(self, client_ttl=10, segment="256MB", token=None, service_extra=()):
        self.auth = [f"--auth_token={token}"] if token else []
        self.rpc, self.http, self.metrics = free_port(), free_port(), free_port()
        self.master_addr = f"127.0.0.1:{self.rpc}"
        self.metadata = f"http://127.0.0.1:{self.http}/metadata"
        self.master = Proc([
            script("mooncake_master"), f"--rpc_port={self.rpc}", "--rpc_address=127.0.0.1",
            "--enable_http_metadata_server=1", "--http_metadata_server_host=127.0.0.1",
            f"--http_metadata_server_port={self.http}", "--metrics_host=127.0.0.1",
            f"--metrics_port={self.metrics}", f"--client_ttl={client_ttl}",
            "--default_kv_lease_ttl=500", *self.auth,
        ])
        self.master.wait_for("metrics on")
        self.services = []
        self.service = self.add_service(segment, extra=service_extra)

    def add_service(self, segment="256MB", name="mooncake_store_service", port=0, extra=()):
        p = Proc([
            script(name), "--host=127.0.0.1", f"--port={port}",
            f"--global_segment_size={segment}", f"--master_server_address={self.master_addr}",
            f"--metadata_server={self.metadata}", *self.auth, *extra,
        ])
        line = p.wait_for("mounted")
        p.segment = line.split(" segment ")[1].split(" ")[0]
        line = p.wait_for("metrics on")
        p.port = int(line.strip().rsplit(":", 1)[1].split("/")[0])
        self.services.append(p)
        return p

    def store(self, segment=0, buffer=16 * MIB):
        from mooncake.store import MooncakeDistributedStore
        s = MooncakeDistributedStore()
        rc = s.setup("127.0.0.1", self.metadata, segment, buffer, "tcp", "", self.master_addr)
        assert rc == 0, rc
        return s

    def stop(self):
        for s in self.services:
            s.stop()
        self.master.stop()


class Registered:
    """A zeroed ctypes buffer registered with a store for zero-copy calls."""

    def __init__(self, store, size=MIB):
        import ctypes
        self.store, self.size = store, size
        self.buf = ctypes.create_string_buffer(size)
        self.addr = ctypes.addressof(self.buf)
        assert store.register_buffer(self.addr, size) == 0

    def write(self, data, offset=0):
        import ctypes
        ctypes.memmove(self.addr + offset, data, len(data))

    def read(self, n, offset=0):
        import ctypes
        return ctypes.string_at(self.addr + offset, n)

    def close(self):
        assert self.store.unregister_buffer(self.addr) == 0


@pytest.fixture
def buffers(store):
    """Makes registered buffers (`buffers(size)`) and unregisters them afterwards."""
    made = []
    yield lambda size=MIB: made.append(Registered(store, size)) or made[-1]
    for b in made:
        b.close()


def assert_not_initialised(store, table, monkeypatch):
    """Each `(method, args, value)` of `table` called on `store` (not set up, or closed)
    returns `value`, torch hidden: the not-initialised answers need no torch."""
    monkeypatch.setitem(sys.modules, "torch", None)
    for method, args, value in table:
        assert getattr(store, method)(*args) == value, method


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.stop()


@pytest.fixture
def store(cluster):
    s = cluster.store()
    s.remove_all(True)
    yield s
    s.close()
