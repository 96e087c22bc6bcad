#!/bin/bash
# te-netns.sh BINDIR op block batch [secs]   target in tbs, initiator in tbc, http metadata from a master in tbs
# transfer_engine_bench between the namespaces tcp-ab-netns.sh creates (run that once first).
B=$1; OP=$2; BS=$3; BA=$4; S=${5:-5}
W=$(mktemp -d /tmp/te.XXXX)
ip netns exec tbs $B/mooncake_master --rpc_port=0 --rpc_address=10.77.0.1 --enable_http_metadata_server=1 --http_metadata_server_host=10.77.0.1 --http_metadata_server_port=0 --metrics_port=0 > $W/m.out 2>$W/m.err &
for i in $(seq 50); do grep -q 'metadata server on' $W/m.out 2>/dev/null && break; sleep 0.1; done
META=$(grep 'metadata server on' $W/m.out | awk '{print $NF}')
ip netns exec tbs $B/transfer_engine_bench --mode target --metadata_server $META --local_server_name 10.77.0.1:17777 --buffer_size 1073741824 > $W/t.out 2>&1 &
sleep 1.5
ip netns exec tbc $B/transfer_engine_bench --metadata_server $META --local_server_name 10.77.0.2:17778 --segment_id 10.77.0.1:17777 --operation $OP --block_size $BS --batch_size $BA --threads 1 --duration $S --buffer_size 1073741824 2>&1 | tail -2
pkill -f "transfer_engine_bench --mode target"; pkill -f "mooncake_master --rpc_port=0 --rpc_address=10.77.0.1"; wait 2>/dev/null; rm -rf $W
