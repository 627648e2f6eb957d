#!/usr/bin/env bash
# Builds the pion v3 relay (the baseline SFU of side-by-side runs) offline, from Debian's Go and
# Debian's pion packages (sources under /usr/share/gocode): no module proxy, no network but apt.
#
#   bench/pion-relay/build.sh [output]     # default: target/pion-relay
#
# A benchmark tool only: neither ./test.sh nor CI builds it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/target/pion-relay}"

need=()
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -f /usr/share/gocode/src/github.com/pion/webrtc/go.mod ] || need+=(golang-github-pion-webrtc.v3-dev)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y --no-install-recommends "${need[@]}"
fi

# GOPATH mode: Debian lays its Go sources out as a GOPATH (/usr/share/gocode/src/...). The
# relay's own source is linked into a private GOPATH beside it, so nothing is fetched.
gopath="$(mktemp -d)"
trap 'rm -rf "$gopath"' EXIT
mkdir -p "$gopath/src/golive.bench"
ln -s "$here" "$gopath/src/golive.bench/pion-relay"
mkdir -p "$(dirname "$out")"
cd "$gopath/src/golive.bench/pion-relay"
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" \
  GOCACHE="${GOCACHE:-$root/target/pion-relay-gocache}" \
  go build -o "$out" .
echo "built $out ($(go version))"
