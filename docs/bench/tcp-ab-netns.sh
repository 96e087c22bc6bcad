#!/bin/bash
# usage: tcp-ab-netns.sh BINDIR OUT [store_bench args...]  (master+store in ns tbs, client in ns tbc)
# One store_bench run between two network namespaces (veth, 10.77.0.0/24; needs root and iproute2):
# master and store service in "tbs", the client in "tbc". Remove them with: ip netns del tbs; ip netns del tbc
B=$1; OUT=$2; shift 2
if ! ip netns list | grep -q tbs; then
  ip netns add tbs; ip netns add tbc
  ip link add tbv0 type veth peer name tbv1
  ip link set tbv0 netns tbs; ip link set tbv1 netns tbc
  ip -n tbs addr add 10.77.0.1/24 dev tbv0; ip -n tbc addr add 10.77.0.2/24 dev tbv1
  ip -n tbs link set tbv0 up; ip -n tbc link set tbv1 up
  ip -n tbs link set lo up; ip -n tbc link set lo up
fi
W=$(mktemp -d /tmp/ns.XXXX)
ip netns exec tbs $B/mooncake_master --rpc_port=0 --rpc_address=10.77.0.1 --enable_http_metadata_server=1 --http_metadata_server_host=10.77.0.1 --http_metadata_server_port=0 --metrics_port=0 > $W/m.out 2>$W/m.err &
for i in $(seq 50); do grep -q 'metadata server on' $W/m.out 2>/dev/null && break; sleep 0.1; done
RPC=$(grep 'rpc listening' $W/m.out | awk '{print $NF}')
META=$(grep 'metadata server on' $W/m.out | awk '{print $NF}')
ip netns exec tbs $B/mooncake_store_service --host=10.77.0.1 --port=0 --global_segment_size="3 GB" --master_server_address=$RPC --metadata_server=$META --shared_memory=false > $W/s.out 2>$W/s.err &
for i in $(seq 100); do grep -q 'mounted' $W/s.out $W/s.err 2>/dev/null && break; sleep 0.1; done
ip netns exec tbc $B/store_bench --master_server_address=$RPC --metadata_server=$META --local_hostname=10.77.0.2 --procs 0 --quiet --json $OUT "$@" > $W/b.out 2>&1
pkill -f "mooncake_store_service --host=10.77.0.1"; sleep 0.3; pkill -f "mooncake_master --rpc_port=0 --rpc_address=10.77.0.1"; wait 2>/dev/null
grep -E "MiB|KiB" $W/b.out | head -60
[ -n "$KEEP" ] || rm -rf $W
