#!/bin/bash
# usage: tcp-ab-loopback.sh BINDIR OUT [store_bench args...]
# One store_bench run over loopback TCP (segment in private memory) with the binaries of BINDIR.
# A/B: alternate two BINDIRs, then docs/bench/ab-best.py OUT_A OUT_B ROUNDS (files OUT-<round>.json).
B=$1; OUT=$2; shift 2
W=$(mktemp -d /tmp/lo.XXXX)
$B/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --enable_http_metadata_server=1 --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 --metrics_port=0 > $W/m.out 2>$W/m.err &
MP=$!
for i in $(seq 50); do grep -q 'metadata server on' $W/m.out 2>/dev/null && break; sleep 0.1; done
RPC=$(grep 'rpc listening' $W/m.out | awk '{print $NF}')
META=$(grep 'metadata server on' $W/m.out | awk '{print $NF}')
$B/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size="3 GB" --master_server_address=$RPC --metadata_server=$META --shared_memory=false > $W/s.out 2>$W/s.err &
SP=$!
for i in $(seq 100); do grep -q mounted $W/s.out $W/s.err 2>/dev/null && break; sleep 0.1; done
$B/store_bench --master_server_address=$RPC --metadata_server=$META --procs 0 --quiet --json $OUT "$@" > $W/b.out 2>&1
kill $SP; sleep 0.3; kill $MP; wait 2>/dev/null
cat $W/b.out | grep -E "MiB|KiB" | head -60
[ -n "$KEEP" ] || rm -rf $W
