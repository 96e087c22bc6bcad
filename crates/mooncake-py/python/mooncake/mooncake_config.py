"""``mooncake.mooncake_config``: the configuration SGLang, vLLM and ``mooncake_store_service``
load, read as the C++ wheel reads it: a JSON file named by ``MOONCAKE_CONFIG_PATH``, or
``MOONCAKE_*`` environment variables when no file is named.

Sizes may be integers or strings with a binary suffix (``"4 GB"``, ``"512mb"``, ``"1.5g"``);
booleans may be JSON booleans, numbers or words (``"true"``, ``"off"``, ``"enable"``).
The protocol is lower-cased; an unknown one is kept with a warning, since the transfer
engine decides what it supports.
"""

import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

DEFAULT_GLOBAL_SEGMENT_SIZE = 3355443200  # 3.125 GiB
DEFAULT_LOCAL_BUFFER_SIZE = 1073741824  # 1 GiB

logger = logging.getLogger("mooncake.mooncake_config")

# Longer suffixes come first: "4kb" must match "kb", not "b".
_SIZE_SUFFIXES = [
    ("kb", 1024),
    ("mb", 1024 ** 2),
    ("gb", 1024 ** 3),
    ("tb", 1024 ** 4),
    ("k", 1024),
    ("m", 1024 ** 2),
    ("g", 1024 ** 3),
    ("t", 1024 ** 4),
    ("b", 1),
]

_KNOWN_PROTOCOLS = frozenset({
    "tcp", "rdma", "efa", "nvmeof", "nvlink", "musa", "nvlink_intra", "hip", "barex",
    "cxl", "ascend", "ub", "ubshmem", "maca", "sunrise_link", "rpc_only",
})

_REQUIRED_NON_EMPTY_FIELDS = ("local_hostname", "metadata_server", "master_server_address")

_TRUE_WORDS = ("true", "1", "yes", "on", "enable")
_FALSE_WORDS = ("false", "0", "no", "off", "disable")


def _parse_segment_size(value) -> int:
    """A size in bytes from an int (returned unchanged, bools included), a string such as
    ``" 4 GB "`` or ``"1e3mb"`` (binary units, truncated to an int), or anything ``int()``
    accepts. There is no sign check: ``"-1kb"`` is -1024."""
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return int(value)
    text = value.strip().lower()
    if not text:
        raise ValueError("Invalid segment size: empty string")
    for suffix, multiplier in _SIZE_SUFFIXES:
        if text.endswith(suffix):
            number = text[: -len(suffix)].strip()
            if not number:
                raise ValueError(f"Invalid segment size: missing number before '{suffix}'")
            return int(float(number) * multiplier)
    return int(float(text))


def _parse_bool(value) -> bool:
    """A config boolean that may arrive as a bool, a number, ``None`` or a word.

    ``bool("false")`` would be true, so the usual words are recognised and anything else
    is rejected rather than silently read as false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if value is None:
        return False
    text = str(value).strip().lower()
    if not text:
        return False
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    raise ValueError(f"Invalid boolean value: {value!r}")


@dataclass
class MooncakeConfig:
    """What ``MooncakeDistributedStore.setup`` needs, from a JSON file or the environment.

    ``protocol`` is stripped and lower-cased; sizes must be non-negative; the hostname,
    metadata server and master address must be non-blank strings. The other fields are
    taken as given.
    """

    local_hostname: str
    metadata_server: str
    global_segment_size: int
    local_buffer_size: int
    protocol: str
    device_name: Optional[str]
    master_server_address: str
    enable_ssd_offload: bool = False
    ssd_offload_path: str = ""
    tenant_id: str = "default"
    enable_client_http_server: bool = False
    client_http_port: int = 9300

    def __post_init__(self):
        if not isinstance(self.protocol, str) or not self.protocol.strip():
            raise ValueError(
                f"Invalid protocol: {self.protocol!r}. Protocol must be a non-empty string, "
                "e.g. 'tcp' or 'rdma'.")
        self.protocol = self.protocol.strip().lower()
        if self.protocol not in _KNOWN_PROTOCOLS:
            logger.warning("Unknown protocol %r; it is kept, but the transfer engine may "
                           "reject it (known: %s)", self.protocol,
                           ", ".join(sorted(_KNOWN_PROTOCOLS)))
        for name in ("global_segment_size", "local_buffer_size"):
            size = getattr(self, name)
            if size < 0:
                raise ValueError(f"Invalid {name}: {size}. Size must be non-negative.")
        for name in _REQUIRED_NON_EMPTY_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"Config field '{name}' must be a non-empty string, got {value!r}.")

    @staticmethod
    def from_file(file_path: str) -> "MooncakeConfig":
        """Reads a JSON config file. The required keys must be present; a present ``null``
        then fails validation."""
        with open(file_path) as f:
            config = json.load(f)
        for name in _REQUIRED_NON_EMPTY_FIELDS:
            if name not in config:
                raise ValueError(f"Missing required config field: {name}")
        ssd_offload_path = config.get("ssd_offload_path")
        tenant_id = config.get("tenant_id")
        return MooncakeConfig(
            local_hostname=config.get("local_hostname"),
            metadata_server=config.get("metadata_server"),
            global_segment_size=_parse_segment_size(
                config.get("global_segment_size", DEFAULT_GLOBAL_SEGMENT_SIZE)),
            local_buffer_size=_parse_segment_size(
                config.get("local_buffer_size", DEFAULT_LOCAL_BUFFER_SIZE)),
            protocol=config.get("protocol", "tcp"),
            device_name=config.get("device_name", ""),
            master_server_address=config.get("master_server_address"),
            enable_ssd_offload=_parse_bool(config.get("enable_ssd_offload", False)),
            ssd_offload_path="" if ssd_offload_path is None else str(ssd_offload_path),
            tenant_id="default" if tenant_id is None else str(tenant_id),
            enable_client_http_server=_parse_bool(
                config.get("enable_client_http_server", False)),
            client_http_port=int(config.get("client_http_port", 9300)),
        )

    @staticmethod
    def load_from_env() -> "MooncakeConfig":
        """``from_file($MOONCAKE_CONFIG_PATH)`` when that variable is set (even to ``""``),
        else the ``MOONCAKE_*`` variables, of which ``MOONCAKE_MASTER`` is required."""
        config_path = os.getenv("MOONCAKE_CONFIG_PATH")
        if config_path is not None:
            return MooncakeConfig.from_file(config_path)
        if not os.getenv("MOONCAKE_MASTER"):
            raise ValueError(
                "Neither the environment variable 'MOONCAKE_CONFIG_PATH' nor "
                "'MOONCAKE_MASTER' is set.")
        return MooncakeConfig(
            local_hostname=os.getenv("MOONCAKE_LOCAL_HOSTNAME", "localhost"),
            metadata_server=os.getenv("MOONCAKE_TE_META_DATA_SERVER", "P2PHANDSHAKE"),
            global_segment_size=_parse_segment_size(
                os.getenv("MOONCAKE_GLOBAL_SEGMENT_SIZE", DEFAULT_GLOBAL_SEGMENT_SIZE)),
            local_buffer_size=_parse_segment_size(
                os.getenv("MOONCAKE_LOCAL_BUFFER_SIZE", DEFAULT_LOCAL_BUFFER_SIZE)),
            protocol=os.getenv("MOONCAKE_PROTOCOL", "tcp"),
            device_name=os.getenv("MOONCAKE_DEVICE", ""),
            master_server_address=os.getenv("MOONCAKE_MASTER"),
            enable_ssd_offload=_parse_bool(os.getenv("MOONCAKE_OFFLOAD_ENABLED", "false")),
            ssd_offload_path=os.getenv("MOONCAKE_OFFLOAD_FILE_STORAGE_PATH", ""),
            tenant_id=os.getenv("MOONCAKE_TENANT_ID", "default"),
            enable_client_http_server=_parse_bool(
                os.getenv("MOONCAKE_ENABLE_CLIENT_HTTP_SERVER", "false")),
            client_http_port=int(os.getenv("MOONCAKE_CLIENT_HTTP_PORT", 9300)),
        )
