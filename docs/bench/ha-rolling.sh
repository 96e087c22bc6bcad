#!/usr/bin/env bash
# usage: ha-rolling.sh OLD_BIN_DIR NEW_BIN_DIR [N]
# A rolling upgrade, both ways: a leader of one build with two standbys of the other, N
# objects put, the leader SIGKILLed; a standby of the other build must take over with
# every object. Run once with OLD leading NEW standbys, once the reverse. Exits non-zero
# on any loss.
set -u
OLD=$1; NEW=$2; N=${3:-100000}
LOG=$(mktemp -d)
BIN=$OLD
. "$(dirname "$0")/ha-common.sh"
start_etcd
rc=0
one_way() { # LEADER_BIN STANDBY_BIN CLUSTER
  local lb=$1 sb=$2 cl=$3 pids=() mm=() m role lead=-1 nl=-1
  for m in 0 1 2; do
    local b=$sb; [ $m = 0 ] && b=$lb
    "$b/mooncake_master" --enable_ha --ha_backend_connstring=etcd://$ETCD --cluster_id=$cl \
      --rpc_port=0 --rpc_address=127.0.0.1 --metrics_host=127.0.0.1 --metrics_port=0 \
      > "$LOG/$cl-$m.out" 2> "$LOG/$cl-$m.err" &
    pids+=($!)
    for i in $(seq 100); do grep -q "metrics on" "$LOG/$cl-$m.out" && break; sleep 0.1; done
    mm+=($(grep -h "metrics on" "$LOG/$cl-$m.out" | sed 's/.*127.0.0.1:\([0-9]*\).*/\1/'))
    # The first master leads before the others start.
    [ $m = 0 ] && for i in $(seq 100); do [ "$(curl -s 127.0.0.1:${mm[0]}/role)" = leader ] && break; sleep 0.1; done
  done
  [ "$(curl -s 127.0.0.1:${mm[0]}/role)" = leader ] || { echo "FAIL: $lb did not lead"; return 1; }
  local rpc=$(curl -s 127.0.0.1:${mm[0]}/leader)
  "$NEW/master_bench" --master_server_address=$rpc --fill=$N --hold_secs=60 > "$LOG/$cl-fill.out" 2>&1 &
  local bp=$!
  for m in 1 2; do for i in $(seq 600); do
    curl -s 127.0.0.1:${mm[$m]}/metrics | grep -q "^master_ha_standby_objects $N" && break; sleep 0.1; done; done
  kill -9 ${pids[0]}
  for i in $(seq 200); do for m in 1 2; do [ "$(curl -s -m 1 127.0.0.1:${mm[$m]}/role)" = leader ] && nl=$m; done; [ $nl != -1 ] && break; sleep 0.05; done
  local got=$(curl -s 127.0.0.1:${mm[$nl]}/metrics | grep "^master_restored_key_count" | awk '{print $2}')
  echo "leader $(basename $(dirname $lb))/$(basename $lb) -> standby $(basename $(dirname $sb))/$(basename $sb): new leader restored ${got:-none} of $N objects"
  kill $bp ${pids[1]} ${pids[2]} 2>/dev/null; wait $bp ${pids[1]} ${pids[2]} 2>/dev/null
  [ "${got:-0}" = "$N" ]
}
one_way "$OLD" "$NEW" up || rc=1
one_way "$NEW" "$OLD" down || rc=1
kill $PIDS 2>/dev/null; wait 2>/dev/null
rm -rf $LOG
exit $rc
