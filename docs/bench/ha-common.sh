# Sourced by the ha-*.sh scripts: free ports, and starting etcd and HA masters.
# Each start_* appends the process id to PIDS; files go to $LOG.
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# start_etcd: a one-member etcd on free ports; sets ETCD (host:port).
start_etcd() {
  local c p
  c=$(port); p=$(port)
  ETCD_UNSUPPORTED_ARCH=$(uname -m) etcd --name=b --data-dir="$LOG/etcd" \
    --listen-client-urls=http://127.0.0.1:$c --advertise-client-urls=http://127.0.0.1:$c \
    --listen-peer-urls=http://127.0.0.1:$p --initial-advertise-peer-urls=http://127.0.0.1:$p \
    --initial-cluster=b=http://127.0.0.1:$p --log-level=warn > "$LOG/etcd.out" 2>&1 &
  PIDS="${PIDS:-} $!"
  ETCD=127.0.0.1:$c
  sleep 1
}

# start_ha_masters CLUSTER [extra master flags]: $HA_MASTERS (3) masters electing through $ETCD;
# their logs are $LOG/m1.out .. m3.out (stdout) and .err; sets MASTER_PIDS.
start_ha_masters() {
  local cluster=$1 m; shift
  MASTER_PIDS=()
  for m in $(seq "${HA_MASTERS:-3}"); do
    "$BIN/mooncake_master" --enable_ha --ha_backend_connstring=etcd://$ETCD --cluster_id=$cluster \
      --rpc_port=0 --rpc_address=127.0.0.1 --metrics_host=127.0.0.1 --metrics_port=0 "$@" \
      > "$LOG/m$m.out" 2> "$LOG/m$m.err" &
    MASTER_PIDS+=($!)
    PIDS="${PIDS:-} $!"
  done
  sleep 3
}

# metrics_port N: the metrics port master N announced.
metrics_port() { grep -h "metrics on" "$LOG/m$1.out" | sed 's/.*127.0.0.1:\([0-9]*\).*/\1/'; }
