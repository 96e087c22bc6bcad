#!/bin/bash
B=${B:-target/release}; W=${W:-/tmp/mooncake-disk-bench-without}; rm -rf $W; mkdir -p $W
$B/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --enable_http_metadata_server=1 --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 --metrics_host=127.0.0.1 --metrics_port=0 > $W/master.out 2> $W/master.err &
MPID=$!; sleep 1
RPC=$(grep 'rpc listening' $W/master.out | awk '{print $NF}'); META=$(grep 'metadata server on' $W/master.out | awk '{print $NF}')
$B/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size="256 MB" --master_server_address=$RPC --metadata_server=$META > $W/ss.out 2> $W/ss.err &
SPID=$!; sleep 2
C="$B/mooncake_store_cli --master_server_address=$RPC --metadata_server=$META --size=1MiB"
$C --count=1024 fill
$C --count=1024 verify > $W/verify.txt; echo "failed: $(grep -c '^cli-' $W/verify.txt) of 1024"; tail -1 $W/verify.txt
kill $SPID; sleep 1; kill $MPID; wait
