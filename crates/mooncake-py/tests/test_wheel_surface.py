"""The secondary surface of the C++ wheel (python-api-2.md §1, §3, §5, §11), through a real
master, a real store service and a contributing Python client."""

import time

import pytest

import mooncake.store as ms
from conftest import MIB
from mooncake.store import (MooncakeDistributedStore, QueryTaskResponse, ReplicateConfig,
                            SoftPinAction, TaskStatus, TaskType)

INVALID = -600


def wait_task(store, task_id, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        resp, rc = store.query_task(task_id)
        assert rc == 0
        if resp.status in (TaskStatus.SUCCESS, TaskStatus.FAILED):
            return resp
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish: {resp!r}")


def segments_of(store, key):
    return sorted(d.segment_name for d in store.get_replica_desc(key))


def test_batch_replica_clear(cluster):
    a, b = cluster.store(), cluster.store()
    assert a.batch_replica_clear([]) == []
    assert a.put("brc-1", b"x" * 100) == 0 and a.put("brc-2", b"y") == 0
    # Another instance is not the owner.
    assert b.batch_replica_clear(["brc-1"]) == []
    # A read lease blocks the clear until it runs out (the fixture's lease is 500 ms).
    assert a.is_exist("brc-1") == 1
    assert a.batch_replica_clear(["brc-1"]) == []
    time.sleep(0.7)
    assert a.batch_replica_clear(["brc-1"], "nope:1") == []
    assert a.batch_replica_clear(("brc-1", "brc-1", "", "brc-missing", "brc-2")) == [
        "brc-1", "brc-2"]
    assert a.is_exist("brc-1") == 0 and a.get_size("brc-1") == -704
    with pytest.raises(TypeError):
        a.batch_replica_clear("brc-1")
    # On one segment: the object goes when its only replica was there.
    assert a.put("brc-3", b"z") == 0
    seg = segments_of(a, "brc-3")[0]
    time.sleep(0.7)
    assert a.batch_replica_clear(["brc-3"], seg) == ["brc-3"]
    assert a.is_exist("brc-3") == 0
    a.close()
    assert a.batch_replica_clear(["brc-2"]) == []
    b.close()


def test_remove_by_regex_and_replica_descriptors(store):
    for k in ("rx-a1", "rx-a2", "rx-b1"):
        assert store.put(k, b"v" * 10) == 0
    descs = store.get_replica_desc("rx-a1")
    assert len(descs) == 1 and descs[0].is_memory_replica()
    assert descs[0].status == ms.ReplicaStatus.COMPLETE
    bd = descs[0].get_memory_descriptor().buffer_descriptor
    assert bd.size == 10 and bd.transport_endpoint.startswith("127.0.0.1:")
    assert store.get_replica_desc("rx-missing") == []
    assert sorted(store.batch_get_replica_desc(["rx-a1", "rx-missing", "rx-b1"])) == [
        "rx-a1", "rx-b1"]
    assert store.remove_by_regex("^rx-a", True) == 2
    assert store.is_exist("rx-a1") == 0 and store.is_exist("rx-b1") == 1
    assert store.remove_by_regex("(", True) == INVALID


def test_copy_and_move_tasks(cluster):
    owner = cluster.store(segment=32 * MIB)
    other = cluster.service.segment
    here = owner.get_hostname()
    on_owner = ReplicateConfig()
    on_owner.preferred_segment = here
    assert owner.put("task-k", b"t" * 4096, on_owner) == 0
    assert segments_of(owner, "task-k") == [here]

    task_id, rc = owner.create_copy_task("task-k", [other])
    assert rc == 0 and task_id != (0, 0) and len(task_id) == 2
    resp = wait_task(owner, task_id)
    assert resp.status is TaskStatus.SUCCESS and resp.type is TaskType.REPLICA_COPY
    assert resp.message == "Task completed successfully"
    assert resp.id == task_id and resp.created_at_ms_epoch <= resp.last_updated_at_ms_epoch
    assert repr(resp).startswith(f"QueryTaskResponse(id={task_id[0]}-{task_id[1]}, type=0, "
                                 "status=3, created_at=")
    assert segments_of(owner, "task-k") == sorted([here, other])
    # Copying again to a target that already holds a replica is not an error.
    task_id, rc = owner.create_copy_task("task-k", [other])
    assert rc == 0 and wait_task(owner, task_id).status is TaskStatus.SUCCESS

    assert owner.put("task-m", b"m" * 4096, on_owner) == 0
    task_id, rc = owner.create_move_task("task-m", here, other)
    assert rc == 0 and wait_task(owner, task_id).status is TaskStatus.SUCCESS
    assert segments_of(owner, "task-m") == [other]
    assert owner.get("task-m") == b"m" * 4096

    # Argument checks, in the master's order.
    assert owner.create_copy_task("task-k", []) == ((0, 0), INVALID)
    assert owner.create_copy_task("task-none", [other]) == ((0, 0), -704)
    assert owner.create_copy_task("task-k", [other, "nope:1"]) == ((0, 0), INVALID)
    assert owner.create_move_task("task-none", here, other) == ((0, 0), -704)
    assert owner.create_move_task("task-m", other, other) == ((0, 0), INVALID)
    assert owner.create_move_task("task-m", other, "nope:1") == ((0, 0), INVALID)
    assert owner.create_move_task("task-m", here, other) == ((0, 0), INVALID)
    assert owner.query_task((0, 0)) == (None, -1400)
    assert owner.query_task([0, 0]) == (None, -1400)
    for bad in ((1,), (-1, 2), "x", None):
        with pytest.raises(TypeError):
            owner.query_task(bad)
    owner.close()
    assert owner.create_copy_task("task-k", [other]) == ((0, 0), INVALID)
    assert owner.query_task((0, 0)) == (None, INVALID)


def test_task_enums_and_query_task_response():
    assert TaskStatus(3) is TaskStatus.SUCCESS and int(TaskStatus.SUCCESS) == 3
    assert (TaskStatus.SUCCESS == 3) is False
    assert str(TaskStatus.FAILED) == "TaskStatus.FAILED"
    assert list(TaskStatus.__members__) == ["PENDING", "PROCESSING", "SUCCESS", "FAILED"]
    assert ms.PROCESSING is TaskStatus.PROCESSING and ms.FAILED is TaskStatus.FAILED
    assert ms.COMPLETE is ms.ReplicaStatus.COMPLETE and ms.REPLICA_MOVE is TaskType.REPLICA_MOVE
    assert not hasattr(ms, "ENABLE")
    r = QueryTaskResponse()
    assert repr(r) == ('QueryTaskResponse(id=0-0, type=0, status=0, created_at=0, '
                       'last_updated_at=0, assigned_client=0-0, message="")')
    with pytest.raises(AttributeError):
        r.message = "x"


def test_replicate_config_attributes():
    with pytest.raises(TypeError):
        ReplicateConfig(replica_num=2)
    c = ReplicateConfig()
    assert str(c) == (
        "ReplicateConfig: { replica_num: 1, nof_replica_num: 0, dfs_replica_num: 0, "
        "soft_pin_action: PRESERVE, soft_pin_ttl_ms: default, with_hard_pin: 0, "
        "preferred_segments: [], preferred_nof_segments: [], prefer_alloc_in_same_node: 0, "
        "data_type: UNKNOWN }")
    for attr in ("soft_pin_ttl", "with_soft_pin"):
        with pytest.raises(AttributeError):
            getattr(c, attr)
        with pytest.raises(AttributeError):
            setattr(c, attr, 1)
    c.replica_num = 2 ** 64 - 1
    c.replica_num = True
    assert c.replica_num == 1
    for bad in (-1, 2 ** 64, 1.5, None):
        with pytest.raises(TypeError, match="incompatible function arguments"):
            c.replica_num = bad
    for bad in (1, 5, None):
        with pytest.raises(TypeError):
            c.soft_pin_action = bad
    for bad in (-1, 2 ** 64, 10 ** 30, 1.5, "10"):
        with pytest.raises(TypeError):
            c.soft_pin_ttl_ms = bad
    c.soft_pin_ttl_ms = True
    assert c.soft_pin_ttl_ms == 1
    c.with_hard_pin = None
    assert c.with_hard_pin is False
    with pytest.raises(TypeError):
        c.with_hard_pin = "x"
    with pytest.raises(TypeError):
        c.preferred_segment = None
    for bad in ("a:1", None, [1]):
        with pytest.raises(TypeError):
            c.preferred_segments = bad
    c.preferred_segments = ("a:1", "b:2")
    c.preferred_segments.append("c:3")
    assert c.preferred_segments == ["a:1", "b:2"]
    with pytest.raises(TypeError):
        c.data_type = 1
    c.data_type = ms.ObjectDataType.KVCACHE
    c.soft_pin_action = SoftPinAction.ENABLE
    c.soft_pin_ttl_ms = 1000
    c.with_hard_pin = True
    c.preferred_segment = "p:1"
    c.group_ids = ["g1"]
    assert str(c) == (
        "ReplicateConfig: { replica_num: 1, nof_replica_num: 0, dfs_replica_num: 0, "
        "soft_pin_action: ENABLE, soft_pin_ttl_ms: 1000, with_hard_pin: 1, "
        "preferred_segments: [a:1, b:2], preferred_segment (deprecated): p:1, "
        "preferred_nof_segments: [], prefer_alloc_in_same_node: 0, data_type: KVCACHE, "
        "group_ids: [g1] }")


def test_soft_pin_ttl_and_replica_counts_on_put(store):
    def put(key, **attrs):
        c = ReplicateConfig()
        for k, v in attrs.items():
            setattr(c, k, v)
        return store.put(key, b"x", c)

    E, P, D = SoftPinAction.ENABLE, SoftPinAction.PRESERVE, SoftPinAction.DISABLE
    assert put("sp1", soft_pin_action=E) == 0
    assert put("sp2", soft_pin_action=E, soft_pin_ttl_ms=5000) == 0
    assert put("sp3", soft_pin_action=E, soft_pin_ttl_ms=86_400_000) == 0
    assert put("sp4", soft_pin_action=E, soft_pin_ttl_ms=0) == 0
    assert put("sp5", soft_pin_action=E, soft_pin_ttl_ms=86_400_001) == INVALID
    assert put("sp6", soft_pin_action=E, soft_pin_ttl_ms=2 ** 64 - 1) == INVALID
    assert put("sp7", soft_pin_action=P, soft_pin_ttl_ms=0) == INVALID
    assert put("sp8", soft_pin_action=D, soft_pin_ttl_ms=10) == INVALID
    assert put("sp9", soft_pin_action=D) == 0
    assert put("rn0", replica_num=0) == INVALID
    assert put("nof", nof_replica_num=1) == INVALID
    assert put("dfs2", dfs_replica_num=2) == INVALID
    assert put("dfs1", dfs_replica_num=1) == -1601
    # A replica count far above the segments: best effort, and the master keeps serving.
    assert put("huge", replica_num=2 ** 40) == 0
    assert store.get("huge") == b"x"


def test_every_method_of_a_closed_store_returns_its_not_initialised_value(cluster):
    s = cluster.store()
    assert s.close() == 0
    for t in (s, MooncakeDistributedStore()):
        assert t.health_check() == 1 and t.close() == 0
        assert t.get("k") == b"" and t.get_batch(["a", "b"]) == [b""]
        assert t.get_buffer("k") is None and t.batch_get_buffer(["k"]) == [None]
        for call in (lambda: t.put("k", b"v"), lambda: t.upsert("k", b"v"),
                     lambda: t.put_parts("k", b"a"), lambda: t.upsert_parts("k", b"a"),
                     lambda: t.put_batch(["k"], [b"v"]), lambda: t.upsert_batch(["k"], [b"v"]),
                     lambda: t.put_from("k", 4096, 1), lambda: t.upsert_from("k", 4096, 1),
                     lambda: t.put_from_with_metadata("k", 4096, 8192, 1, 1),
                     lambda: t.get_into("k", 4096, 1), lambda: t.is_exist("k"),
                     lambda: t.get_size("k"), lambda: t.remove("k"),
                     lambda: t.remove_all(), lambda: t.remove_by_regex("."),
                     lambda: t.register_buffer(4096, 1), lambda: t.unregister_buffer(4096)):
            assert call() == INVALID
        assert t.batch_upsert_from(["a", "b"], [1, 2], [1, 1]) == [INVALID, INVALID]
        assert t.batch_put_from(["a"], [1], [1]) == [INVALID]
        assert t.batch_get_into(["a"], [1], [1]) == [INVALID]
        assert t.batch_is_exist(["a"]) == [INVALID] and t.batch_remove(["a"]) == [INVALID]
        assert t.batch_put_from_multi_buffers(["a"], [[1]], [[1]]) == []
        assert t.batch_get_into_multi_buffers(["a"], [[1]], [[1]]) == [INVALID]
        assert t.batch_replica_clear(["a"]) == [] and t.get_replica_desc("a") == []
        assert t.batch_get_replica_desc(["a"]) == {}
        assert t.create_copy_task("a", ["b"]) == ((0, 0), INVALID)
        assert t.create_move_task("a", "b", "c") == ((0, 0), INVALID)
        assert t.query_task((1, 2)) == (None, INVALID)
        assert t.get_hostname() == "" and t.get_offload_rpc_read_count() == 0
        assert t._get_pyclient_capsule() is None
        assert t.batch_get_session_start(["a"]) == [] and t.batch_get_session_end(["a"]) == -1
        assert t.batch_put_session_start(["a"], [1]) == []
        assert t.batch_put_session_end(["a"]) == [] and t.batch_put_session_revoke(["a"]) == []
        assert t.batch_get_into_multi_buffer_ranges(["a"], [[1]], [[1]], [[0]]) == []
        assert t.batch_put_from_multi_buffer_ranges(["a"], [[1]], [[1]], [[0]]) == []
        assert t.get_into_ranges([4096], [["a"]], [[[0]]], [[[0]]], [[[1]]]) == [[[INVALID]]]
        assert t.mount_segment("/nonexistent", MIB) == {"ret": -1, "segment_ids": []}
        assert t.allocate_and_mount_segment(MIB) == {"ret": -1, "segment_ids": [],
                                                     "allocated_size": 0}
        assert t.unmount_segment(["1-2"]) == -1 and t.unmount_and_free_segment(["1-2"]) == -1
        assert t.unmount_local_disk_segment() == -1


def test_extra_segments_hold_objects_until_unmounted(cluster, tmp_path):
    import urllib.request

    def listed():
        url = f"http://127.0.0.1:{cluster.metrics}/get_all_segments"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    s = cluster.store()  # a pure client: no setup-time segment
    name = s.get_hostname()
    path = tmp_path / "segment.bin"
    path.write_bytes(b"\0" * (32 * MIB))
    m = s.mount_segment(str(path), 16 * MIB, 4096)
    assert m["ret"] == 0 and len(m["segment_ids"]) == 1
    hi, lo = m["segment_ids"][0].split("-")
    assert hi.isdigit() and lo.isdigit()
    assert name in listed()
    here = ReplicateConfig()
    here.preferred_segment = name
    assert s.put("extra-k", b"e" * 10_000, here) == 0
    assert segments_of(s, "extra-k") == [name]
    assert s.get("extra-k") == b"e" * 10_000
    # The bytes are in the file, at the mapping's offset.
    with open(path, "rb") as f:
        assert b"e" * 10_000 in f.read()
    # The master keeps a client that only mounted later alive (it pings from then on).
    time.sleep(1.5)
    assert s.get("extra-k") == b"e" * 10_000
    assert s.unmount_segment(m["segment_ids"]) == 0
    assert s.unmount_segment(m["segment_ids"]) == -1
    assert s.is_exist("extra-k") == 0 and name not in listed()
    assert s.mount_segment(str(path), 16 * MIB, 100)["ret"] == -1  # offset not page-aligned
    assert s.mount_segment(str(path), 64 * MIB)["ret"] == -1  # beyond the file
    assert s.mount_segment(str(tmp_path / "missing"), MIB) == {"ret": -1, "segment_ids": []}

    a = s.allocate_and_mount_segment(MIB)
    assert a["ret"] == 0 and a["allocated_size"] == 16 * MIB and len(a["segment_ids"]) == 1
    assert s.put("extra-a", b"a" * 100, here) == 0 and s.get("extra-a") == b"a" * 100
    assert s.unmount_and_free_segment(a["segment_ids"]) == 0
    assert s.unmount_and_free_segment(a["segment_ids"]) == -1
    assert s.unmount_segment(["garbage"]) == -1 and s.unmount_segment([]) == 0
    assert s.unmount_local_disk_segment() == 0
    # close() unmounts what is still mounted.
    b = s.allocate_and_mount_segment(MIB)
    assert b["ret"] == 0 and name in listed()
    s.close()
    assert name not in listed()
    assert s.allocate_and_mount_segment(MIB) == {"ret": -1, "segment_ids": [],
                                                 "allocated_size": 0}
    assert s.unmount_segment(b["segment_ids"]) == -1 and s.unmount_local_disk_segment() == -1
