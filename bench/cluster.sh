#!/usr/bin/env bash
# The cluster benchmark of golive (see BENCHMARKS.md, "One broadcast over several nodes").
#
# A real redis-server and four golive nodes on 127.0.0.1: node 0 holds the broadcast (the
# origin), nodes 1-3 are edges that pull it over one relay each. Two measurements:
#
#   1. hop: one golive-load publishes to the origin; two more watch at the same time, one with
#      its viewers on the origin, one with its viewers on edge 1. Latency is from the publisher's
#      send to the viewer's receive of the same payload (the instances share the host's clock),
#      so what one relay hop adds is the difference between the two rows.
#   2. origin: one golive-load publishes to the origin (no viewers); a second one watches with
#      STEPS viewers spread over the three edges only and reads the ORIGIN's CPU and memory
#      (--server-pid): the origin serves three relays whatever the audience, so its CPU should
#      stay flat as the audience grows.
#
#   cargo build --release -p golive-server -p golive-load
#   bench/cluster.sh
#   STEPS="100 600" HOP_VIEWERS=100 BITRATE=2500k DURATION=20 bench/cluster.sh
#
# All processes share the machine's cores (no pinning: five processes on two cores); the
# figures to read are the ratios within one run. Everything stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GOLIVE=${GOLIVE_BIN:-$ROOT/target/release/golive}
LOAD=${GOLIVE_LOAD_BIN:-$ROOT/target/release/golive-load}
STEPS=${STEPS:-"100 600"}
HOP_VIEWERS=${HOP_VIEWERS:-100}
BITRATE=${BITRATE:-2500k}
DURATION=${DURATION:-20}
RAMP=${RAMP:-100}
SERVER_ARGS=${SERVER_ARGS:-}
OUT=${OUT:-$ROOT/bench/results/cluster-$(date +%Y%m%d-%H%M%S)}
SECRET=bench-cluster-secret

for bin in "$GOLIVE" "$LOAD" "$(command -v redis-server || echo /missing/redis-server)"; do
  [[ -x $bin ]] || { echo "missing $bin (cargo build --release -p golive-server -p golive-load; apt-get install redis-server)" >&2; exit 1; }
done
mkdir -p "$OUT"
export GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP=${GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP:-100000}
export GOLIVE_MAX_SESSIONS_PER_IP=${GOLIVE_MAX_SESSIONS_PER_IP:-1000000}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

ADDRS=()
NODE_PIDS=()
start_node() { # index
  local i=$1 ready="$OUT/.ready-$1"
  rm -f "$ready"
  # shellcheck disable=SC2086
  "$GOLIVE" --listen 127.0.0.1:0 --udp-port 0 --workers 1 \
    --cluster-redis "redis://127.0.0.1:$REDIS_PORT/0" --cluster-secret "$SECRET" \
    $SERVER_ARGS >"$ready" 2>"$OUT/node-$i.log" &
  local pid=$!
  PIDS+=("$pid")
  NODE_PIDS[i]=$pid
  for _ in $(seq 100); do grep -q '^listening on ' "$ready" 2>/dev/null && break; sleep 0.1; done
  ADDRS[i]=$(sed -n 's/^listening on //p' "$ready")
  [[ -n ${ADDRS[i]} ]] || { echo "node $i did not start; see $OUT/node-$i.log" >&2; exit 1; }
}
for i in 0 1 2 3; do start_node "$i"; done
# Every node must see the other three before viewers arrive.
sleep 3

{
  describe_machine
  echo "nodes: $GOLIVE --workers 1 --cluster-redis ... $SERVER_ARGS (x4), $(redis-server --version | cut -d' ' -f1-3)"
  echo "origin ${ADDRS[0]}, edges ${ADDRS[1]} ${ADDRS[2]} ${ADDRS[3]}"
  echo "bitrate $BITRATE, duration $DURATION s, ramp $RAMP/s"
} | tee "$OUT/machine.txt"

origin_metrics() { curl -s "${ADDRS[0]}/metrics" | grep -E '^golive_cluster_relays_out ' || true; }

echo "== 1. hop: $HOP_VIEWERS viewers on the origin and $HOP_VIEWERS on edge 1, at the same time" | tee -a "$OUT/summary.txt"
"$LOAD" --server "${ADDRS[0]}" --stream hop --viewers 0 --bitrate "$BITRATE" \
  --duration $((DURATION + 30)) --quiet >"$OUT/hop-publisher.txt" 2>&1 &
pub=$!
sleep 2
watchers=()
for where in origin edge; do
  addr=${ADDRS[0]}
  [[ $where == edge ]] && addr=${ADDRS[1]}
  "$LOAD" --server "$addr" --no-publish --stream hop --viewers "$HOP_VIEWERS" --ramp "$RAMP" \
    --duration "$DURATION" --bitrate "$BITRATE" --quiet --json "$OUT/hop-$where.json" \
    >"$OUT/hop-$where.txt" 2>"$OUT/hop-$where.log" &
  watchers+=($!)
done
wait "${watchers[@]}" 2>/dev/null || true
kill "$pub" 2>/dev/null || true
wait "$pub" 2>/dev/null || true
for where in origin edge; do
  python3 - "$OUT/hop-$where.json" "$where" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
lat = d.get("latency_ms") or {}
ttff = d.get("ttff_ms") or {}
print(f"viewers on the {sys.argv[2]:6}: {d.get('viewers_connected')} connected, latency p50 "
      f"{lat.get('p50')} ms p99 {lat.get('p99')} ms, live loss {d.get('live_loss_pct')} %, "
      f"ttff p50 {ttff.get('p50')} ms")
EOF
done

for n in $STEPS; do
  echo "== 2. origin: $n viewers on the three edges, publisher on the origin" | tee -a "$OUT/summary.txt"
  "$LOAD" --server "${ADDRS[0]}" --stream "fan$n" --viewers 0 --bitrate "$BITRATE" \
    --duration $((DURATION + 30)) --quiet >"$OUT/publisher-$n.txt" 2>&1 &
  pub=$!
  sleep 2
  "$LOAD" --server "${ADDRS[1]},${ADDRS[2]},${ADDRS[3]}" --no-publish --stream "fan$n" \
    --viewers "$n" --ramp "$RAMP" --duration "$DURATION" --bitrate "$BITRATE" \
    --server-pid "${NODE_PIDS[0]}" --quiet --json "$OUT/origin-$n.json" \
    >"$OUT/origin-$n.txt" 2>"$OUT/origin-$n.log" || true
  echo "origin metrics during the run: $(origin_metrics)" >>"$OUT/summary.txt"
  kill "$pub" 2>/dev/null || true
  wait "$pub" 2>/dev/null || true
  python3 - "$OUT/origin-$n.json" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
d = json.load(open(sys.argv[1]))
lat = d.get("latency_ms") or {}
print(f"viewers {d.get('viewers_connected')}: origin CPU {d.get('server_cpu_pct')} % of a core, "
      f"RSS {d.get('server_rss_mb')} MB; viewers' live loss {d.get('live_loss_pct')} %, "
      f"latency p50 {lat.get('p50')} ms p99 {lat.get('p99')} ms")
EOF
  sleep 2
done
echo "figures in $OUT"
