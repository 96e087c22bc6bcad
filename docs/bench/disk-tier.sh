#!/bin/bash
# Disk-tier measurement: dd baseline and the tier, same disk, same sitting.
set -u
B=${B:-target/release}
W=${W:-/tmp/mooncake-disk-bench}
rm -rf $W; mkdir -p $W
echo "== dd baseline (same filesystem: $(df --output=source $W | tail -1))"
dd if=/dev/urandom of=$W/ddfile bs=1M count=1024 oflag=direct 2>&1 | tail -1
dd if=$W/ddfile of=/dev/null bs=1M iflag=direct 2>&1 | tail -1
dd if=$W/ddfile of=/dev/null bs=1M iflag=direct 2>&1 | tail -1
rm -f $W/ddfile
$B/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --enable_http_metadata_server=1 --http_metadata_server_host=127.0.0.1 --http_metadata_server_port=0 --metrics_host=127.0.0.1 --metrics_port=0 ${MEXTRA:-} > $W/master.out 2> $W/master.err &
MPID=$!
sleep 1
RPC=$(grep 'rpc listening' $W/master.out | awk '{print $NF}')
META=$(grep 'metadata server on' $W/master.out | awk '{print $NF}')
MET=$(grep 'metrics on' $W/master.out | awk '{print $NF}')
$B/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size="256 MB" --master_server_address=$RPC --metadata_server=$META --disk_path=$W/disk --disk_capacity="2 GB" ${EXTRA:-} > $W/ss.out 2> $W/ss.err &
SPID=$!
sleep 2
C="$B/mooncake_store_cli --master_server_address=$RPC --metadata_server=$META --size=1MiB"
echo "== fill 1 GiB of 1 MiB objects into 256 MB memory + 2 GB disk"
/usr/bin/time -f "fill %e s" $C --count=1024 fill
curl -s $MET | grep -E '^master_disk_(demotions_total|only_objects|objects) '
echo "== verify (single gets), then batches of 32"
$C --count=1024 verify | tail -2
curl -s $MET | grep -E '^master_disk_hits_total '
$C --count=1024 verify --batch=32 | tail -2
curl -s $MET | grep -E '^master_disk_hits_total '
sleep 1.5
echo "== read throughput (no byte comparison), batches of 32 and 128, all from disk"
$C --count=1024 read --batch=32
$C --count=1024 read --batch=48
curl -s $MET | grep -E '^master_disk_hits_total '
echo "== two readers at once (halves), batches of 32"
S=$(date +%s.%N)
$C --first=0 --count=512 read --batch=32 &
R1=$!
$C --first=512 --count=512 read --batch=32 &
R2=$!
wait $R1 $R2
E=$(date +%s.%N)
python3 -c "print(f'two readers: 1073741824 bytes in {$E-$S:.3f} s: {1073.741824/($E-$S):.1f} MB/s')"
echo "== four readers at once (quarters), batches of 16"
S=$(date +%s.%N)
P=""
for q in 0 256 512 768; do $C --first=$q --count=256 read --batch=16 & P="$P $!"; done
wait $P
E=$(date +%s.%N)
python3 -c "print(f'four readers: 1073741824 bytes in {$E-$S:.3f} s: {1073.741824/($E-$S):.1f} MB/s')"
curl -s $MET | grep -E '^master_disk_hits_total '
sleep 1.5
echo "== latency: keys 0..199 are disk-only now (first pass loads them), second pass from memory"
$C --count=200 latency
echo "== the same 200 keys again with read --batch=32: now in memory (the client's ceiling)"
$C --count=200 read --batch=32
$C --count=200 read --batch=32
curl -s $MET | grep -E '^master_disk_(hits|corrupt_records|demotion_failures|full)_total '
SM=$(grep 'metrics on' $W/ss.out | awk '{print $NF}')
curl -s $SM | grep -E '^mooncake_disk_(direct_io|read_latency_mean_us|hits_total|read_bytes_total|read_micros_total) '
kill $SPID; sleep 1; kill $MPID
wait
