#!/usr/bin/env bash
# The capacity benchmark of golive (see BENCHMARKS.md).
#
# The server is pinned to one core and the load tester to the other; viewers are stepped
# 50, 100, 200, 400, 800, ... at 2.5 Mbit/s each, several runs per step with a fresh server
# each time, until the median live loss passes 0.1 % or the median p99 latency passes 50 ms.
# Every run's figures are kept as JSON; the table of medians is printed at the end and
# written next to them as summary.md.
#
#   cargo build --release -p golive-server -p golive-load
#   bench/capacity.sh                      # defaults below
#   RUNS=5 STEPS="100 200" WORKERS=1 bench/capacity.sh
#   SERVER_ARGS=--srtp-legacy LOAD_ARGS="--srtp cm" bench/capacity.sh   # AES-CM instead of GCM
#   SIMULCAST=1 bench/capacity.sh          # the publisher sends q/h/f layers (f at BITRATE)
#   VIEWER_TWCC=off bench/capacity.sh      # viewers send no TWCC feedback (default: on)
#
# Everything stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GOLIVE=${GOLIVE_BIN:-$ROOT/target/release/golive}
LOAD=${GOLIVE_LOAD_BIN:-$ROOT/target/release/golive-load}
STEPS=${STEPS:-"50 100 200 400 800 1600 3200"}
RUNS=${RUNS:-3}
BITRATE=${BITRATE:-2500k}
# Seconds each viewer stays; the ramp must leave a steady window (all viewers in) of several
# seconds, over which CPU and throughput are averaged.
DURATION=${DURATION:-20}
RAMP=${RAMP:-100}
WORKERS=${WORKERS:-1}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
SERVER_ARGS=${SERVER_ARGS:-}
LOAD_ARGS=${LOAD_ARGS:-}
# Adaptive quality: a simulcast publisher (1 for on), and the viewers' TWCC feedback.
SIMULCAST=${SIMULCAST:-0}
VIEWER_TWCC=${VIEWER_TWCC:-on}
ADAPT_ARGS="--viewer-twcc $VIEWER_TWCC"
[[ $SIMULCAST == 1 ]] && ADAPT_ARGS+=" --simulcast"
# Other work on a shared machine would otherwise take turns on our cores (its builds at the
# same priority stretched our latency tenfold). As root, both processes run SCHED_FIFO (the
# kernel still keeps 5 % of each core for everything else); otherwise at nice -10. CPU
# figures come from /proc and count only our processes either way.
if [[ -z ${PRIO+x} ]]; then
  if [[ $(id -u) == 0 ]]; then PRIO="chrt -f 20"; else PRIO="nice -n -10"; fi
fi
MAX_LOSS_PCT=${MAX_LOSS_PCT:-0.1}
MAX_P99_MS=${MAX_P99_MS:-50}
OUT=${OUT:-$ROOT/bench/results/$(date +%Y%m%d-%H%M%S)}

for bin in "$GOLIVE" "$LOAD"; do
  [[ -x $bin ]] || { echo "missing $bin: cargo build --release -p golive-server -p golive-load" >&2; exit 1; }
done
mkdir -p "$OUT"
# Every viewer comes from 127.0.0.1: lift the server's per-address session limits.
export GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP=${GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP:-100000}
export GOLIVE_MAX_SESSIONS_PER_IP=${GOLIVE_MAX_SESSIONS_PER_IP:-1000000}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
{
  describe_machine
  echo "server: taskset -c $SERVER_CORE $GOLIVE --workers $WORKERS $SERVER_ARGS"
  echo "load: taskset -c $LOAD_CORE $LOAD --bitrate $BITRATE --ramp $RAMP --duration $DURATION $ADAPT_ARGS $LOAD_ARGS"
  echo "priority: ${PRIO:-default}"
  echo "runs per step: $RUNS"
} | tee "$OUT/machine.txt"


one_run() { # viewers run
  local n=$1 r=$2 log="$OUT/server-$1-$2.log" ready="$OUT/.ready"
  rm -f "$ready"
  # shellcheck disable=SC2086
  $PRIO taskset -c "$SERVER_CORE" "$GOLIVE" --listen 127.0.0.1:0 --udp-port 0 \
    --workers "$WORKERS" $SERVER_ARGS >"$ready" 2>"$log" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q '^listening on ' "$ready" 2>/dev/null && break; sleep 0.1; done
  local addr
  addr=$(sed -n 's/^listening on //p' "$ready")
  [[ -n $addr ]] || { echo "the server did not start; see $log" >&2; exit 1; }
  echo "step $n run $r: loadavg before $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
  # shellcheck disable=SC2086
  $PRIO taskset -c "$LOAD_CORE" "$LOAD" --server "$addr" --server-pid "$SERVER_PID" \
    --stream bench --viewers "$n" --ramp "$RAMP" --duration "$DURATION" --bitrate "$BITRATE" \
    --quiet --json "$OUT/step-$n-run-$r.json" $ADAPT_ARGS $LOAD_ARGS 2>"$OUT/load-$n-$r.log" || true
  stop_server
}

for n in $STEPS; do
  for r in $(seq "$RUNS"); do
    echo "step $n viewers, run $r/$RUNS" >&2
    one_run "$n" "$r"
  done
  verdict=$(python3 "$ROOT/bench/summarize.py" --step "$n" --max-loss "$MAX_LOSS_PCT" \
    --max-p99 "$MAX_P99_MS" "$OUT")
  echo "$verdict" >&2
  [[ $verdict == pass* ]] || break
done
python3 "$ROOT/bench/summarize.py" "$OUT" | tee "$OUT/summary.md"
