#!/usr/bin/env bash
# Where the server's time goes at one load step (see BENCHMARKS.md): the same pinned setup as
# capacity.sh, and `perf record` on the server during the steady window.
#
#   VIEWERS=200 bench/profile.sh        # writes bench/results/profile-200/{perf.data,*.txt}
#
# Needs `perf` (Debian: apt-get install linux-perf) and a release build with debug info
# (the workspace's release profile has debug = 1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GOLIVE=${GOLIVE_BIN:-$ROOT/target/release/golive}
LOAD=${GOLIVE_LOAD_BIN:-$ROOT/target/release/golive-load}
VIEWERS=${VIEWERS:-200}
RAMP=${RAMP:-100}
DURATION=${DURATION:-25}
SECONDS_RECORDED=${SECONDS_RECORDED:-10}
SERVER_ARGS=${SERVER_ARGS:-}
LOAD_ARGS=${LOAD_ARGS:-}
if [[ -z ${PRIO+x} ]]; then
  if [[ $(id -u) == 0 ]]; then PRIO="chrt -f 20"; else PRIO="nice -n -10"; fi
fi
OUT=${OUT:-$ROOT/bench/results/profile-$VIEWERS}
mkdir -p "$OUT"
# Every viewer comes from 127.0.0.1: lift the server's per-address session limits.
export GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP=${GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP:-100000}
export GOLIVE_MAX_SESSIONS_PER_IP=${GOLIVE_MAX_SESSIONS_PER_IP:-1000000}

# shellcheck disable=SC2086
$PRIO taskset -c 0 "$GOLIVE" --listen 127.0.0.1:0 --udp-port 0 --workers 1 $SERVER_ARGS \
  >"$OUT/ready" 2>"$OUT/server.log" &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q '^listening on ' "$OUT/ready" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$OUT/ready")

# shellcheck disable=SC2086
$PRIO taskset -c 1 "$LOAD" --server "$addr" --server-pid "$SERVER_PID" --viewers "$VIEWERS" \
  --ramp "$RAMP" --duration "$DURATION" --quiet --json "$OUT/load.json" $LOAD_ARGS \
  2>"$OUT/load.log" &
LOAD_PID=$!
# Wait for the ramp and a few seconds more, then record the steady state.
sleep "$(python3 -c "print($VIEWERS / $RAMP + 3)")"
perf record -F 1999 -g --call-graph dwarf,8192 -p "$SERVER_PID" -o "$OUT/perf.data" \
  -- sleep "$SECONDS_RECORDED" 2>"$OUT/perf-record.log"
wait "$LOAD_PID"

perf report -i "$OUT/perf.data" --no-children --sort dso --stdio 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -20 >"$OUT/by-dso.txt"
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -60 >"$OUT/by-symbol.txt"
perf report -i "$OUT/perf.data" --children --sort symbol --stdio -g none 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -80 >"$OUT/inclusive.txt"
echo "profile in $OUT (by-dso.txt, by-symbol.txt, inclusive.txt; perf.data for perf report)"
