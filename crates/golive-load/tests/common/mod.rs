//! What the tests of `golive-load` share: the real `golive` server as a child process, and a
//! run of the `golive-load` binary against it that returns its JSON report.
//!
//! The `golive` binary belongs to another package, so it is found next to the test's
//! executable (`target/<profile>/golive`), or at `$GOLIVE_BIN`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A watchdog against a hung process, not a performance bound: the run itself takes about 7 s.
pub const HANG_GUARD: Duration = Duration::from_secs(300);

pub fn golive_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GOLIVE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/golive
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps/")
        .join(format!("golive{}", std::env::consts::EXE_SUFFIX))
}

/// The server process; killed on drop, its stderr printed if the test failed.
pub struct Server {
    pub child: Child,
    pub url: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    pub fn start() -> Server {
        let bin = golive_binary();
        assert!(
            bin.exists(),
            "the golive binary is missing at {}: build it first with `cargo build -p golive-server` \
             (same profile as this test) or set GOLIVE_BIN",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--udp-port",
                "0",
                "--workers",
                "2",
            ])
            // Every viewer of a load test comes from 127.0.0.1: lift the per-address limits
            // on new and open sessions (environment, not flags, so an older binary without
            // them still starts).
            .env("GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP", "10000")
            .env("GOLIVE_MAX_SESSIONS_PER_IP", "100000")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.trim().strip_prefix("listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(HANG_GUARD)
            .expect("golive never printed `listening on http://...`");
        Server { child, url, stderr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let s = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            let tail: Vec<&str> = s.lines().rev().take(200).collect();
            eprintln!("---- golive stderr (tail) ----");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Runs `golive-load` against `server` with `args` (plus `--server`, `--server-pid`,
/// `--quiet` and `--json -`) and returns its report; panics if it fails or hangs.
pub fn run_load(server: &Server, args: &[&str]) -> serde_json::Value {
    let pid = server.child.id().to_string();
    let mut load = Command::new(env!("CARGO_BIN_EXE_golive-load"))
        .args([
            "--server",
            &server.url,
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
