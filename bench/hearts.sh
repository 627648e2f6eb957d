#!/usr/bin/env bash
# The hearts benchmark (issue 7, see BENCHMARKS.md): what VIEWERS viewers each tapping
# HEART_RATE hearts a second cost the server, in CPU and in outgoing WebSocket messages, with
# the server's heart batching (--hearts-batch-ms 250, the default) and without it
# (--hearts-batch-ms 0: every heart goes to every member at once). A run without hearts gives
# the cost of the media and the viewers alone.
#
# Pinned as bench/capacity.sh pins: the server (one worker) on core 0, the load tester on
# core 1, both SCHED_FIFO as root. A fresh server per run; every run's JSON and logs are kept.
#
#   cargo build --release -p golive-server -p golive-load
#   bench/hearts.sh                              # defaults below
#   MODES="250 0" RUNS=3 VIEWERS=500 bench/hearts.sh
#
# Everything stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GOLIVE=${GOLIVE_BIN:-$ROOT/target/release/golive}
LOAD=${GOLIVE_LOAD_BIN:-$ROOT/target/release/golive-load}
VIEWERS=${VIEWERS:-1000}
RAMP=${RAMP:-200}
DURATION=${DURATION:-20}
BITRATE=${BITRATE:-100k}
HEART_RATE=${HEART_RATE:-2}
# "none": no hearts (the baseline); a number: the server's --hearts-batch-ms with hearts on.
MODES=${MODES:-"none 250 0"}
RUNS=${RUNS:-2}
WORKERS=${WORKERS:-1}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
LOAD_ARGS=${LOAD_ARGS:-}
if [[ -z ${PRIO+x} ]]; then
  if [[ $(id -u) == 0 ]]; then PRIO="chrt -f 20"; else PRIO="nice -n -10"; fi
fi
OUT=${OUT:-$ROOT/bench/results/hearts-$(date +%Y%m%d-%H%M%S)}

for bin in "$GOLIVE" "$LOAD"; do
  [[ -x $bin ]] || { echo "missing $bin: cargo build --release -p golive-server -p golive-load" >&2; exit 1; }
done
mkdir -p "$OUT"
export GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP=${GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP:-100000}
export GOLIVE_MAX_SESSIONS_PER_IP=${GOLIVE_MAX_SESSIONS_PER_IP:-100000}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
{
  describe_machine
  echo "server: taskset -c $SERVER_CORE $GOLIVE --workers $WORKERS --hearts-batch-ms <mode>"
  echo "load: taskset -c $LOAD_CORE $LOAD --viewers $VIEWERS --ramp $RAMP --duration $DURATION --bitrate $BITRATE --heart-rate $HEART_RATE $LOAD_ARGS"
  echo "priority: ${PRIO:-default}"
  echo "modes: $MODES; runs per mode: $RUNS"
} | tee "$OUT/machine.txt"


for mode in $MODES; do
  for r in $(seq "$RUNS"); do
    echo "mode $mode run $r/$RUNS" >&2
    batch=$mode hearts=$HEART_RATE
    if [[ $mode == none ]]; then batch=250 hearts=0; fi
    log="$OUT/server-$mode-$r.log" ready="$OUT/.ready"
    rm -f "$ready"
    $PRIO taskset -c "$SERVER_CORE" "$GOLIVE" --listen 127.0.0.1:0 --udp-port 0 \
      --workers "$WORKERS" --hearts-batch-ms "$batch" >"$ready" 2>"$log" &
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q '^listening on ' "$ready" 2>/dev/null && break; sleep 0.1; done
    addr=$(sed -n 's/^listening on //p' "$ready")
    [[ -n $addr ]] || { echo "the server did not start; see $log" >&2; exit 1; }
    echo "mode $mode run $r: loadavg before $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/loadavg.txt"
    # shellcheck disable=SC2086
    $PRIO taskset -c "$LOAD_CORE" "$LOAD" --server "$addr" --server-pid "$SERVER_PID" \
      --stream hearts --viewers "$VIEWERS" --ramp "$RAMP" --duration "$DURATION" \
      --bitrate "$BITRATE" --heart-rate "$hearts" --json "$OUT/mode-$mode-run-$r.json" \
      $LOAD_ARGS 2>"$OUT/load-$mode-$r.log" || true
    stop_server
  done
done
python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, pathlib, re, statistics, sys
out = pathlib.Path(sys.argv[1])
modes = {}
for p in sorted(out.glob("mode-*-run-*.json")):
    m = re.match(r"mode-(.+)-run-(\d+)\.json", p.name)
    modes.setdefault(m.group(1), []).append(json.loads(p.read_text()))
def med(runs, key):
    v = [r.get(key) for r in runs if isinstance(r.get(key), (int, float))]
    return statistics.median(v) if v else None
def ended(runs):
    return sum(sum(r.get("viewers_ended_early", {}).values()) for r in runs) / len(runs)
cols = ["server_cpu_pct", "ws_messages_in_per_s", "ws_bytes_in_per_s", "hearts_sent",
        "hearts_in", "hearts_total_seen", "server_rss_base_mb", "server_rss_mb",
        "viewers_connected", "live_loss_pct", "load_cpu_pct"]
print("| mode | runs | " + " | ".join(cols) + " | ended early (mean) |")
print("|" + "---|" * (len(cols) + 3))
for mode, runs in modes.items():
    cells = []
    for c in cols:
        v = med(runs, c)
        cells.append("-" if v is None else f"{v:,.1f}")
    print(f"| {mode} | {len(runs)} | " + " | ".join(cells) + f" | {ended(runs):.0f} |")
EOF
