#!/usr/bin/env bash
# usage: ha-mbench.sh single|ha|ha-async  (MB_EXTRA=--concurrency=1 ...)
# master_bench against a plain master or the leader of three HA masters (two standbys).
set -u
MODE=$1
BIN=${BIN:-target/release}
LOG=$(mktemp -d)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PIDS=""
if [ "${MODE%-*}" = ha ]; then
  EXTRA=""; [ "$MODE" = ha-async ] && EXTRA="--ha_sync_replication=false"
  C=$(port); P=$(port)
  ETCD_UNSUPPORTED_ARCH=$(uname -m) etcd --name=b --data-dir=$LOG/etcd --listen-client-urls=http://127.0.0.1:$C --advertise-client-urls=http://127.0.0.1:$C --listen-peer-urls=http://127.0.0.1:$P --initial-advertise-peer-urls=http://127.0.0.1:$P --initial-cluster=b=http://127.0.0.1:$P --log-level=warn > $LOG/etcd.out 2>&1 &
  PIDS="$PIDS $!"
  sleep 1
  for m in 1 2 3; do
    $BIN/mooncake_master --enable_ha --ha_backend_connstring=etcd://127.0.0.1:$C --cluster_id=bench --rpc_port=0 --rpc_address=127.0.0.1 --metrics_host=127.0.0.1 --metrics_port=0 $EXTRA > $LOG/m$m.out 2>/dev/null &
    PIDS="$PIDS $!"
  done
  sleep 2.5
  M=$(grep -h "metrics on" $LOG/m1.out | sed 's/.*127.0.0.1:\([0-9]*\).*/\1/')
  RPC=$(curl -s 127.0.0.1:$M/leader)
else
  $BIN/mooncake_master --rpc_port=0 --rpc_address=127.0.0.1 --metrics_host=127.0.0.1 --metrics_port=0 > $LOG/m.out 2>/dev/null &
  PIDS="$PIDS $!"
  for i in $(seq 100); do grep -q "rpc listening on" $LOG/m.out && break; sleep 0.1; done
  RPC=$(grep "rpc listening on" $LOG/m.out | awk '{print $NF}')
fi
$BIN/master_bench --master_server_address=$RPC --duration=2 ${MB_EXTRA:-} 2>&1 | grep -v "^\s*$"
kill -TERM $PIDS; wait 2>/dev/null
rm -rf $LOG
