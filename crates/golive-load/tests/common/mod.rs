//! What the tests of `golive-load` share: the real `golive` server as a child process, and a
//! run of the `golive-load` binary against it that returns its JSON report.

use golive_client::ServerProcess;
use golive_client::harness::LOOPBACK_ARGS;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A watchdog against a hung process, not a performance bound: the run itself takes about 7 s.
pub const HANG_GUARD: Duration = Duration::from_secs(300);

/// The server on free loopback ports, with two media workers.
pub fn start_server() -> ServerProcess {
    let mut cmd = ServerProcess::command(&LOOPBACK_ARGS).unwrap_or_else(|e| panic!("{e}"));
    // Every viewer of a load test comes from 127.0.0.1: lift the per-address limits on new and
    // open sessions (environment, not flags, so an older binary without them still starts).
    cmd.env("GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP", "10000")
        .env("GOLIVE_MAX_SESSIONS_PER_IP", "100000");
    ServerProcess::start_command(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `golive-load` against `server` with `args` (plus `--server`, `--server-pid`,
/// `--quiet` and `--json -`) and returns its report; panics if it fails or hangs.
pub fn run_load(server: &ServerProcess, args: &[&str]) -> serde_json::Value {
    let pid = server.pid().to_string();
    let url = server.http_url();
    let mut load = Command::new(env!("CARGO_BIN_EXE_golive-load"))
        .args([
            "--server",
            &url,
            "--server-pid",
            &pid,
            "--quiet",
            "--json",
            "-",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting golive-load");
    let (tx, rx) = mpsc::channel();
    let mut stdout = load.stdout.take().expect("stdout");
    let mut stderr = load.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((out, err));
    });
    let Ok((out, err)) = rx.recv_timeout(HANG_GUARD) else {
        let _ = load.kill();
        panic!("golive-load hung (no exit within {HANG_GUARD:?})");
    };
    let status = load.wait().expect("golive-load exit status");
    eprintln!("{err}");
    assert!(status.success(), "golive-load failed ({status}):\n{err}");
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("golive-load printed no JSON ({e}):\n{out}"))
}

/// The behaviour every healthy run shows on loopback: every viewer connects, receives audio
/// and video from a complete keyframe on, loses nothing, and stays to the end.
pub fn assert_every_viewer_served(r: &serde_json::Value, viewers: u64) {
    let n = |key: &str| {
        r[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} missing in {r:#}"))
    };
    assert_eq!(n("viewers_requested"), viewers);
    assert_eq!(n("join_failures"), 0, "join errors: {}", r["join_errors"]);
    assert_eq!(n("viewers_connected"), viewers);
    assert_eq!(
        n("viewers_received"),
        viewers,
        "every viewer gets audio and video"
    );
    assert_eq!(
        n("viewers_with_keyframe"),
        viewers,
        "every viewer assembles a complete keyframe"
    );
    assert_eq!(n("packets_lost"), 0, "no loss on loopback: {r:#}");
    assert_eq!(r["loss_pct"].as_f64(), Some(0.0));
    assert_eq!(n("corrupt_packets"), 0, "payloads arrive intact");
    assert_eq!(n("foreign_packets"), 0, "every payload is the publisher's");
    assert!(n("packets_received") > 0);
    assert!(
        r["viewers_ended_early"]
            .as_object()
            .is_some_and(|m| m.is_empty()),
        "no session ended early: {}",
        r["viewers_ended_early"]
    );
    assert_eq!(r["publisher"]["write_errors"].as_u64(), Some(0));
}

/// A run of `viewers` viewers of `stream` joining over `ramp_ms` and staying `duration_s`, at
/// `bitrate` with a keyframe a second, on one load-tester thread, plus `extra`.
#[allow(dead_code)]
pub fn viewers_run(
    server: &ServerProcess,
    stream: &str,
    viewers: u64,
    (ramp_ms, duration_s): (u64, u64),
    bitrate: &str,
    extra: &[&str],
) -> serde_json::Value {
    let (viewers, ramp, duration) = (
        viewers.to_string(),
        ramp_ms.to_string(),
        duration_s.to_string(),
    );
    let mut args = vec![
        "--stream",
        stream,
        "--viewers",
        &viewers,
        "--ramp",
        &ramp,
        "--duration",
        &duration,
        "--bitrate",
        bitrate,
        "--gop",
        "1",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    run_load(server, &args)
}

/// A light run ([`viewers_run`] at 500 kbit/s): a light stream keeps a debug build of both ends
/// far from saturation. These tests are about behaviour, the capacity benchmark
/// (bench/capacity.sh) about figures.
#[allow(dead_code)]
pub fn light_run(
    server: &ServerProcess,
    stream: &str,
    viewers: u64,
    ramp_ms: u64,
    duration_s: u64,
    extra: &[&str],
) -> serde_json::Value {
    viewers_run(
        server,
        stream,
        viewers,
        (ramp_ms, duration_s),
        "500k",
        extra,
    )
}

/// The server's `/metrics`, sample name (with labels) to value (not every test binary that
/// shares this module reads it).
#[allow(dead_code)]
pub fn scrape_metrics(server: &ServerProcess) -> std::collections::HashMap<String, f64> {
    use std::io::Write;
    let authority = golive_client::http::authority(&server.http_url()).expect("server URL");
    let mut s = std::net::TcpStream::connect(&authority).expect("connect for /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .expect("request /metrics");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read /metrics");
    let r = golive_client::http::parse_response(&raw).expect("an HTTP response");
    assert_eq!(r.status, 200, "/metrics");
    r.body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
