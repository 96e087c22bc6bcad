#!/bin/bash
# The disk-tier workload of docs/bench/disk_tier_py.py against this repository's master
# and store service (release build in $B) with our wheel's Python client in venv $V: the
# same 256 MB segment and 2 GB tier as docs/bench/disk-tier-cpp.sh runs with the C++ wheel.
set -u
B=${B:-target/release}
V=${V:?venv with our wheel installed}
W=${W:-/tmp/mooncake-disk-bench-py}
rm -rf $W; mkdir -p $W
$B/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --enable_http_metadata_server=1 \
  --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 \
  --metrics_host=127.0.0.1 --metrics_port=0 > $W/master.out 2> $W/master.err &
MPID=$!
sleep 1
RPC=$(grep 'rpc listening' $W/master.out | awk '{print $NF}')
META=$(grep 'metadata server on' $W/master.out | awk '{print $NF}')
MET=$(grep 'metrics on' $W/master.out | awk '{print $NF}')
$B/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size="256 MB" \
  --master_server_address=$RPC --metadata_server=$META --disk_path=$W/disk \
  --disk_capacity="2 GB" ${EXTRA:-} > $W/ss.out 2> $W/ss.err &
SPID=$!
sleep 2
$V/bin/python docs/bench/disk_tier_py.py --master $RPC --metadata $META --drop-cache $W/disk ${PYEXTRA:-}
echo "== disk: $(du -sh $W/disk | cut -f1), records: $(ls $W/disk/objects | wc -l)"
curl -s $MET | grep -E '^master_disk_(demotions|hits|demotion_failures|full)_total '
kill $SPID; sleep 1; kill $MPID
wait
