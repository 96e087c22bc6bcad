#!/usr/bin/env bash
# Re-record compat_expected.json from the C++ wheel mooncake-transfer-engine-non-cuda==0.3.13.post1:
# its own mooncake_master and store service (mooncake_client, 256MB) on free 127.0.0.1 ports,
# started with the same flags as the `cluster` fixture in conftest.py, then compat_program.py.
#
#   bash crates/mooncake-py/tests/record_compat.sh [output.json]
#
# Default output: compat_expected.json next to this script. The venv is target/cpp-venv at the
# repository root (created on first use). Needs apt packages libibverbs1 librdmacm1 libnuma1
# libaio1 for the wheel's store.so (installed here if the import fails and we are root).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
VENV="$ROOT/target/cpp-venv"
OUT="${1:-$HERE/compat_expected.json}"
export MC_TCP_BIND_ADDRESS=127.0.0.1

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import mooncake" 2>/dev/null; then
    "$VENV/bin/pip" install -q mooncake-transfer-engine-non-cuda==0.3.13.post1
fi
if ! "$VENV/bin/python" -c "import mooncake.store" 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -q && apt-get install -y -q libibverbs1 librdmacm1 libnuma1 libaio1
    fi
    "$VENV/bin/python" -c "import mooncake.store"
fi

free_port() {
    "$VENV/bin/python" -c \
        'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
RPC=$(free_port); HTTP=$(free_port); METRICS=$(free_port); SVC=$(free_port)
while [ "$HTTP" = "$RPC" ]; do HTTP=$(free_port); done
while [ "$METRICS" = "$RPC" ] || [ "$METRICS" = "$HTTP" ]; do METRICS=$(free_port); done
while [ "$SVC" = "$RPC" ] || [ "$SVC" = "$HTTP" ] || [ "$SVC" = "$METRICS" ]; do
    SVC=$(free_port)
done

LOGS="$(mktemp -d)"
trap 'echo "recording failed; logs in $LOGS" >&2' ERR
MASTER_PID=""; CLIENT_PID=""
cleanup() {
    for pid in $CLIENT_PID $MASTER_PID; do
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

"$VENV/bin/mooncake_master" --rpc_port="$RPC" --rpc_address=127.0.0.1 \
    --enable_http_metadata_server=1 --http_metadata_server_host=127.0.0.1 \
    --http_metadata_server_port="$HTTP" --metrics_host=127.0.0.1 --metrics_port="$METRICS" \
    --client_ttl=10 --default_kv_lease_ttl=500 >"$LOGS/master.log" 2>&1 &
MASTER_PID=$!

segments() {
    curl -s "http://127.0.0.1:$METRICS/get_all_segments" 2>/dev/null || true
}
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$METRICS/get_all_segments" && break
    sleep 0.2
done

"$VENV/bin/mooncake_client" --host=127.0.0.1 --port="$SVC" --global_segment_size=256MB \
    --master_server_address="127.0.0.1:$RPC" \
    --metadata_server="http://127.0.0.1:$HTTP/metadata" >"$LOGS/client.log" 2>&1 &
CLIENT_PID=$!
for _ in $(seq 150); do
    [ -n "$(segments)" ] && break
    sleep 0.2
done
if [ -z "$(segments)" ]; then
    echo "the store service never mounted its segment; logs in $LOGS" >&2
    exit 1
fi

"$VENV/bin/python" "$HERE/compat_program.py" "127.0.0.1:$RPC" "http://127.0.0.1:$HTTP/metadata" \
    >"$LOGS/out.json" 2>"$LOGS/program.log"
"$VENV/bin/python" -c '
import json, sys
data = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    f.write(json.dumps(data, indent=1) + "\n")
print(f"{len(data)} calls written to {sys.argv[2]}")
' "$LOGS/out.json" "$OUT"
rm -rf "$LOGS"
