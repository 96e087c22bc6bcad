#!/bin/bash
# --disk_write_through end to end: fill 1 GiB of 1 MiB objects into a 256 MB segment with a
# 2 GB tier (timed), SIGKILL the store service, restart it on the same directory, and
# read everything back: with write-through every object is on disk and survives the loss
# of the holder's memory; without it only the demoted ones do. Alternates ROUNDS times.
set -u
B=${B:-target/release}
ROUNDS=${ROUNDS:-1}
W=${W:-/tmp/mooncake-disk-wt}
one() {
    local WT=$1 D=$W/run
    rm -rf $D; mkdir -p $D
    $B/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --enable_http_metadata_server=1 \
        --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 \
        --metrics_host=127.0.0.1 --metrics_port=0 --client_ttl=2 \
        --disk_write_through=$WT > $D/master.out 2> $D/master.err &
    local MPID=$!
    sleep 1
    local RPC=$(grep 'rpc listening' $D/master.out | awk '{print $NF}')
    local META=$(grep 'metadata server on' $D/master.out | awk '{print $NF}')
    local MET=$(grep 'metrics on' $D/master.out | awk '{print $NF}')
    local SS="$B/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size=256MB
        --master_server_address=$RPC --metadata_server=$META --disk_path=$D/disk --disk_capacity=2GB"
    $SS > $D/ss.out 2> $D/ss.err &
    local SPID=$!
    sleep 2
    local C="$B/mooncake_store_cli --master_server_address=$RPC --metadata_server=$META --size=1MiB"
    local S=$(date +%s.%N)
    $C --count=1024 fill > /dev/null
    local E=$(date +%s.%N)
    sleep 3
    local M=$(curl -s $MET | grep -E '^master_disk_(demotions|write_throughs)_total ' | tr '\n' ' ')
    python3 -c "print(f'--disk_write_through=$WT: fill {$E-$S:.2f} s ({1073.741824/($E-$S):.0f} MB/s); $M')"
    kill -9 $SPID; wait $SPID 2> /dev/null
    sleep 4
    $SS > $D/ss2.out 2> $D/ss2.err &
    SPID=$!
    sleep 3
    echo "  after SIGKILL and restart: $($C --count=1024 verify 2>&1 | grep -E '^verified|could not be read' | head -1)"
    kill $SPID; sleep 1; kill $MPID
    wait $SPID $MPID 2> /dev/null
}
for r in $(seq 1 $ROUNDS); do one false; one true; done
rm -rf $W
