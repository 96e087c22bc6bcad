"""The disk tier from Python: `setup(..., enable_ssd_offload=True, ssd_offload_path=...)`
on a client that contributes memory, and a store service's tier seen through
`get_replica_desc`; real master and store service processes."""

import os
import shutil
import tempfile

from conftest import MIB, Cluster
from mooncake.store import MooncakeDistributedStore


def value(i, n=MIB):
    return bytes(((i * 31 + j) & 0xFF) for j in range(0, n, 4096)) * 4096


def test_ssd_offload_keeps_more_than_memory_and_reports_the_tier():
    disk = tempfile.mkdtemp(prefix="mooncake-py-disk-")
    # Only the Python client contributes memory: 16 MB, and a 256 MB disk tier.
    cluster = Cluster(segment="16MB")
    try:
        cluster.services[0].stop()
        cluster.services.clear()
        s = MooncakeDistributedStore()
        rc = s.setup("127.0.0.1", cluster.metadata, 16 * MIB, 64 * MIB, "tcp", "",
                     cluster.master_addr, enable_ssd_offload=True, ssd_offload_path=disk)
        assert rc == 0, rc
        for i in range(48):
            assert s.put(f"d{i}", value(i)) == 0, i
        assert os.listdir(os.path.join(disk, "objects")), "nothing was demoted"
        for i in range(48):
            assert s.get(f"d{i}") == value(i), i
        assert s.get_offload_rpc_read_count() > 0
        # The first key is on disk (and loaded back into memory by the read): both tiers.
        descs = s.get_replica_desc("d0")
        assert any(d.is_local_disk_replica() for d in descs), descs
        assert all(d.is_memory_replica() or d.is_local_disk_replica() for d in descs)
        local = [d for d in descs if d.is_local_disk_replica()][0]
        assert local.get_local_disk_descriptor().object_size == MIB
        s.close()
    finally:
        cluster.stop()
        shutil.rmtree(disk, ignore_errors=True)


def test_ssd_offload_with_a_bad_path_fails_setup():
    cluster = Cluster(segment="16MB")
    try:
        s = MooncakeDistributedStore()
        rc = s.setup("127.0.0.1", cluster.metadata, 16 * MIB, 16 * MIB, "tcp", "",
                     cluster.master_addr, enable_ssd_offload=True,
                     ssd_offload_path="/proc/no-such-dir/x")
        assert rc != 0
    finally:
        cluster.stop()
