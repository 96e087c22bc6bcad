#!/usr/bin/env bash
# 3 HA masters, fill N objects, wait until the standbys hold them, SIGKILL the leader, time the takeover.
set -u
N=${1:-1000000}
BIN=${BIN:-target/release}
LOG=$(mktemp -d)
. "$(dirname "$0")/ha-common.sh"
start_etcd
start_ha_masters f
declare -A MP MM
for m in 1 2 3; do MP[$m]=${MASTER_PIDS[$((m-1))]}; MM[$m]=$(metrics_port $m); done
L=""; for m in 1 2 3; do [ "$(curl -s 127.0.0.1:${MM[$m]}/role)" = leader ] && L=$m; done
RPC=$(curl -s 127.0.0.1:${MM[$L]}/leader)
echo "leader m$L at $RPC"
$BIN/master_bench --master_server_address=$RPC --fill=$N --hold_secs=120 &
sleep 1; kill -0 $! || { cat $LOG/m*.err | tail -30; exit 1; }
BP=$!
while ! curl -s 127.0.0.1:${MM[$L]}/metrics | grep -q "^master_key_count $N"; do sleep 0.5; done
for m in 1 2 3; do [ $m = $L ] && continue; while ! curl -s 127.0.0.1:${MM[$m]}/metrics | grep -q "^master_ha_standby_objects $N"; do sleep 0.2; done; done
echo "standbys hold $N objects; RSS leader $(ps -o rss= -p ${MP[$L]}) KiB, standbys $(for m in 1 2 3; do [ $m = $L ] || printf "%s " $(ps -o rss= -p ${MP[$m]}); done)KiB"
T0=$(date +%s.%N)
kill -9 ${MP[$L]}
NL=""
while [ -z "$NL" ]; do for m in 1 2 3; do [ $m = $L ] && continue; [ "$(curl -s -m 1 127.0.0.1:${MM[$m]}/role)" = leader ] && NL=$m; done; sleep 0.01; done
T1=$(date +%s.%N)
echo "takeover: m$NL serves after $(python3 -c "print(round($T1-$T0,3))") s"
curl -s 127.0.0.1:${MM[$NL]}/metrics | grep -E "^master_restored_key_count|^master_restore_duration_seconds|^master_ha_last_takeover_seconds"
kill $BP $PIDS 2>/dev/null; wait 2>/dev/null
rm -rf $LOG
