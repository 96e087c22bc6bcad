"""Teardown (python-api-2.md §12): a dropped store unmounts its segment at once, a put whose
holder is dead is placed elsewhere, and a store that is not set up (or closed) answers every
call with its not-initialised value instead of crashing."""

import ctypes
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import MIB, Cluster
from mooncake.store import MooncakeDistributedStore, ReplicateConfig

INVALID = -600


def segments(cluster):
    url = f"http://127.0.0.1:{cluster.metrics}/get_all_segments"
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def until(pred, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(segment="64MB")
    yield c
    c.stop()


def test_dropping_a_contributing_store_unmounts_its_segment_within_a_second(cluster):
    writer = cluster.store()
    a = cluster.store(segment=32 * MIB)
    name = a.get_hostname()
    assert name in segments(cluster)
    on_a = ReplicateConfig()
    on_a.preferred_segment = name
    assert a.put("teardown-k", b"v" * 1000, on_a) == 0
    del a
    gc.collect()
    t = time.time()
    assert until(lambda: name not in segments(cluster), 1.0), segments(cluster)
    assert time.time() - t < 1.0
    # Its object was drained to the other segment rather than lost.
    assert writer.get("teardown-k") == b"v" * 1000
    # Puts from another client never land on the vanished segment.
    for i in range(50):
        assert writer.put(f"after-drop-{i}", b"x" * 4096) == 0
        assert writer.get(f"after-drop-{i}") == b"x" * 4096
    writer.close()


def test_setting_up_again_replaces_the_client_and_unmounts_the_old_segment(cluster):
    s = cluster.store(segment=16 * MIB)
    first = s.get_hostname()
    assert first in segments(cluster)
    assert s.setup("127.0.0.1", cluster.metadata, 16 * MIB, 4 * MIB, "tcp", "",
                   cluster.master_addr) == 0
    assert until(lambda: first not in segments(cluster), 1.0)
    assert s.get_hostname() != first and s.get_hostname() in segments(cluster)
    s.close()


def test_interpreter_exit_without_close_unmounts_the_segment(cluster):
    program = f"""
import sys
from mooncake.store import MooncakeDistributedStore
s = MooncakeDistributedStore()
assert s.setup("127.0.0.1", {cluster.metadata!r}, 16 << 20, 4 << 20, "tcp", "",
               {cluster.master_addr!r}) == 0
print(s.get_hostname(), flush=True)
"""
    r = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    assert name and until(lambda: name not in segments(cluster), 1.0)


def test_a_put_whose_first_holder_is_dead_lands_on_another_segment(cluster):
    # A holder in private memory (so this host's writes must reach it over TCP), killed
    # with SIGKILL: the master still lists its segment until the client TTL.
    dead = cluster.add_service(segment="32MB", extra=["--shared_memory=false"])
    dead.stop(signal.SIGKILL)
    assert dead.segment in segments(cluster)
    s = cluster.store()
    cfg = ReplicateConfig()
    cfg.preferred_segment = dead.segment
    assert s.put("dead-holder-put", b"a" * 5000, cfg) == 0
    assert s.get("dead-holder-put") == b"a" * 5000
    # Batches and zero-copy puts too.
    assert s.put_batch(["dead-b1", "dead-b2"], [b"1" * 100, b"2" * 200], cfg) == 0
    assert s.get_batch(["dead-b1", "dead-b2"]) == [b"1" * 100, b"2" * 200]
    buf = ctypes.create_string_buffer(MIB)
    base = ctypes.addressof(buf)
    ctypes.memmove(base, b"z" * 4096, 4096)
    assert s.register_buffer(base, MIB) == 0
    assert s.put_from("dead-from", base, 4096, cfg) == 0
    assert s.batch_put_from(["dead-bf1", "dead-bf2"], [base, base + 100], [100, 200],
                            cfg) == [0, 0]
    assert s.get("dead-from") == b"z" * 4096 and s.get("dead-bf2") == b"z" * 200
    s.unregister_buffer(base)
    s.close()


def test_eight_threads_share_one_store(cluster):
    s = cluster.store(buffer=64 * MIB)
    errors = []

    def work(t):
        try:
            for i in range(100):
                value = bytes([t, i % 256]) * (MIB // 2)
                rc = s.put(f"thread-{t}-{i}", value)
                if rc != 0:
                    errors.append((t, i, "put", rc))
                    continue
                got = s.get(f"thread-{t}-{i}")
                if got != value:
                    errors.append((t, i, "get", len(got)))
                s.remove(f"thread-{t}-{i}", True)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((t, repr(e)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[:10]
    s.close()


def test_threads_mixing_session_calls_with_others_never_deadlock(cluster):
    s = cluster.store()
    assert s.put("mix-k", b"m" * 4096) == 0
    done = []

    def sessions():
        for i in range(200):
            s.batch_get_session_start(["mix-k"])
            s.batch_put_session_start([f"mix-p{i}"], [16])
            s.batch_put_session_end([f"mix-p{i}"])
            s.batch_get_session_end(["mix-k"])
        done.append(1)

    def others():
        for _ in range(200):
            assert s.get("mix-k") == b"m" * 4096
            s.is_exist("mix-k")
        done.append(1)

    threads = [threading.Thread(target=f, daemon=True) for f in (sessions, others) * 2]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(done) == 4, "a thread is stuck"
    s.close()


def test_no_put_is_acknowledged_into_the_shared_memory_of_a_dead_holder(cluster):
    # The holder's segment is in /dev/shm, which this host's writers copy into directly.
    dead = cluster.add_service(segment="32MB")
    s = cluster.store()
    cfg = ReplicateConfig()
    cfg.preferred_segment = dead.segment
    assert s.put("shm-before", b"b" * 4096, cfg) == 0
    assert [d.segment_name for d in s.get_replica_desc("shm-before")] == [dead.segment]
    dead.stop(signal.SIGKILL)
    assert dead.segment in segments(cluster), "the master has not noticed yet"
    # Puts that would land in the dead holder's memory go elsewhere, all forms.
    assert s.put("shm-after", b"a" * 4096, cfg) == 0
    assert s.put_batch(["shm-b1", "shm-b2"], [b"1" * 100, b"2" * 200], cfg) == 0
    buf = ctypes.create_string_buffer(MIB)
    base = ctypes.addressof(buf)
    ctypes.memmove(base, b"z" * 4096, 4096)
    assert s.register_buffer(base, MIB) == 0
    assert s.put_from("shm-from", base, 4096, cfg) == 0
    assert s.batch_put_from(["shm-bf1", "shm-bf2"], [base, base + 100], [100, 200],
                            cfg) == [0, 0]
    for key in ("shm-after", "shm-b1", "shm-b2", "shm-from", "shm-bf1", "shm-bf2"):
        holders = [d.segment_name for d in s.get_replica_desc(key)]
        assert holders and dead.segment not in holders, (key, holders)
    assert s.get("shm-after") == b"a" * 4096 and s.get("shm-bf2") == b"z" * 200
    s.unregister_buffer(base)
    s.close()
