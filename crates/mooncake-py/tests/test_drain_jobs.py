"""The master's drain-job HTTP API (python-api-2.md §10), against a real master and two
store services: a job moves every object off a segment with move tasks, then marks it
DRAINED; every error row answers with its status and code."""

import json
import time
import urllib.error
import urllib.request

import pytest

from conftest import Cluster
from mooncake.store import ReplicateConfig


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(segment="64MB")
    c.add_service(segment="64MB")
    yield c
    c.stop()


def call(cluster, method, path, body=None):
    url = f"http://127.0.0.1:{cluster.metrics}{path}"
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Content-Type"), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def ok_json(cluster, method, path, body=None):
    status, ctype, text = call(cluster, method, path, body)
    assert status == 200 and ctype == "application/json; charset=utf-8", (status, text)
    return json.loads(text)


def err(cluster, method, path, body=None):
    status, _, text = call(cluster, method, path, body)
    j = json.loads(text)
    assert j["success"] is False
    return status, j["error_code"], j["error_message"]


def test_a_drain_job_moves_every_object_off_its_segment(cluster):
    a, b = cluster.services[0].segment, cluster.services[1].segment
    s = cluster.store()
    on_a = ReplicateConfig()
    on_a.preferred_segment = a
    for i in range(5):
        assert s.put(f"drain-{i}", bytes([i]) * 5000, on_a) == 0
    assert all(d.segment_name == a for i in range(5) for d in s.get_replica_desc(f"drain-{i}"))
    time.sleep(0.6)  # the reads above leased the keys (500 ms)

    job = ok_json(cluster, "POST", "/api/v1/drain_jobs", {"segments": [a], "max_concurrency": 2})
    assert job["status"] == "CREATED" and job["error_code"] == 0
    jid = job["job_id"]
    hi, lo = jid.split("-")
    assert hi.isdigit() and lo.isdigit()
    st = ok_json(cluster, "GET", f"/api/v1/segments/status?segment={a}")
    assert (st["status"], st["status_name"]) in ((2, "DRAINING"), (3, "DRAINED"))
    # A draining segment leaves the list of segments that take new objects.
    status, _, listing = call(cluster, "GET", "/get_all_segments")
    assert a not in listing and b in listing

    deadline = time.time() + 30
    while time.time() < deadline:
        q = ok_json(cluster, "GET", f"/api/v1/drain_jobs/query?job_id={jid}")
        if q["status_name"] in ("SUCCEEDED", "FAILED"):
            break
        time.sleep(0.2)
    assert list(q) == ["success", "job_id", "type", "type_name", "status", "status_name",
                       "created_at_ms_epoch", "last_updated_at_ms_epoch", "segments",
                       "succeeded_units", "failed_units", "blocked_units", "active_units",
                       "migrated_bytes", "message", "error_code", "error_message"]
    assert q["status_name"] == "SUCCEEDED", q
    assert (q["status"], q["message"]) == (3, "Drain job finished successfully")
    assert q["succeeded_units"] == 5 and q["migrated_bytes"] == 5 * 5000
    assert q["segments"] == [a] and q["type_name"] == "DRAIN"
    st = ok_json(cluster, "GET", f"/api/v1/segments/status?segment={a}")
    assert (st["status"], st["status_name"]) == (3, "DRAINED")
    for i in range(5):
        assert s.get(f"drain-{i}") == bytes([i]) * 5000
        assert [d.segment_name for d in s.get_replica_desc(f"drain-{i}")] == [b]
    # Nothing new lands on a drained segment, even when asked for.
    assert s.put("drain-after", b"x", on_a) == 0
    assert [d.segment_name for d in s.get_replica_desc("drain-after")] == [b]
    # A drained segment refuses a new drain.
    assert err(cluster, "POST", "/api/v1/drain_jobs", {"segments": [a]})[:2] == (409, -1010)
    s.close()


def test_drain_job_errors_and_cancel(cluster):
    b = cluster.services[1].segment
    assert err(cluster, "POST", "/api/v1/drain_jobs", b"{nope")[:2] == (400, -600)
    assert err(cluster, "POST", "/api/v1/drain_jobs", b"{nope")[2].startswith(
        "Invalid JSON body: ")
    for body in ({}, {"segments": []}, {"segments": [b, b]},
                 {"segments": [b], "target_segments": [b]},
                 {"segments": [b], "max_concurrency": 0}):
        assert err(cluster, "POST", "/api/v1/drain_jobs", body) == (400, -600, "INVALID_PARAMS")
    assert err(cluster, "POST", "/api/v1/drain_jobs", {"segments": ["nope:1"]}) == (
        404, -101, "SEGMENT_NOT_FOUND")
    assert err(cluster, "GET", "/api/v1/drain_jobs/query") == (
        400, -600, "Missing or invalid job_id")
    assert err(cluster, "GET", "/api/v1/drain_jobs/query?job_id=x") == (
        400, -600, "Missing or invalid job_id")
    assert err(cluster, "GET", "/api/v1/drain_jobs/query?job_id=1-2") == (
        404, -1402, "JOB_NOT_FOUND")
    assert err(cluster, "POST", "/api/v1/drain_jobs/cancel?job_id=1-2")[:2] == (404, -1402)
    assert err(cluster, "GET", "/api/v1/segments/status") == (
        400, -600, "Missing segment query parameter")
    assert err(cluster, "GET", "/api/v1/segments/status?segment=nope:1")[:2] == (404, -101)
    for method, path in (("GET", "/api/v1/drain_jobs"), ("GET", "/api/v1/drain_jobs/cancel"),
                         ("POST", "/api/v1/drain_jobs/query?job_id=1-2")):
        assert call(cluster, method, path)[::2] == (404, "404 Not Found")

    # An empty segment: a job that is cancelled before it runs puts it back in service.
    extra = cluster.add_service(segment="16MB")
    job = ok_json(cluster, "POST", "/api/v1/drain_jobs",
                  {"segments": [extra.segment], "unknown": 1})
    cancel = call(cluster, "POST", f"/api/v1/drain_jobs/cancel?job_id={job['job_id']}")
    if cancel[0] == 200:
        assert json.loads(cancel[2])["status"] == "CANCELED"
        st = ok_json(cluster, "GET", f"/api/v1/segments/status?segment={extra.segment}")
        assert st["status_name"] == "OK"
        # Cancelling again: the job is finished.
        assert err(cluster, "POST",
                   f"/api/v1/drain_jobs/cancel?job_id={job['job_id']}")[:2] == (409, -1010)
    else:
        # The scheduler was quicker: an empty segment drains at once.
        assert cancel[0] == 409
        q = ok_json(cluster, "GET", f"/api/v1/drain_jobs/query?job_id={job['job_id']}")
        assert q["status_name"] == "SUCCEEDED"
