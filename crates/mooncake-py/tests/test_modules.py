"""The wheel's helper modules (python-api-2.md §6-§8): ``mooncake.mooncake_config``,
``mooncake.http_metadata_server`` over real sockets, and ``BufferPool`` against a real
master and store service."""

import asyncio
import ctypes
import gc
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref

import pytest

import mooncake
import mooncake.buffer_pool
import mooncake.http_metadata_server as hms
import mooncake.mooncake_config as mc
import mooncake.store
from conftest import MIB, free_port, script
from mooncake.http_metadata_server import KVBootstrapServer, KVPoll
from mooncake.mooncake_config import MooncakeConfig, _parse_bool, _parse_segment_size
from mooncake.store import BufferLease, BufferLeaseView, BufferPool, MooncakeDistributedStore

INVALID = -600


# ---- §8 mooncake.mooncake_config ----

def test_config_module_attributes():
    assert mc.DEFAULT_GLOBAL_SEGMENT_SIZE == 3355443200
    assert mc.DEFAULT_LOCAL_BUFFER_SIZE == 1073741824
    assert mc.logger is logging.getLogger("mooncake.mooncake_config")
    assert mc._SIZE_SUFFIXES == [
        ("kb", 1024), ("mb", 1024 ** 2), ("gb", 1024 ** 3), ("tb", 1024 ** 4),
        ("k", 1024), ("m", 1024 ** 2), ("g", 1024 ** 3), ("t", 1024 ** 4), ("b", 1)]
    assert mc._KNOWN_PROTOCOLS == frozenset(
        "tcp rdma efa nvmeof nvlink musa nvlink_intra hip barex cxl ascend ub ubshmem "
        "maca sunrise_link rpc_only".split())
    assert mc._REQUIRED_NON_EMPTY_FIELDS == (
        "local_hostname", "metadata_server", "master_server_address")
    import dataclasses
    import typing
    assert mc.json is json and mc.logging is logging and mc.os is os
    assert mc.dataclass is dataclasses.dataclass and mc.Optional is typing.Optional


@pytest.mark.parametrize("value, expected", [
    (" 4 GB ", 4294967296), ("1.5gb", 1610612736), ("2k", 2048), ("10 b", 10),
    ("1e3", 1000), ("1e3mb", 1048576000), ("1_000", 1000), ("-1kb", -1024),
    ("1.9999b", 1), ("3tb", 3 * 1024 ** 4), ("7M", 7 * MIB), ("4096", 4096),
    (-5, -5), (3355443200, 3355443200), (3.7, 3), (b"12", 12),
])
def test_parse_segment_size(value, expected):
    assert _parse_segment_size(value) == expected


def test_parse_segment_size_returns_ints_and_bools_unchanged():
    assert _parse_segment_size(True) is True


@pytest.mark.parametrize("value, error, message", [
    ("", ValueError, "Invalid segment size: empty string"),
    ("   ", ValueError, "Invalid segment size: empty string"),
    ("kb", ValueError, "Invalid segment size: missing number before 'kb'"),
    (" MB", ValueError, "Invalid segment size: missing number before 'mb'"),
    ("b", ValueError, "Invalid segment size: missing number before 'b'"),
    ("2KiB", ValueError, "could not convert string to float: '2ki'"),
    ("abc", ValueError, None), ("0x10", ValueError, None), ("nan", ValueError, None),
    ("inf", OverflowError, None), (None, TypeError, None), ([1], TypeError, None),
])
def test_parse_segment_size_errors(value, error, message):
    with pytest.raises(error) as e:
        _parse_segment_size(value)
    if message is not None:
        assert str(e.value) == message


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (1, True), (0, False), (0.0, False), (2.5, True),
    (None, False), ("", False), ("  ", False), ("true", True), (" TRUE ", True),
    ("1", True), ("yes", True), ("On", True), ("enable", True), ("false", False),
    ("0", False), ("no", False), ("OFF", False), ("disable", False), (b"yes", None),
])
def test_parse_bool(value, expected):
    if expected is None:  # str(b"yes") is "b'yes'"
        with pytest.raises(ValueError, match=r"Invalid boolean value: b'yes'"):
            _parse_bool(value)
    else:
        assert _parse_bool(value) is expected


@pytest.mark.parametrize("value, shown", [("2", "'2'"), ([], "[]"), ("maybe", "'maybe'")])
def test_parse_bool_rejects_other_values(value, shown):
    with pytest.raises(ValueError) as e:
        _parse_bool(value)
    assert str(e.value) == f"Invalid boolean value: {shown}"


def config(**overrides):
    fields = dict(local_hostname="host", metadata_server="P2PHANDSHAKE",
                  global_segment_size=0, local_buffer_size=MIB, protocol="tcp",
                  device_name="", master_server_address="127.0.0.1:50051")
    fields.update(overrides)
    return MooncakeConfig(**fields)


def test_config_fields_defaults_and_dataclass_behaviour():
    c = config()
    names = [f.name for f in __import__("dataclasses").fields(MooncakeConfig)]
    assert names == [
        "local_hostname", "metadata_server", "global_segment_size", "local_buffer_size",
        "protocol", "device_name", "master_server_address", "enable_ssd_offload",
        "ssd_offload_path", "tenant_id", "enable_client_http_server", "client_http_port"]
    assert (c.enable_ssd_offload, c.ssd_offload_path, c.tenant_id,
            c.enable_client_http_server, c.client_http_port) == (False, "", "default", False, 9300)
    assert c == config() and c != config(tenant_id="other")
    assert repr(c).startswith("MooncakeConfig(local_hostname='host'")
    c.tenant_id = "mutable"
    assert c.tenant_id == "mutable"


def test_config_protocol_is_normalised_and_unknown_ones_only_warn(caplog):
    assert config(protocol=" TCP ").protocol == "tcp"
    with caplog.at_level(logging.WARNING, logger="mooncake.mooncake_config"):
        assert config(protocol="Carrier-Pigeon").protocol == "carrier-pigeon"
    assert any(r.name == "mooncake.mooncake_config" and r.levelno == logging.WARNING
               for r in caplog.records)


@pytest.mark.parametrize("protocol", ["", "   ", None, 5])
def test_config_invalid_protocol(protocol):
    with pytest.raises(ValueError) as e:
        config(protocol=protocol)
    assert str(e.value) == (f"Invalid protocol: {protocol!r}. Protocol must be a non-empty "
                            "string, e.g. 'tcp' or 'rdma'.")


def test_config_sizes_must_be_non_negative():
    with pytest.raises(ValueError) as e:
        config(global_segment_size=-1)
    assert str(e.value) == "Invalid global_segment_size: -1. Size must be non-negative."
    with pytest.raises(ValueError) as e:
        config(local_buffer_size=-1024)
    assert str(e.value) == "Invalid local_buffer_size: -1024. Size must be non-negative."
    with pytest.raises(TypeError):
        config(local_buffer_size="1GB")


@pytest.mark.parametrize("field", ["local_hostname", "metadata_server", "master_server_address"])
@pytest.mark.parametrize("value", ["", "  ", None, 7])
def test_config_required_fields(field, value):
    with pytest.raises(ValueError) as e:
        config(**{field: value})
    assert str(e.value) == f"Config field '{field}' must be a non-empty string, got {value!r}."


def test_config_other_fields_are_not_validated():
    c = config(device_name=None, ssd_offload_path=None, tenant_id=3,
               enable_ssd_offload="yes", client_http_port="x")
    assert (c.device_name, c.tenant_id, c.enable_ssd_offload, c.client_http_port) == (
        None, 3, "yes", "x")


def write_json(tmp_path, data, name="mooncake.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


REQUIRED = {"local_hostname": "node1", "metadata_server": "http://m:8080/metadata",
            "master_server_address": "m:50051"}


def test_from_file_defaults(tmp_path):
    c = MooncakeConfig.from_file(write_json(tmp_path, REQUIRED))
    assert c == MooncakeConfig(
        local_hostname="node1", metadata_server="http://m:8080/metadata",
        global_segment_size=3355443200, local_buffer_size=1073741824, protocol="tcp",
        device_name="", master_server_address="m:50051", enable_ssd_offload=False,
        ssd_offload_path="", tenant_id="default", enable_client_http_server=False,
        client_http_port=9300)


def test_from_file_values(tmp_path):
    c = MooncakeConfig.from_file(write_json(tmp_path, dict(
        REQUIRED, global_segment_size="4 GB", local_buffer_size=512, protocol="RDMA",
        device_name="mlx5_0", enable_ssd_offload="on", ssd_offload_path=7,
        tenant_id=None, enable_client_http_server=1, client_http_port="9400")))
    assert (c.global_segment_size, c.local_buffer_size, c.protocol, c.device_name) == (
        4 << 30, 512, "rdma", "mlx5_0")
    assert (c.enable_ssd_offload, c.ssd_offload_path, c.tenant_id) == (True, "7", "default")
    assert (c.enable_client_http_server, c.client_http_port) == (True, 9400)
    c = MooncakeConfig.from_file(write_json(tmp_path, dict(
        REQUIRED, ssd_offload_path=None, tenant_id=12, device_name=None)))
    assert (c.ssd_offload_path, c.tenant_id, c.device_name) == ("", "12", None)


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        MooncakeConfig.from_file(str(tmp_path / "missing.json"))
    with pytest.raises(json.JSONDecodeError):
        MooncakeConfig.from_file(write_json(tmp_path, "{not json"))
    for field in REQUIRED:
        data = {k: v for k, v in REQUIRED.items() if k != field}
        with pytest.raises(ValueError) as e:
            MooncakeConfig.from_file(write_json(tmp_path, data))
        assert str(e.value) == f"Missing required config field: {field}"
    with pytest.raises(ValueError, match="Config field 'metadata_server' must be a non-empty"):
        MooncakeConfig.from_file(write_json(tmp_path, dict(REQUIRED, metadata_server=None)))
    with pytest.raises(ValueError, match=r"^Invalid protocol: None\. "):
        MooncakeConfig.from_file(write_json(tmp_path, dict(REQUIRED, protocol=None)))
    with pytest.raises(ValueError, match="Invalid boolean value: 'sometimes'"):
        MooncakeConfig.from_file(
            write_json(tmp_path, dict(REQUIRED, enable_ssd_offload="sometimes")))
    with pytest.raises(ValueError, match="could not convert string to float: '2ki'"):
        MooncakeConfig.from_file(write_json(tmp_path, dict(REQUIRED, local_buffer_size="2KiB")))


ENV_NAMES = [
    "MOONCAKE_CONFIG_PATH", "MOONCAKE_MASTER", "MOONCAKE_LOCAL_HOSTNAME",
    "MOONCAKE_TE_META_DATA_SERVER", "MOONCAKE_GLOBAL_SEGMENT_SIZE",
    "MOONCAKE_LOCAL_BUFFER_SIZE", "MOONCAKE_PROTOCOL", "MOONCAKE_DEVICE",
    "MOONCAKE_OFFLOAD_ENABLED", "MOONCAKE_OFFLOAD_FILE_STORAGE_PATH", "MOONCAKE_TENANT_ID",
    "MOONCAKE_ENABLE_CLIENT_HTTP_SERVER", "MOONCAKE_CLIENT_HTTP_PORT",
]


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_load_from_env_needs_a_file_or_a_master(clean_env):
    with pytest.raises(ValueError) as e:
        MooncakeConfig.load_from_env()
    assert str(e.value) == ("Neither the environment variable 'MOONCAKE_CONFIG_PATH' nor "
                            "'MOONCAKE_MASTER' is set.")
    clean_env.setenv("MOONCAKE_MASTER", "")
    with pytest.raises(ValueError, match="Neither the environment variable"):
        MooncakeConfig.load_from_env()


def test_load_from_env_defaults(clean_env):
    clean_env.setenv("MOONCAKE_MASTER", "10.0.0.1:50051")
    assert MooncakeConfig.load_from_env() == MooncakeConfig(
        local_hostname="localhost", metadata_server="P2PHANDSHAKE",
        global_segment_size=3355443200, local_buffer_size=1073741824, protocol="tcp",
        device_name="", master_server_address="10.0.0.1:50051")


def test_load_from_env_values(clean_env):
    for name, value in {
        "MOONCAKE_MASTER": "m:1", "MOONCAKE_LOCAL_HOSTNAME": "h",
        "MOONCAKE_TE_META_DATA_SERVER": "http://m/metadata",
        "MOONCAKE_GLOBAL_SEGMENT_SIZE": "1.5gb", "MOONCAKE_LOCAL_BUFFER_SIZE": "0",
        "MOONCAKE_PROTOCOL": "TCP", "MOONCAKE_DEVICE": "dev", "MOONCAKE_OFFLOAD_ENABLED": "yes",
        "MOONCAKE_OFFLOAD_FILE_STORAGE_PATH": "/nvme", "MOONCAKE_TENANT_ID": "t1",
        "MOONCAKE_ENABLE_CLIENT_HTTP_SERVER": "1", "MOONCAKE_CLIENT_HTTP_PORT": "9500",
    }.items():
        clean_env.setenv(name, value)
    assert MooncakeConfig.load_from_env() == MooncakeConfig(
        local_hostname="h", metadata_server="http://m/metadata",
        global_segment_size=1610612736, local_buffer_size=0, protocol="tcp",
        device_name="dev", master_server_address="m:1", enable_ssd_offload=True,
        ssd_offload_path="/nvme", tenant_id="t1", enable_client_http_server=True,
        client_http_port=9500)
    clean_env.setenv("MOONCAKE_OFFLOAD_ENABLED", "maybe")
    with pytest.raises(ValueError, match="Invalid boolean value: 'maybe'"):
        MooncakeConfig.load_from_env()
    clean_env.setenv("MOONCAKE_OFFLOAD_ENABLED", "0")
    clean_env.setenv("MOONCAKE_CLIENT_HTTP_PORT", "port")
    with pytest.raises(ValueError):
        MooncakeConfig.load_from_env()


def test_load_from_env_prefers_the_file(clean_env, tmp_path):
    clean_env.setenv("MOONCAKE_MASTER", "ignored:1")
    clean_env.setenv("MOONCAKE_CONFIG_PATH", write_json(tmp_path, REQUIRED))
    assert MooncakeConfig.load_from_env().master_server_address == "m:50051"
    clean_env.setenv("MOONCAKE_CONFIG_PATH", "")  # set, even empty: the file is read
    with pytest.raises(FileNotFoundError):
        MooncakeConfig.load_from_env()


# ---- §6 mooncake.http_metadata_server ----

def wait_accepting(port, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.fixture
def metadata_server():
    port = free_port()
    server = KVBootstrapServer(port, host="127.0.0.1")
    server.run()
    wait_accepting(port)
    yield server
    server.close()


def request(port, method, target, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("Content-Type")
    finally:
        conn.close()


def test_metadata_module_attributes():
    import argparse
    import enum
    for name, value in [("argparse", argparse), ("asyncio", asyncio), ("logging", logging),
                        ("signal", signal), ("sys", sys), ("threading", threading),
                        ("Enum", enum.Enum), ("sleep", time.sleep)]:
        assert getattr(hms, name) is value, name
    assert hasattr(hms, "web")  # aiohttp's module in the C++ wheel; None here
    assert [(m.name, m.value) for m in KVPoll] == [
        ("Failed", 0), ("Bootstrapping", 1), ("WaitingForInput", 2), ("Transferring", 3),
        ("Success", 4)]
    assert issubclass(KVPoll, enum.Enum)
    assert callable(hms.parse_args) and callable(hms.main)


def test_server_lifecycle_and_attributes():
    port = free_port()
    server = KVBootstrapServer(port)
    assert (server.port, server.host, server.store, server.thread) == (port, "0.0.0.0", {}, None)
    assert isinstance(server.lock, asyncio.Lock) and server.app is not None
    assert server.poll() is KVPoll.Failed
    server.close()  # safe before run(); binds nothing
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    server.host = "127.0.0.1"
    thread = server.run()
    assert thread is server.thread and thread.daemon
    wait_accepting(port)
    assert server.poll() is KVPoll.Success
    server.close()
    assert not thread.is_alive()
    assert server.poll() is KVPoll.Failed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_close_right_after_run_stops_the_thread():
    server = KVBootstrapServer(free_port(), host="127.0.0.1")
    thread = server.run()
    server.close()
    thread.join(5)
    assert not thread.is_alive() and server.poll() is KVPoll.Failed


def test_bind_error_is_logged_and_ends_the_thread(caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = KVBootstrapServer(busy.getsockname()[1], host="127.0.0.1")
        with caplog.at_level(logging.ERROR):
            thread = server.run()  # returns at once; the error stays in the thread
            thread.join(10)
        assert not thread.is_alive()
        assert server.poll() is KVPoll.Failed
        assert any(r.levelno == logging.ERROR for r in caplog.records)
        server.close()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "POST", "PATCH"])
@pytest.mark.parametrize("query", ["", "?key=", "?key=%20%20", "?key=+", "?other=1"])
def test_missing_or_blank_key_is_400(metadata_server, method, query):
    status, body, ctype = request(metadata_server.port, method, "/metadata" + query, b"x")
    assert (status, body) == (400, b"metadata key is required")
    assert ctype.startswith("application/json")


def test_put_get_delete(metadata_server):
    port = metadata_server.port
    value = b'\x00\xffnot json {'
    assert request(port, "GET", "/metadata?key=k1")[:2] == (404, b"metadata not found")
    status, body, ctype = request(port, "PUT", "/metadata?key=k1", value)
    assert (status, body) == (200, b"metadata updated") and ctype.startswith("application/json")
    status, body, ctype = request(port, "GET", "/metadata?key=k1")
    assert (status, body) == (200, value) and ctype.startswith("application/json")
    assert request(port, "PUT", "/metadata?key=k1", b"second")[:2] == (200, b"metadata updated")
    assert request(port, "GET", "/metadata?key=k1")[:2] == (200, b"second")
    assert request(port, "PUT", "/metadata?key=empty", b"")[:2] == (200, b"metadata updated")
    assert request(port, "GET", "/metadata?key=empty")[:2] == (200, b"")
    assert metadata_server.store == {"k1": b"second", "empty": b""}
    status, body, ctype = request(port, "DELETE", "/metadata?key=k1")
    assert (status, body) == (200, b"metadata deleted") and ctype.startswith("application/json")
    status, body, ctype = request(port, "DELETE", "/metadata?key=k1")
    assert (status, body) == (404, b"metadata not found") and ctype.startswith("application/json")
    assert request(port, "GET", "/metadata?key=k1")[:2] == (404, b"metadata not found")


def test_keys_are_url_decoded_and_stripped(metadata_server):
    port = metadata_server.port
    assert request(port, "PUT", "/metadata?key=%20a%2Fb%20c%09&x=1", b"v")[0] == 200
    assert "a/b c" in metadata_server.store
    assert request(port, "GET", "/metadata?key=a%2Fb+c")[:2] == (200, b"v")
    assert request(port, "GET", "/metadata?x=2&key=++a/b%20c++")[:2] == (200, b"v")
    assert request(port, "DELETE", "/metadata?key=a/b%20c")[:2] == (200, b"metadata deleted")


def test_rpc_meta_keys_cannot_be_published_twice(metadata_server):
    port = metadata_server.port
    key = "/metadata?key=mooncake%2Frpc_meta%2F127.0.0.1%3A1234"
    assert request(port, "PUT", key, b'{"ip":"a"}')[:2] == (200, b"metadata updated")
    status, body, ctype = request(port, "PUT", key, b'{"ip":"a"}')  # even identical
    assert (status, body) == (400, b"Duplicate rpc_meta key not allowed")
    assert ctype.startswith("application/json")
    assert request(port, "PUT", key, b'{"ip":"b"}')[0] == 400
    assert request(port, "GET", key)[:2] == (200, b'{"ip":"a"}')
    assert request(port, "DELETE", key)[0] == 200
    assert request(port, "PUT", key, b'{"ip":"c"}')[0] == 200


@pytest.mark.parametrize("method", ["POST", "PATCH", "OPTIONS", "PROPFIND"])
def test_other_methods_are_405(metadata_server, method):
    status, body, ctype = request(metadata_server.port, method, "/metadata?key=k", b"x")
    assert (status, body) == (405, b"Method not allowed") and ctype.startswith("application/json")
    assert metadata_server.store == {}


def test_head_is_405_without_a_body(metadata_server):
    assert request(metadata_server.port, "PUT", "/metadata?key=k", b"v")[0] == 200
    status, body, ctype = request(metadata_server.port, "HEAD", "/metadata?key=k")
    assert (status, body) == (405, b"") and ctype.startswith("application/json")


@pytest.mark.parametrize("path", ["/", "/health", "/metadata/", "/metadata/x?key=k",
                                  "/metadatax?key=k", "/Metadata?key=k"])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_other_paths_are_404_text(metadata_server, path, method):
    status, body, ctype = request(metadata_server.port, method, path, b"v")
    assert (status, body) == (404, b"404: Not Found") and ctype.startswith("text/plain")


def test_keep_alive_connection_serves_many_requests(metadata_server):
    conn = http.client.HTTPConnection("127.0.0.1", metadata_server.port, timeout=10)
    conn.connect()
    first = conn.sock
    for i in range(20):
        conn.request("PUT", f"/metadata?key=k{i}", body=b"v%d" % i)
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"metadata updated")
        conn.request("GET", "/metadata", body=b"ignored body")
        r = conn.getresponse()
        assert (r.status, r.read()) == (400, b"metadata key is required")
        conn.request("GET", f"/metadata?key=k{i}")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"v%d" % i)
    assert conn.sock is first  # one connection throughout
    conn.close()


def test_chunked_and_large_bodies(metadata_server):
    port = metadata_server.port
    big = os.urandom(512 * 1024)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("PUT", "/metadata?key=chunked",
                 body=iter([big[:1000], big[1000:300000], big[300000:]]),
                 headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"metadata updated")
    conn.close()
    assert request(port, "GET", "/metadata?key=chunked")[:2] == (200, big)
    # aiohttp's default limit on a request body is 1 MiB.
    status, body, _ = request(port, "PUT", "/metadata?key=huge", b"x" * (MIB + 1))
    assert status == 413 and b"1048576" in body
    assert "huge" not in metadata_server.store


def test_expect_100_continue(metadata_server):
    body = b"y" * 100000
    with socket.create_connection(("127.0.0.1", metadata_server.port), timeout=10) as s:
        s.sendall(b"PUT /metadata?key=expect HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
        interim = s.recv(1024)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        reply = b""
        while b"metadata updated" not in reply:
            chunk = s.recv(65536)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ")
    assert metadata_server.store["expect"] == body


def test_parse_args(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["mooncake_http_metadata_server"])
    args = hms.parse_args()
    assert (args.port, args.host, args.log_level) == (8080, "0.0.0.0", "INFO")
    monkeypatch.setattr(sys, "argv", ["x", "--port", "9", "--host", "::1", "--log-level", "DEBUG"])
    args = hms.parse_args()
    assert (args.port, args.host, args.log_level) == (9, "::1", "DEBUG")
    monkeypatch.setattr(sys, "argv", ["x", "--log-level", "TRACE"])
    with pytest.raises(SystemExit) as e:
        hms.parse_args()
    assert e.value.code == 2


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "mooncake.http_metadata_server"],
    ["mooncake_http_metadata_server"],
])
def test_cli_help(command):
    if command[0] == "mooncake_http_metadata_server":
        command = [script(command[0])]
    r = subprocess.run(command + ["--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for text in ["--port PORT", "--host HOST", "{DEBUG,INFO,WARNING,ERROR,CRITICAL}",
                 "(default: 8080)", "(default: 0.0.0.0)", "(default: INFO)"]:
        assert text in r.stdout, r.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_a_signal_then_exits_0(sig):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "mooncake.http_metadata_server",
                          "--port", str(port), "--host", "127.0.0.1", "--log-level", "DEBUG"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_accepting(port, timeout=30)
        assert request(port, "PUT", "/metadata?key=cli", b"v")[:2] == (200, b"metadata updated")
        assert request(port, "GET", "/metadata?key=cli")[:2] == (200, b"v")
        p.send_signal(sig)
        _, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
        assert "HTTP Metadata Server started on 127.0.0.1:%d" % port in err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


# ---- §7 BufferPool ----

def test_buffer_pool_names_are_one_class():
    from mooncake import buffer_pool
    assert mooncake.BufferPool is BufferPool
    assert mooncake.RegisteredBufferPool is BufferPool
    assert buffer_pool.BufferPool is BufferPool and buffer_pool.RegisteredBufferPool is BufferPool
    assert mooncake.store.RegisteredBufferPool is BufferPool
    assert mooncake.store.RegisteredBufferLease is BufferLease
    assert mooncake.store.RegisteredBufferLeaseView is BufferLeaseView
    assert mooncake.__all__ == ["BufferPool", "RegisteredBufferPool"]
    assert buffer_pool.__all__ == ["BufferPool", "RegisteredBufferPool"]
    assert isinstance(mooncake.__version__, str)
    with pytest.raises(TypeError):
        BufferLease()


class Wrapper:
    """A store wrapper as the C++ pool accepts it: ``_get_pyclient_capsule()`` and the
    buffer registration calls."""

    def __init__(self, store, register_rc=0, capsule=True):
        self.store, self.register_rc, self.capsule = store, register_rc, capsule
        self.registered, self.unregistered = [], []
        self.gate = None  # a threading.Event that register_buffer waits for
        self.entered = threading.Event()  # set when register_buffer is called

    def _get_pyclient_capsule(self):
        return self.store._get_pyclient_capsule() if self.capsule else None

    def register_buffer(self, ptr, size):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        self.registered.append((ptr, size))
        if self.register_rc:
            return self.register_rc
        return self.store.register_buffer(ptr, size)

    def unregister_buffer(self, ptr):
        self.unregistered.append(ptr)
        return self.store.unregister_buffer(ptr)


def expect_error(message, fn, *args, **kwargs):
    with pytest.raises(RuntimeError) as e:
        fn(*args, **kwargs)
    assert str(e.value) == message
    return e.value


NOT_INITIALIZED = "MooncakeDistributedStore is not initialized"


def test_pool_store_argument(cluster, store):
    expect_error(NOT_INITIALIZED, BufferPool, None)
    expect_error("BufferPool store parameter must be a PyClient or store wrapper that "
                 "implements _get_pyclient_capsule()", BufferPool, object())
    fresh = MooncakeDistributedStore()
    assert fresh._get_pyclient_capsule() is None
    expect_error(NOT_INITIALIZED, BufferPool, fresh)
    expect_error(NOT_INITIALIZED, BufferPool, Wrapper(store, capsule=False))
    capsule = store._get_pyclient_capsule()
    assert type(capsule).__name__ == "PyCapsule"
    assert "mooncake.PyClient.shared_ptr" in repr(capsule)
    closed = cluster.store()
    closed.close()
    expect_error(NOT_INITIALIZED, BufferPool, closed)
    no_buffer = cluster.store(buffer=0)
    try:
        expect_error("BufferPool requires a store configured with a local buffer",
                     BufferPool, no_buffer)
    finally:
        no_buffer.close()
    BufferPool(Wrapper(store)).close()  # any object with the capsule method will do


def test_pool_parameters(store):
    both = "min_size_class and alignment must be positive"
    expect_error(both, BufferPool, store, min_size_class=0)
    expect_error(both, BufferPool, store, alignment=0)
    power = "alignment must be a power of two and at least sizeof(void*)"
    for alignment in (3, 4, 12, 4097):
        expect_error(power, BufferPool, store, alignment=alignment)
    for alignment in (8, 64, 4096, 1 << 23):
        BufferPool(store, alignment=alignment).close()
    pool = BufferPool(store, prewarm_size=4096, prewarm_count=3, max_size_class=MIB,
                      min_size_class=1)
    assert pool.prewarm(4096, 2) is None  # a no-op
    pool.close()


def pattern(n, seed=3):
    return bytes((i * 11 + seed) & 0xFF for i in range(n))


def test_lease_buffer_put_from_and_get(store):
    pool = BufferPool(store)
    lease = pool.acquire(4096)
    assert lease.size == 4096 and isinstance(lease.ptr, int) and lease.ptr != 0
    mv = lease.buffer
    assert isinstance(mv, memoryview) and isinstance(mv.obj, BufferLeaseView)
    assert (mv.format, mv.ndim, len(mv), mv.readonly, mv.itemsize) == ("B", 1, 4096, False, 1)
    other = lease.buffer
    assert other is not mv and other.obj is not mv.obj  # a new view on each access
    mv[:] = pattern(4096)
    assert bytes(other) == pattern(4096)  # the same memory
    assert ctypes.string_at(lease.ptr, 16) == pattern(4096)[:16]
    assert store.put_from("lease", lease.ptr, 4096) == 0
    assert store.get("lease") == pattern(4096)
    mv[:5] = b"hello"
    assert store.get_into("lease", lease.ptr, 4095) == INVALID  # too small
    assert store.get_into("lease", lease.ptr, 4096) == 4096
    assert bytes(mv[:5]) == pattern(4096)[:5]
    view = mv.obj
    assert bytes(view.buffer) == pattern(4096) and len(memoryview(view).cast("B")) == 4096
    with pytest.raises(AttributeError):
        view.buffer = None  # read-only property
    with pytest.raises(AttributeError):
        lease.size = 1
    del mv, other, view
    lease.release()
    pool.close()


def test_release_waits_for_exported_views(store):
    pool = BufferPool(store)
    lease = pool.acquire(64)
    ptr = lease.ptr
    mv = lease.buffer
    part = mv[8:16]
    del mv
    expect_error("cannot release buffer while exported views exist", lease.release)
    assert lease.ptr == ptr  # still leased
    del part
    gc.collect()
    lease.release()
    lease.release()  # idempotent
    assert lease.size == 64
    expect_error("buffer lease is closed", getattr, lease, "ptr")
    expect_error("buffer lease is closed", getattr, lease, "buffer")
    assert store.unregister_buffer(ptr) == INVALID  # release unregistered it
    pool.close()


def test_lease_as_context_manager(store):
    pool = BufferPool(store)
    with pool.acquire(100) as lease:
        lease.buffer[:3] = b"abc"
        assert store.put_from("ctx", lease.ptr, 3) == 0
    expect_error("buffer lease is closed", getattr, lease, "ptr")
    assert store.get("ctx") == b"abc"
    with pytest.raises(RuntimeError, match="cannot release buffer while exported views exist"):
        with pool.buffer(10) as lease:
            kept = lease.buffer
    assert lease.ptr  # __exit__ raised, the lease is still held
    del kept
    lease.release()
    pool.close()


def test_capacity_rules(cluster):
    s = cluster.store(buffer=4 * MIB)
    try:
        pool = BufferPool(s)  # max_bytes=0: twice the 4 MiB local buffer
        expect_error("requested buffer size exceeds pool capacity", pool.acquire, 8 * MIB + 1)
        a = pool.acquire(8 * MIB)
        expect_error("buffer pool is exhausted", pool.acquire, 1, block=False)
        a.release()
        zero = pool.acquire(0)  # allowed; one byte is allocated
        assert zero.size == 0 and len(zero.buffer) == 0
        expect_error("buffer pool is exhausted", pool.acquire, 8 * MIB, block=False)
        zero.release()
        pool.close()
        small = BufferPool(s, max_bytes=1)  # at least the local buffer
        with small.acquire(10) as lease:
            assert lease.size == 10
        expect_error("requested buffer size exceeds pool capacity", small.acquire, 4 * MIB + 1)
        small.close()
        large = BufferPool(s, max_bytes=16 * MIB)
        large.acquire(16 * MIB).release()
        large.close()
    finally:
        s.close()


def test_blocking_timeouts_and_max_regions(store):
    pool = BufferPool(store, max_regions=2)
    a, b = pool.acquire(10), pool.acquire(10)
    expect_error("buffer pool is exhausted", pool.acquire, 10, block=False)
    started = time.monotonic()
    expect_error("timed out waiting for buffer", pool.acquire, 10, timeout=0.2)
    assert time.monotonic() - started >= 0.19
    expect_error("timed out waiting for buffer", pool.acquire, 10, timeout=0)
    expect_error("timeout must be non-negative", pool.acquire, 10, timeout=-1)
    # A release from another thread wakes a blocked acquire (which waits without the GIL).
    releaser = threading.Timer(0.2, a.release)
    releaser.start()
    c = pool.acquire(10, timeout=10)
    releaser.join()
    assert c.size == 10
    b.release()
    c.release()
    pool.close()

    nonblocking = BufferPool(store, max_regions=1, block_on_exhaustion=False)
    held = nonblocking.acquire(1)
    expect_error("buffer pool is exhausted", nonblocking.acquire, 1)
    held.release()
    nonblocking.acquire(1).release()
    nonblocking.close()

    timed = BufferPool(store, max_regions=1, default_timeout=0.1)
    held = timed.acquire(1)
    expect_error("timed out waiting for buffer", timed.acquire, 1)
    expect_error("timeout must be non-negative", timed.acquire, 1, timeout=-0.5)
    held.release()
    timed.close()


def test_dropping_a_lease_releases_it(store):
    pool = BufferPool(store, max_regions=1)
    lease = pool.acquire(100)
    ptr = lease.ptr
    del lease
    gc.collect()
    assert store.unregister_buffer(ptr) == INVALID
    pool.acquire(100, block=False).release()
    view = pool.acquire(100).buffer  # the view keeps its lease
    expect_error("buffer pool is exhausted", pool.acquire, 1, block=False)
    view[:2] = b"ok"
    del view
    gc.collect()
    pool.acquire(1, block=False).release()
    pool.close()


def test_close(store):
    pool = BufferPool(store)
    lease = pool.acquire(10)
    expect_error("cannot close buffer pool with active leases", pool.close)
    pool.acquire(10).release()  # still usable
    lease.release()
    pool.close()
    pool.close()  # idempotent
    expect_error("buffer pool is closed", pool.acquire, 10)
    expect_error("buffer pool is closed", pool.buffer, 10)


def test_close_waits_for_an_acquire_in_flight(store):
    wrapper = Wrapper(store)
    pool = BufferPool(wrapper, max_regions=1)
    wrapper.gate = threading.Event()
    errors = []

    def acquire():
        try:
            pool.acquire(10)
        except RuntimeError as e:
            errors.append(str(e))

    acquirer = threading.Thread(target=acquire)
    acquirer.start()
    assert wrapper.entered.wait(10)  # the acquire holds the only region, unregistered yet
    closer = threading.Thread(target=pool.close)
    closer.start()
    deadline = time.monotonic() + 10
    while True:  # close() marks the pool closing, then waits for the acquire
        try:
            pool.acquire(1, block=False)
        except RuntimeError as e:
            if str(e) == "buffer pool is closing":
                break
            assert str(e) == "buffer pool is exhausted", e
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert closer.is_alive()
    wrapper.gate.set()
    acquirer.join(10)
    closer.join(10)
    assert errors == ["buffer pool is closing"]
    assert wrapper.unregistered == [wrapper.registered[0][0]]  # the late region went back
    expect_error("buffer pool is closed", pool.acquire, 1)


def test_overflow_registration_failure(store):
    wrapper = Wrapper(store, register_rc=-1)
    pool = BufferPool(wrapper)
    expect_error("overflow buffer registration failed", pool.acquire, 10)
    assert len(wrapper.registered) == 1
    wrapper.register_rc = 0
    with pool.acquire(10) as lease:
        assert wrapper.registered[-1] == (lease.ptr, 10)
        ptr = lease.ptr
    assert wrapper.unregistered == [ptr]
    pool.close()


def test_pool_keeps_its_store_alive(cluster):
    s = cluster.store()
    ref = weakref.ref(s)
    pool = BufferPool(s)
    del s
    gc.collect()
    assert ref() is not None
    with pool.acquire(8) as lease:
        lease.buffer[:] = b"12345678"
        assert ref().put_from("alive", lease.ptr, 8) == 0
    assert ref().get("alive") == b"12345678"
    pool.close()
    ref().close()
