#!/bin/bash
# The disk tier's read throughput against the device, two builds alternating in one
# sitting: each round runs dd (O_DIRECT, 1 MiB blocks) on the tier's filesystem, then each
# build's master + store service (256 MB segment, 2 GB tier) with 1 GiB of 1 MiB objects,
# two passes of `read --batch=32` (every object from disk), p50 of single gets (disk, then
# memory), and the holder's per-stage load times. Usage (from the workspace root):
#   OLD=/path/to/old/bins NEW=target/release ROUNDS=3 flock -x /tmp/cpu.lock docs/bench/disk-tier-ab.sh
set -u
OLD=${OLD:?directory of the old build\'s binaries}
NEW=${NEW:-target/release}
ROUNDS=${ROUNDS:-2}
W=${W:-/tmp/mooncake-disk-ab}
rm -rf $W; mkdir -p $W
dd if=/dev/urandom of=$W/ddfile bs=1M count=1024 oflag=direct status=none
dd_read() {
    dd if=$W/ddfile of=/dev/null bs=1M iflag=direct 2>&1 | tail -1 | awk '{print $(NF-1), $NF}'
}
tier() {
    local B=$1 L=$2 D=$W/run
    rm -rf $D; mkdir -p $D
    $B/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --enable_http_metadata_server=1 \
        --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 \
        --metrics_host=127.0.0.1 --metrics_port=0 > $D/master.out 2> $D/master.err &
    local MPID=$!
    sleep 1
    local RPC=$(grep 'rpc listening' $D/master.out | awk '{print $NF}')
    local META=$(grep 'metadata server on' $D/master.out | awk '{print $NF}')
    $B/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size="256 MB" \
        --master_server_address=$RPC --metadata_server=$META --disk_path=$D/disk \
        --disk_capacity="2 GB" ${EXTRA:-} > $D/ss.out 2> $D/ss.err &
    local SPID=$!
    sleep 2
    local C="$B/mooncake_store_cli --master_server_address=$RPC --metadata_server=$META --size=1MiB"
    $C --count=1024 fill > /dev/null || echo "$L: fill failed"
    $C --count=1024 verify --batch=32 | tail -1 | sed "s/^/$L: /"
    for pass in 1 2 3; do
        $C --count=1024 read --batch=32 | sed "s/^/$L: batch 32 pass $pass: /"
    done
    sleep 1.5
    $C --count=200 latency | sed "s/^/$L: latency /"
    local SM=$(grep 'metrics on' $D/ss.out | awk '{print $NF}')
    curl -s $SM | grep -E '^mooncake_disk_(hits_total|read_micros_total|read_(io|verify|copy)_micros_total|loads_in_place_total) ' \
        | tr '\n' ' ' | sed "s/^/$L: holder /"; echo
    kill $SPID; sleep 1; kill $MPID
    wait $SPID $MPID 2> /dev/null
}
for r in $(seq 1 $ROUNDS); do
    echo "== round $r"
    echo "dd: $(dd_read)"
    tier $OLD old
    echo "dd: $(dd_read)"
    tier $NEW new
    echo "dd: $(dd_read)"
done
rm -rf $W
