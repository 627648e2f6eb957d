#!/usr/bin/env bash
# Process-level churn (issue 5): waves of 2,000 viewers join and leave against one broadcaster;
# the server's peers, sessions, threads, open fds and RSS after each wave.
#
#   cargo build --release -p golive-server -p golive-load && bench/churn.sh
#
# Everything stays on 127.0.0.1. Work files go to $OUT (default a fresh temp dir).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${GOLIVE_BIN:-$ROOT/target/release/golive}
LOAD=${GOLIVE_LOAD_BIN:-$ROOT/target/release/golive-load}
OUT=${OUT:-$(mktemp -d)}
cd "$OUT"
echo "work files in $OUT"
export GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP=100000 GOLIVE_MAX_SESSIONS_PER_IP=100000
"$BIN" --listen 127.0.0.1:0 --workers 2 > server.out 2> server.err &
SPID=$!
trap 'kill $SPID 2>/dev/null' EXIT
for i in $(seq 50); do grep -q listening server.out && break; sleep 0.1; done
URL=$(sed -n 's/listening on //p' server.out)
snap() {
  local rss threads fds peers sessions
  rss=$(awk '/VmRSS/{print $2}' /proc/$SPID/status)
  threads=$(awk '/Threads/{print $2}' /proc/$SPID/status)
  fds=$(ls /proc/$SPID/fd | wc -l)
  peers=$(curl -s $URL/metrics | awk '/^golive_peers\{/{s+=$2} END{print s+0}')
  sessions=$(curl -s $URL/healthz | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessions"])')
  echo "$1: rss_kb=$rss threads=$threads fds=$fds peers=$peers sessions=$sessions"
}
"$LOAD" --server "$URL" --stream churn --viewers 0 --duration 200 --bitrate 500k > pub.log 2>&1 &
LPID=$!
sleep 3
snap "publisher only"
"$LOAD" --server "$URL" --stream churn --no-publish --viewers 250 --ramp 250 --duration 2 --bitrate 500k > warm.log 2>&1
sleep 4
snap "after a warm-up wave of 250"
"$LOAD" --server "$URL" --stream churn --no-publish --viewers 2000 --ramp 200 --duration 2 --bitrate 500k --json churn.json > churn.log 2>&1
sleep 4
snap "after 2,000 viewers joined and left"
"$LOAD" --server "$URL" --stream churn --no-publish --viewers 2000 --ramp 200 --duration 2 --bitrate 500k > churn2.log 2>&1
sleep 4
snap "after 2,000 more"
for w in 3 4 5; do
  "$LOAD" --server "$URL" --stream churn --no-publish --viewers 2000 --ramp 200 --duration 2 --bitrate 500k > churn$w.log 2>&1
  sleep 4
  snap "after wave $w of 2,000"
done
kill $LPID 2>/dev/null || true
python3 -c "import json; d=json.load(open('churn.json')); print('churn run: connected', d['viewers_connected'], 'of', d['viewers_requested'], 'join failures', d['join_failures'], 'loss', d['loss_pct'])"
