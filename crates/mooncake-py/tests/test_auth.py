"""The cluster's token (`--auth_token`, `MOONCAKE_AUTH_TOKEN`, `auth_token` in the setup
dict): a master, store service and metadata server started with one admit only clients
that present it; everyone else gets an error and not one byte."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from conftest import MIB, Cluster


@pytest.fixture(scope="module")
def secured():
    c = Cluster(token="s3cr3t")
    yield c
    c.stop()


def setup_with(cluster, **extra):
    from mooncake.store import MooncakeDistributedStore
    s = MooncakeDistributedStore()
    config = {"local_hostname": "127.0.0.1", "metadata_server": cluster.metadata,
              "master_server_address": cluster.master_addr, "global_segment_size": 0,
              "local_buffer_size": 16 * MIB, **extra}
    return s, s.setup(config)


def test_the_right_token_gets_in_and_moves_bytes(secured, monkeypatch):
    monkeypatch.delenv("MOONCAKE_AUTH_TOKEN", raising=False)
    s, rc = setup_with(secured, auth_token="s3cr3t")
    assert rc == 0
    assert s.put("auth-key", b"v" * MIB) == 0
    assert s.get("auth-key") == b"v" * MIB
    s.close()


def test_a_missing_or_wrong_token_is_refused(secured, monkeypatch):
    monkeypatch.delenv("MOONCAKE_AUTH_TOKEN", raising=False)
    for extra in ({}, {"auth_token": "wrong"}):
        s, rc = setup_with(secured, **extra)
        assert rc == -900, (extra, rc)  # RPC_FAIL: the master refused the connection
        assert s.get("auth-key") == b""
    s, rc = setup_with(secured, auth_token="has space")
    assert rc == -600


def test_the_token_comes_from_the_environment(secured, monkeypatch):
    monkeypatch.setenv("MOONCAKE_AUTH_TOKEN", "s3cr3t")
    s, rc = setup_with(secured)
    assert rc == 0
    s.close()


def test_the_refusal_says_authentication_failed(secured):
    code = ("from mooncake.store import MooncakeDistributedStore as S\n"
            f"print('rc', S().setup('127.0.0.1', {secured.metadata!r}, 0, 1 << 20, 'tcp', '',"
            f" {secured.master_addr!r}))\n")
    env = {k: v for k, v in os.environ.items() if k != "MOONCAKE_AUTH_TOKEN"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, env=env)
    assert "rc -900" in r.stdout, r.stdout + r.stderr
    assert "authentication failed" in r.stderr, r.stderr


def test_standalone_clients_need_the_token(secured):
    address = f"127.0.0.1:{secured.service.port}"
    code = ("from mooncake.store import MooncakeDistributedStore as S\n"
            "s = S()\n"
            f"rc = s.setup_dummy(4 << 20, 4 << 20, {address!r})\n"
            "print('rc', rc)\n"
            "if rc == 0: assert s.put('dummy-auth', b'x' * 100) == 0 and s.get('dummy-auth') == b'x' * 100\n")
    for token, want in (("", "rc -900"), ("wrong", "rc -900"), ("s3cr3t", "rc 0")):
        env = dict(os.environ, MOONCAKE_AUTH_TOKEN=token)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0 and want in r.stdout, (token, r.stdout, r.stderr)
        if token != "s3cr3t":
            assert "authentication failed" in r.stderr, r.stderr


def http(url, method="GET", body=None, token=None):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_metadata_writes_and_the_admin_api_need_the_token(secured):
    url = f"{secured.metadata}?key=auth-test"
    status, body = http(url, "PUT", b"{}")
    assert status == 401 and "authentication failed" in body
    assert http(url)[0] == 404, "nothing was written"
    assert http(url, "PUT", b"{}", token="s3cr3t")[0] == 200
    assert http(url, "DELETE", token="wrong")[0] == 401
    assert http(url, "DELETE", token="s3cr3t")[0] == 200
    admin = f"http://127.0.0.1:{secured.metrics}/api/v1/drain_jobs"
    status, body = http(admin, "POST", json.dumps({"segments": ["x"]}).encode())
    assert status == 401 and "authentication failed" in body
    status, _ = http(admin, "POST", json.dumps({"segments": ["nope"]}).encode(), token="s3cr3t")
    assert status != 401
