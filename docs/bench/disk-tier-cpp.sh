#!/bin/bash
# The disk-tier workload against the C++ wheel's offload (mooncake-transfer-engine-non-cuda
# 0.3.13.post1 in venv $V): a master with --enable_offload (and --offload_on_evict unless
# CPP_WRITE_THROUGH=1), one mooncake_client with a 256 MB segment and --enable_offload over
# a 2 GB directory, and docs/bench/disk_tier_py.py as the pure client.
set -u
V=${V:-/work/wt-disk-venv}
W=${W:-/tmp/mooncake-disk-bench-cpp}
MP=${MP:-50751}
rm -rf $W; mkdir -p $W/disk
export MC_TCP_BIND_ADDRESS=127.0.0.1
ON_EVICT=--offload_on_evict=true
[ "${CPP_WRITE_THROUGH:-0}" = 1 ] && ON_EVICT=
$V/bin/mooncake_master --rpc_port=$MP --rpc_address=127.0.0.1 --enable_http_metadata_server=1 \
  --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=$((MP+1)) \
  --metrics_host=127.0.0.1 --metrics_port=$((MP+2)) --enable_offload=true $ON_EVICT ${MEXTRA:-} \
  --logtostderr > $W/master.log 2>&1 &
MPID=$!
sleep 2
MOONCAKE_OFFLOAD_FILE_STORAGE_PATH=$W/disk MOONCAKE_OFFLOAD_TOTAL_SIZE_LIMIT_BYTES=2147483648 \
  $V/bin/mooncake_client --host=127.0.0.1 --port=$((MP+3)) --global_segment_size="256 MB" \
  --local_buffer_size=0 --protocol=tcp --master_server_address=127.0.0.1:$MP \
  --metadata_server=http://127.0.0.1:$((MP+1))/metadata --enable_offload=true ${CEXTRA:-} \
  > $W/client.log 2>&1 &
CPID=$!
sleep 4
$V/bin/python docs/bench/disk_tier_py.py --master 127.0.0.1:$MP \
  --metadata http://127.0.0.1:$((MP+1))/metadata --drop-cache $W/disk ${PYEXTRA:-}
echo "== disk: $(du -sh $W/disk | cut -f1), files: $(find $W/disk -type f | wc -l)"
curl -s http://127.0.0.1:$((MP+2))/metrics | grep -iE '^master_.*(offload|disk|evict)[a-z_]* ' | head -20
kill $CPID; sleep 1; kill $MPID
wait
