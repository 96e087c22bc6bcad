"""Console scripts: ``mooncake_master``, ``mooncake_store_service`` and
``mooncake_client`` run the same code as the Rust binaries, with the same flags."""

import os
import sys

from mooncake import _mooncake


def _argv(name):
    return [name] + sys.argv[1:]


def master():
    """``mooncake_master``: the master (object metadata, allocation, leases, eviction)."""
    sys.exit(_mooncake.run_master(_argv("mooncake_master")))


def store_service():
    """``mooncake_store_service`` / ``mooncake_client``: contributes a memory segment."""
    name = os.path.basename(sys.argv[0]) or "mooncake_store_service"
    sys.exit(_mooncake.run_store_service(_argv(name)))


if __name__ == "__main__":
    master()
