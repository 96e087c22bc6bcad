#!/usr/bin/env bash
# usage: ha-mbench.sh single|ha|ha-async  (MB_EXTRA=--concurrency=1 ...)
# master_bench against a plain master or the leader of three HA masters (two standbys).
set -u
MODE=$1
BIN=${BIN:-target/release}
LOG=$(mktemp -d)
. "$(dirname "$0")/ha-common.sh"
PIDS=""
if [ "${MODE%-*}" = ha ]; then
  EXTRA=(); [ "$MODE" = ha-async ] && EXTRA=(--ha_sync_replication=false)
  start_etcd
  start_ha_masters bench "${EXTRA[@]}"
  M=$(metrics_port 1)
  RPC=$(curl -s 127.0.0.1:$M/leader)
else
  $BIN/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --metrics_host=127.0.0.1 --metrics_port=0 > $LOG/m.out 2>/dev/null &
  PIDS="$PIDS $!"
  for i in $(seq 100); do grep -q "rpc listening on" $LOG/m.out && break; sleep 0.1; done
  RPC=$(grep "rpc listening on" $LOG/m.out | awk '{print $NF}')
fi
$BIN/master_bench --master_server_address=$RPC --duration=2 ${MB_EXTRA:-} 2>&1 | grep -v "^\s*$"
# How many calls waited for a standby, and for how long in all (the leader's counters).
[ "${MODE%-*}" = ha ] && for m in $(seq "${HA_MASTERS:-3}"); do
  curl -s 127.0.0.1:$(metrics_port $m)/metrics | grep -E "^master_replication_wait"; done
kill -TERM $PIDS; wait 2>/dev/null
rm -rf $LOG
