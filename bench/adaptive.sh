#!/usr/bin/env bash
# The adaptive-quality benchmarks (see BENCHMARKS.md, "Adaptive quality: TWCC cost and
# simulcast capacity"): two configurations of bench/capacity.sh, interleaved run by run
# (a, b, a, b, ...) so that the load other work puts on a shared machine falls on both alike;
# each configuration's runs are then summarized together (medians per step).
#
#   cargo build --release -p golive-server -p golive-load
#   bench/adaptive.sh twcc        # a: viewers send TWCC feedback, b: they send none
#                                 #    (300 viewers at 2.5 Mbit/s, one stream, lean leg)
#   bench/adaptive.sh simulcast   # a: the publisher sends q/h/f simulcast (f at 2.5 Mbit/s),
#                                 # b: one 2.5 Mbit/s stream; viewers without TWCC, so every
#                                 #    viewer is forwarded the top layer
#   PAIRS=5 STEPS="200 400 800" bench/adaptive.sh simulcast
#
# Everything stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WHAT=${1:?usage: bench/adaptive.sh twcc|simulcast}
PAIRS=${PAIRS:-3}
OUT=${OUT:-$ROOT/bench/results/adaptive-$WHAT-$(date +%Y%m%d-%H%M%S)}
case $WHAT in
  twcc)
    STEPS=${STEPS:-300}
    A="VIEWER_TWCC=on SIMULCAST=0"
    B="VIEWER_TWCC=off SIMULCAST=0"
    ;;
  simulcast)
    STEPS=${STEPS:-"200 400"}
    A="VIEWER_TWCC=off SIMULCAST=1"
    B="VIEWER_TWCC=off SIMULCAST=0"
    ;;
  *)
    echo "usage: bench/adaptive.sh twcc|simulcast" >&2
    exit 2
    ;;
esac
mkdir -p "$OUT/a" "$OUT/b" "$OUT/raw"
echo "a: $A" | tee "$OUT/configs.txt"
echo "b: $B" | tee -a "$OUT/configs.txt"

for p in $(seq "$PAIRS"); do
  for n in $STEPS; do
    for cfg in a b; do
      vars=$A
      [[ $cfg == b ]] && vars=$B
      raw="$OUT/raw/$cfg-$n-$p"
      echo "pair $p/$PAIRS, $n viewers, $cfg ($vars)" >&2
      # One run of one step; capacity.sh's pass/fail verdict does not stop the pairs here.
      # shellcheck disable=SC2086
      env $vars STEPS="$n" RUNS=1 OUT="$raw" "$ROOT/bench/capacity.sh" >/dev/null 2>"$raw.err" || true
      if [[ -f $raw/step-$n-run-1.json ]]; then
        cp "$raw/step-$n-run-1.json" "$OUT/$cfg/step-$n-run-$p.json"
      fi
      [[ -f $OUT/machine.txt ]] || cp "$raw/machine.txt" "$OUT/machine.txt" 2>/dev/null || true
      cat "$raw/loadavg.txt" >>"$OUT/loadavg.txt" 2>/dev/null || true
    done
  done
done
# The per-run server logs and load tester stderr stay under raw/; the JSON of every run is
# under a/ and b/.
for cfg in a b; do
  vars=$A
  [[ $cfg == b ]] && vars=$B
  echo "### $cfg: $vars"
  python3 "$ROOT/bench/summarize.py" "$OUT/$cfg"
  # Where the viewers' video came from (simulcast runs), per run.
  for f in "$OUT/$cfg"/step-*.json; do
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); s=r.get("simulcast");
print(sys.argv[1].rsplit("/",1)[1], "viewers on layer q/h/f:", s and s["viewers_on_layer"],
      "rx pps:", r.get("rx_pps"), "us/pkt:", r.get("server_us_per_packet"))' "$f"
  done
done | tee "$OUT/summary.md"
