// Built in GOPATH mode against Debian's pion sources (build.sh), not as a module: this file only
// marks the relay as module-aware code, so that Go resolves `github.com/pion/webrtc/v3` to
// Debian's `github.com/pion/webrtc` (whose own go.mod says `module github.com/pion/webrtc/v3`).
module golive.bench/pion-relay

go 1.19
