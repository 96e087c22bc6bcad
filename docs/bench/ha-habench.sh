#!/usr/bin/env bash
# usage: ha-habench.sh single|ha|ha-async OUT_JSON [store_bench flags]
# etcd + three HA masters (or one plain master), a store service with its segment in
# private memory (TCP path), store_bench as a pure client through etcd://; prints /ha_status.
# HA_DIRECT=1: the client gets the leader's address instead of etcd://. CPU_REPORT=1: prints
# the CPU seconds of every process during the bench.
set -u
MODE=$1; OUT=$2; shift 2
BIN=${BIN:-target/release}
LOG=$(mktemp -d)
. "$(dirname "$0")/ha-common.sh"
$BIN/http_metadata_server --host=127.0.0.1 --port=0 > $LOG/meta.out 2>/dev/null &
PIDS="$!"
for i in $(seq 100); do grep -q "listening on" $LOG/meta.out && break; sleep 0.1; done
META=$(grep "listening on" $LOG/meta.out | awk '{print $NF}')
if [ "${MODE%-*}" = ha ]; then
  EXTRA=""; [ "$MODE" = ha-async ] && EXTRA="--ha_sync_replication=false"
  start_etcd
  start_ha_masters bench $EXTRA
  RPC=etcd://$ETCD
  if [ -n "${HA_DIRECT:-}" ]; then RPC=$(curl -s 127.0.0.1:$(metrics_port 1)/leader); for m in 2 3; do [ -z "$RPC" ] && RPC=$(curl -s 127.0.0.1:$(metrics_port $m)/leader); done; fi
else
  $BIN/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --metrics_host=127.0.0.1 --metrics_port=0 > $LOG/m.out 2>/dev/null &
  PIDS="$PIDS $!"
  for i in $(seq 100); do grep -q "rpc listening on" $LOG/m.out && break; sleep 0.1; done
  RPC=$(grep "rpc listening on" $LOG/m.out | awk '{print $NF}')
fi
$BIN/mooncake_store_service --host=127.0.0.1 --port=0 --global_segment_size="2 GB" --cluster_id=bench \
  --master_server_address=$RPC --metadata_server=$META --shared_memory=false > $LOG/store.out 2>/dev/null &
SP=$!
for i in $(seq 200); do grep -q "mooncake_store_service segment" $LOG/store.out && break; sleep 0.1; done
# CPU seconds and context switches (all threads) of each process.
cpu() { for p in "$@"; do printf "%s %s %s\n" $p "$(awk '{printf "%.2f", ($14+$15)/100}' /proc/$p/stat 2>/dev/null)" \
  "$(cat /proc/$p/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n+=$2} END {print n+0}')"; done; }
[ -n "${CPU_REPORT:-}" ] && cpu $PIDS $SP > $LOG/cpu0
/usr/bin/time -f "store_bench cpu_s %U %S" -o $LOG/bench.cpu $BIN/store_bench --master_server_address=$RPC --cluster_id=bench --metadata_server=$META --json=$OUT --quiet "$@" > $LOG/bench.out 2>&1 || { echo "bench failed"; grep -v "^  " $LOG/bench.out | head -20; }
[ "${MODE%-*}" = ha ] && for m in $(seq "${HA_MASTERS:-3}"); do curl -s 127.0.0.1:$(metrics_port $m)/ha_status; echo
  curl -s 127.0.0.1:$(metrics_port $m)/metrics | grep -E "^master_replication_wait"; done
if [ -n "${CPU_REPORT:-}" ]; then
  # CPU seconds each process spent during the bench (etcd, metadata server, masters, store).
  cpu $PIDS $SP > $LOG/cpu1
  echo "cpu seconds (context switches) during the bench:"; paste -d" " $LOG/cpu0 $LOG/cpu1 | while read p a x _ b y; do
    echo "  $(tr '\0' ' ' < /proc/$p/cmdline | awk '{print $1}' | xargs basename) $p: $(echo "$b - $a" | bc) ($((y - x)))"; done
  cat $LOG/bench.cpu
fi
kill -TERM $SP; sleep 0.5; kill -TERM $PIDS; wait 2>/dev/null
rm -rf $LOG
