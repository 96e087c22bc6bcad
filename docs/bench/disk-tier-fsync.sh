#!/bin/bash
# What --disk_fsync costs: the same fill of 1 GiB of 1 MiB objects into a 256 MB segment
# with a 2 GB tier (807 or so demotions, the writer held to the disk's write speed by
# back-pressure), without and with the flag, alternating ROUNDS times.
set -u
B=${B:-target/release}
ROUNDS=${ROUNDS:-2}
W=${W:-/tmp/mooncake-disk-fsync}
one() {
    local F=$1 D=$W/run
    rm -rf $D; mkdir -p $D
    $B/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --enable_http_metadata_server=1 \
        --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 \
        --metrics_host=127.0.0.1 --metrics_port=0 > $D/master.out 2> $D/master.err &
    local MPID=$!
    sleep 1
    local RPC=$(grep 'rpc listening' $D/master.out | awk '{print $NF}')
    local META=$(grep 'metadata server on' $D/master.out | awk '{print $NF}')
    local MET=$(grep 'metrics on' $D/master.out | awk '{print $NF}')
    $B/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size="256 MB" \
        --master_server_address=$RPC --metadata_server=$META --disk_path=$D/disk \
        --disk_capacity="2 GB" --disk_fsync=$F > $D/ss.out 2> $D/ss.err &
    local SPID=$!
    sleep 2
    local C="$B/mooncake_store_cli --master_server_address=$RPC --metadata_server=$META --size=1MiB"
    local S=$(date +%s.%N)
    $C --count=1024 fill > /dev/null
    local E=$(date +%s.%N)
    sleep 3
    local DEM=$(curl -s $MET | awk '/^master_disk_demotions_total /{print $2}')
    local SM=$(grep 'metrics on' $D/ss.out | awk '{print $NF}')
    local WB=$(curl -s $SM | awk '/^mooncake_disk_write_bytes_total /{print $2}')
    python3 -c "print(f'--disk_fsync=$F: fill {$E-$S:.2f} s ({1073.741824/($E-$S):.0f} MB/s), $DEM demotions, {$WB/1e6:.0f} MB written')"
    kill $SPID; sleep 1; kill $MPID
    wait $SPID $MPID 2> /dev/null
}
for r in $(seq 1 $ROUNDS); do one false; one true; done
rm -rf $W
