#!/usr/bin/env bash
# 3 HA masters, fill N objects, wait until the standbys hold them, SIGKILL the leader, time the takeover.
set -u
N=${1:-1000000}
BIN=${BIN:-target/release}
LOG=$(mktemp -d)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
C=$(port); P=$(port)
ETCD_UNSUPPORTED_ARCH=$(uname -m) etcd --name=b --data-dir=$LOG/etcd --listen-client-urls=http://127.0.0.1:$C --advertise-client-urls=http://127.0.0.1:$C --listen-peer-urls=http://127.0.0.1:$P --initial-advertise-peer-urls=http://127.0.0.1:$P --initial-cluster=b=http://127.0.0.1:$P --log-level=warn > $LOG/etcd.out 2>&1 &
EP=$!
sleep 1
declare -A MP MM
for m in 1 2 3; do
  $BIN/mooncake_master --enable_ha --ha_backend_connstring=etcd://127.0.0.1:$C --cluster_id=f --rpc_port=0 --rpc_address=127.0.0.1 --metrics_host=127.0.0.1 --metrics_port=0 > $LOG/m$m.out 2>$LOG/m$m.err &
  MP[$m]=$!
done
sleep 3
for m in 1 2 3; do MM[$m]=$(grep "metrics on" $LOG/m$m.out | sed 's/.*127.0.0.1:\([0-9]*\).*/\1/'); done
L=""; for m in 1 2 3; do [ "$(curl -s 127.0.0.1:${MM[$m]}/role)" = leader ] && L=$m; done
RPC=$(curl -s 127.0.0.1:${MM[$L]}/leader)
echo "leader m$L at $RPC"
$BIN/master_bench --master_server_address=$RPC --fill=$N --hold_secs=120 &
sleep 1; kill -0 $! || { cat $LOG/m*.err | tail -30; exit 1; }
BP=$!
while ! curl -s 127.0.0.1:${MM[$L]}/metrics | grep -q "^master_key_count $N"; do sleep 0.5; done
for m in 1 2 3; do [ $m = $L ] && continue; while ! curl -s 127.0.0.1:${MM[$m]}/metrics | grep -q "^master_ha_standby_objects $N"; do sleep 0.2; done; done
echo "standbys hold $N objects; RSS leader $(ps -o rss= -p ${MP[$L]}) KiB"
T0=$(date +%s.%N)
kill -9 ${MP[$L]}
NL=""
while [ -z "$NL" ]; do for m in 1 2 3; do [ $m = $L ] && continue; [ "$(curl -s -m 1 127.0.0.1:${MM[$m]}/role)" = leader ] && NL=$m; done; sleep 0.01; done
T1=$(date +%s.%N)
echo "takeover: m$NL serves after $(python3 -c "print(round($T1-$T0,3))") s"
curl -s 127.0.0.1:${MM[$NL]}/metrics | grep -E "^master_restored_key_count|^master_restore_duration_seconds|^master_ha_last_takeover_seconds"
kill $BP ${MP[1]} ${MP[2]} ${MP[3]} $EP 2>/dev/null; wait 2>/dev/null
rm -rf $LOG
