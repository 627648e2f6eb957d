#!/usr/bin/env bash
# Installs what golive's tests need, skipping whatever is already there, then runs the whole
# suite: `./test.sh` on a fresh Debian machine with the Rust toolchain is all it takes.
#
# What it installs, and where:
#   - Debian packages (apt-get, as root or through sudo): chromium for the browser tests,
#     nodejs/npm when node is missing, redis-server for the cluster tests (each test starts
#     its own on a free port; the package's system service is not needed), and ffmpeg for the
#     recording tests (ffprobe and ffmpeg read the replays back), and iproute2 (`ip`, `tc`) for
#     the browser test whose players sit behind bandwidth-capped links in network namespaces;
#   - the npm packages of tests/browser (playwright-core, never a browser download), with `npm ci`;
#   - aiortc, an independent WebRTC stack in Python, into a virtual environment in
#     target/test-deps/venv (the build folder git ignores), so the system Python stays untouched.
# A prerequisite that cannot be installed stops the run with what to do instead.
#
# Arguments go to `cargo test`, e.g. `./test.sh -p golive-sfu` or `./test.sh --test whip`.
# Environment: GOLIVE_TEST_SKIP_INSTALL=1 skips the installs (the tests then say what is missing).
set -euo pipefail

cd "$(dirname "$0")"
ROOT=$(pwd)
DEPS="$ROOT/target/test-deps"
VENV="$DEPS/venv"
AIORTC_VERSION=1.16.0
MIN_NODE_MAJOR=20

say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'test.sh: %s\n' "$*" >&2
    exit 1
}

command -v cargo >/dev/null 2>&1 ||
    fail "cargo is missing: install the Rust toolchain (https://rustup.rs), then run ./test.sh again"

# Runs a command as root: directly when we are root, through sudo when it is there.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

# Installs the Debian packages among "$@" that are not installed yet.
apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null 2>&1 ||
        fail "missing ${missing[*]}, and this is not a Debian-like system: install them with your package manager"
    say "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" </dev/null ||
        fail "could not install ${missing[*]}: run \`sudo apt-get install -y ${missing[*]}\` (as root, or with sudo), then ./test.sh again"
}

node_major() {
    node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'
}

install_browser_deps() {
    apt_install chromium
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    local major
    major=$(node_major)
    [[ -n $major && $major -ge $MIN_NODE_MAJOR ]] ||
        fail "node $(node --version 2>/dev/null) is too old: the browser tests need Node.js $MIN_NODE_MAJOR or newer (NodeSource packages, or nvm), then ./test.sh again"
    # `npm ci` only when the installed tree is not the one package-lock.json describes.
    local marker=tests/browser/node_modules/.package-lock.json
    if [[ ! -f $marker || tests/browser/package-lock.json -nt $marker ]]; then
        say "npm ci in tests/browser"
        (cd tests/browser && npm ci --no-audit --no-fund) ||
            fail "npm ci failed in tests/browser: it needs the npm registry; see the output above"
    fi
}

install_python_deps() {
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if [[ ! -x $VENV/bin/python3 ]]; then
        say "python3 -m venv $VENV"
        mkdir -p "$DEPS"
        if ! python3 -m venv "$VENV" 2>/dev/null; then
            # Debian splits venv (and the pip it bootstraps) into its own package.
            rm -rf "$VENV"
            apt_install python3-venv
            python3 -m venv "$VENV" || fail "python3 -m venv failed: install python3-venv"
        fi
    fi
    if ! "$VENV/bin/python3" -c "import aiortc, sys; sys.exit(aiortc.__version__ != '$AIORTC_VERSION')" 2>/dev/null; then
        say "pip install aiortc==$AIORTC_VERSION into $VENV"
        "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
            "aiortc==$AIORTC_VERSION" </dev/null ||
            fail "pip could not install aiortc==$AIORTC_VERSION: it needs PyPI; see the output above"
    fi
}

if [[ ${GOLIVE_TEST_SKIP_INSTALL:-0} != 1 ]]; then
    started=$SECONDS
    install_browser_deps
    install_python_deps
    apt_install redis-server
    apt_install ffmpeg
    apt_install iproute2
    say "test prerequisites ready ($((SECONDS - started)) s): $(chromium --version 2>/dev/null || echo chromium), node $(node --version), aiortc $("$VENV/bin/python3" -c 'import aiortc; print(aiortc.__version__)'), $(redis-server --version | cut -d' ' -f1-3), $(ffmpeg -version 2>/dev/null | sed -n 1p || echo ffmpeg)"
fi
if [[ -x $VENV/bin/python3 ]]; then
    export GOLIVE_TEST_PYTHON="$VENV/bin/python3"
fi

say "cargo test --workspace --no-fail-fast $*"
if (($# > 0)); then
    exec cargo test --workspace --no-fail-fast "$@"
fi
status=0
cargo test --workspace --no-fail-fast || status=$?
# Viewers are served by the lean leg by default; the rtc leg stays as a fallback and as the
# benchmarks' baseline, so the core simulation and the end-to-end suite run on it as well.
say "GOLIVE_VIEWER_LEG=rtc: the core simulation (golive-sfu) and the end-to-end suite (e2e)"
GOLIVE_VIEWER_LEG=rtc cargo test --no-fail-fast -p golive-sfu || status=$?
GOLIVE_VIEWER_LEG=rtc cargo test --no-fail-fast -p golive-e2e --test e2e || status=$?
exit "$status"
