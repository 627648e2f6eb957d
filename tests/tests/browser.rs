//! The browser pages in a real Chromium: `tests/browser/e2e.mjs` (node + npm `playwright-core`,
//! Debian's `/usr/bin/chromium`) against the real `golive` binary; `tests/browser/whip.mjs`,
//! WHIP and WHEP from a plain page with `fetch`; `tests/browser/embed.mjs`, the SDK and the embed
//! from pages of another origin; `tests/browser/ttff.mjs`, which prints the time to first
//! frame of late joiners; `tests/browser/connect.mjs`, which prints how fast WHEP players
//! connect and see a frame on each viewer leg (and on pion's relay, given its binary); and
//! `tests/browser/replay.mjs`, a recorded broadcast played and seeked on `/replay/<id>` with its
//! chat in step.
//!
//! The script goes live from `/live` with Chromium's fake camera, finds the broadcast on `/`,
//! watches it from three `/watch` pages (one phone-sized) that must each decode a growing number
//! of frames, chats between them (text only, remove, mute, rate limit) and sends hearts, drops
//! signalling sockets and checks they come back, ends the broadcast and checks
//! every player says so, measures glass-to-glass latency in probe mode and prints its p50/p95,
//! and checks the failures a person can meet (server unreachable, camera denied, missing or
//! busy, name taken). This test starts the server, runs the script, and asserts on its exit
//! status and output. Run it alone, with the script's log:
//! `cargo test -p golive-e2e --test browser -- --nocapture`.
//!
//! Prerequisites are checked first; when one is missing the test fails and says how to install
//! it (it never skips: CI must run the browser).

use golive_e2e::GoliveServer;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's Chromium; `CHROMIUM_PATH` overrides it (the script reads the same variable).
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// `playwright-core` needs this Node.js major version or newer.
const MIN_NODE_MAJOR: u32 = 20;
/// The script's own watchdog is 180 s; this is the last resort.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);
/// What the script prints when every check passed.
const PASSED_LINE: &str = "browser e2e: all checks passed";
const LATENCY_LINE: &str = "glass-to-glass latency: p50";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CHROMIUM))
}

/// Every missing prerequisite, each with how to install it.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let dir = browser_dir();
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let major = version
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok());
            if major.is_none_or(|m| m < MIN_NODE_MAJOR) {
                missing.push(format!(
                    "node {version} is too old: playwright-core needs Node.js {MIN_NODE_MAJOR} or \
                     newer (https://nodejs.org, or the NodeSource Debian packages)"
                ));
            }
        }
        _ => missing.push(format!(
            "node is not installed: install Node.js {MIN_NODE_MAJOR} or newer with npm \
             (Debian: `sudo apt-get install -y nodejs npm`, or the NodeSource packages)"
        )),
    }
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push(format!(
            "the npm package playwright-core is not installed: run `npm ci` in {} \
             (never `npx playwright install`: the test uses Debian's Chromium)",
            dir.display()
        ));
    }
    let chromium = chromium_path();
    if !chromium.exists() {
        missing.push(format!(
            "Chromium is missing at {}: install it with `sudo apt-get install -y chromium` \
             (or set CHROMIUM_PATH)",
            chromium.display()
        ));
    }
    missing
}

/// Fails (never skips: CI must run the browser) when a prerequisite is missing, saying how to
/// install it.
fn require_prerequisites() {
    let missing = missing_prerequisites();
    assert!(
        missing.is_empty(),
        "the browser tests cannot run; install what is missing:\n  - {}",
        missing.join("\n  - ")
    );
}

/// Chromium is heavy on a small machine, and one script's load would skew another's figures
/// (the TTFF benchmark): the scripts run one at a time.
static ONE_BROWSER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `node <script> <url>`, one script at a time; returns (success, combined output).
fn run_script(script: &str, url: &str) -> (bool, String) {
    run_script_with_args(script, &[url])
}

/// Runs `node <script> <args>...`, one script at a time; returns (success, combined output).
fn run_script_with_args(script: &str, args: &[&str]) -> (bool, String) {
    let _one = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = browser_dir();
    let mut child = Command::new("node")
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir)
        .env("CHROMIUM_PATH", chromium_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for node") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut output = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    if !err.is_empty() {
        output.push_str("\n---- stderr ----\n");
        output.push_str(&err);
    }
    match status {
        Some(s) => (s.success(), output),
        None => (
            false,
            format!("{output}\n(killed after {SCRIPT_TIMEOUT:?}: the script hung)"),
        ),
    }
}

#[test]
fn browser_goes_live_three_players_decode_and_see_the_end() {
    require_prerequisites();

    let server = GoliveServer::start().expect("golive starts");
    let url = format!("http://{}", server.http_addr());
    let (ok, output) = run_script("e2e.mjs", &url);
    // Shown with `--nocapture`, and in full when the test fails.
    println!("{output}");
    assert!(ok, "tests/browser/e2e.mjs failed against {url}:\n{output}");
    assert!(
        output.contains(PASSED_LINE),
        "the script exited 0 without `{PASSED_LINE}`:\n{output}"
    );
    let latency = output
        .lines()
        .find(|l| l.starts_with(LATENCY_LINE))
        .unwrap_or_else(|| panic!("no `{LATENCY_LINE}` line:\n{output}"));
    eprintln!("{latency}");
}

/// Issue 6: a plain page publishes with WHIP and plays with WHEP through `fetch`, from another
/// origin than the server's (CORS preflight, `Location` and `ETag` exposed).
#[test]
fn a_page_on_another_origin_publishes_with_whip_and_plays_with_whep() {
    require_prerequisites();
    let server = GoliveServer::start().expect("golive starts");
    let url = format!("http://{}", server.http_addr());
    let (ok, output) = run_script("whip.mjs", &url);
    println!("{output}");
    assert!(ok, "tests/browser/whip.mjs failed against {url}:\n{output}");
    assert!(
        output.contains("PASS: WHIP publish and WHEP play"),
        "{output}"
    );
}

/// Issue 15: pages of another origin embed `/embed/<stream>` (it plays, also on a phone, and
/// follows the broadcast's states), go live with the SDK's `goLive()` and watch with its
/// `watch()`; oEmbed's JSON validates and its html plays; thumbnails reach the directory's grid,
/// ranked; `/live` cannot be framed.
#[test]
fn pages_on_another_origin_embed_the_player_and_use_the_sdk_to_go_live_and_watch() {
    require_prerequisites();
    let server = GoliveServer::start().expect("golive starts");
    let url = format!("http://{}", server.http_addr());
    let (ok, output) = run_script("embed.mjs", &url);
    println!("{output}");
    assert!(
        ok,
        "tests/browser/embed.mjs failed against {url}:\n{output}"
    );
    assert!(output.contains("PASS: the embed, the SDK"), "{output}");
}

/// Issue 15: time to first frame, navigation start to the first frame presented, of 8 late
/// joiners of a broadcast running 4 s, and Go Live to on air; printed (a benchmark: only that
/// every joiner saw a picture is asserted). Phone-sized joiners with `TTFF_PHONE=1`.
#[test]
fn time_to_first_frame_of_late_joiners_is_measured_and_printed() {
    require_prerequisites();
    let server = GoliveServer::start().expect("golive starts");
    let url = format!("http://{}", server.http_addr());
    let (ok, output) = run_script("ttff.mjs", &url);
    println!("{output}");
    assert!(ok, "tests/browser/ttff.mjs failed against {url}:\n{output}");
    for prefix in ["TTFF /watch: p50", "TTFF go live → on air: p50"] {
        let line = output
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{output}"));
        eprintln!("{line}");
    }
}

/// Where a pion v3 relay binary (`bench/pion-relay/build.sh` builds one) is given to the
/// connect benchmark, which then measures it beside golive.
const PION_RELAY_ENV: &str = "GOLIVE_PION_RELAY";

/// A running pion relay (`bench/pion-relay`), killed when dropped.
struct PionRelay {
    child: std::process::Child,
    url: String,
}

impl PionRelay {
    /// Starts `binary` on free loopback ports and waits for its `listening on <url>` line.
    fn start(binary: &Path) -> Self {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{PION_RELAY_ENV}={}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("reading the relay's first line");
        let url = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("the pion relay said {line:?}, not `listening on <url>`"))
            .to_owned();
        Self { child, url }
    }
}

impl Drop for PionRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 14: late-joining Chromium WHEP players on golive's `rtc` viewer leg and on its lean
/// leg, side by side with the same WHIP publisher (and pion's relay beside them when
/// `GOLIVE_PION_RELAY` names its binary): answer applied → ICE, DTLS and connection connected,
/// and peer connection created → first frame presented, printed as p50/p95. A benchmark: only
/// that every player on every server decoded frames is asserted.
#[test]
fn whep_players_connect_and_first_frame_on_the_rtc_and_lean_legs_are_measured_and_printed() {
    require_prerequisites();
    let rtc = GoliveServer::start_with_args(&["--viewer-leg", "rtc"]).expect("golive starts");
    let lean = GoliveServer::start_with_args(&["--viewer-leg", "lean"]).expect("golive starts");
    let pion = std::env::var_os(PION_RELAY_ENV).map(|bin| PionRelay::start(Path::new(&bin)));
    let mut args = vec![
        format!("rtc=http://{}", rtc.http_addr()),
        format!("lean=http://{}", lean.http_addr()),
    ];
    if let Some(pion) = &pion {
        args.push(format!("pion={}", pion.url));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, output) = run_script_with_args("connect.mjs", &args);
    println!("{output}");
    assert!(
        ok,
        "tests/browser/connect.mjs failed:\n{output}\n---- golive --viewer-leg rtc ----\n{}\n\
         ---- golive --viewer-leg lean ----\n{}",
        rtc.logs(),
        lean.logs()
    );
    let mut labels = vec!["rtc", "lean"];
    if pion.is_some() {
        labels.push("pion");
    }
    for label in labels {
        let prefix = format!("CONNECT {label}: answer → connected p50");
        let line = output
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{output}"));
        eprintln!("{line}");
    }
    assert!(
        output.contains("PASS: every player on every server decoded frames"),
        "{output}"
    );
}

/// Issue 13: a broadcast from `/live` (the fake camera's real VP8) with chat at known moments,
/// recorded with `--record-dir`, plays on `/replay/<id>`; seeked to the middle, the page shows
/// the chat sent until that moment and not what came later, and shows it when played on.
#[test]
fn a_replay_plays_in_chromium_and_after_a_seek_shows_the_chat_of_that_moment() {
    require_prerequisites();
    let dir = std::env::temp_dir().join(format!("golive-replay-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let server =
        GoliveServer::start_with_args(&["--record-dir", dir.to_str().expect("UTF-8 path")])
            .expect("golive starts");
    let url = format!("http://{}", server.http_addr());
    let (ok, output) = run_script("replay.mjs", &url);
    println!("{output}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ok,
        "tests/browser/replay.mjs failed against {url}:\n{output}"
    );
    assert!(output.contains("PASS: the replay plays, seeks"), "{output}");
}

/// Status line and lower-cased headers of `GET path` (HTTP/1.1, `Connection: close`).
fn http_head(addr: SocketAddr, path: &str, extra: &str) -> (u16, Vec<(String, String)>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .expect("write request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: not an HTTP response: {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[test]
fn pages_and_assets_are_served_with_their_types_and_revalidated_by_etag() {
    let server = GoliveServer::start().expect("golive starts");
    let addr = server.http_addr();
    for (path, content_type) in [
        ("/", "text/html"),
        ("/live", "text/html"),
        ("/watch/demo", "text/html"),
        ("/watch/no%20such%20name", "text/html"),
        ("/embed/demo", "text/html"),
        ("/sdk/golive.js", "text/javascript"),
        ("/static/embed.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/common.js", "text/javascript"),
        ("/static/directory.js", "text/javascript"),
        ("/static/live.js", "text/javascript"),
        ("/static/watch.js", "text/javascript"),
        ("/static/chat.js", "text/javascript"),
        ("/static/probe.js", "text/javascript"),
        ("/static/icon.svg", "image/svg+xml"),
    ] {
        let (status, headers) = http_head(addr, path, "");
        assert_eq!(status, 200, "GET {path}");
        let ct = header(&headers, "content-type");
        assert!(
            ct.starts_with(content_type),
            "GET {path}: content-type {ct}"
        );
        assert_eq!(header(&headers, "cache-control"), "no-cache", "GET {path}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        let etag = header(&headers, "etag").to_owned();
        assert!(etag.starts_with('"'), "GET {path}: etag {etag:?}");
        let (status, headers) = http_head(addr, path, &format!("If-None-Match: {etag}\r\n"));
        assert_eq!(status, 304, "GET {path} with its ETag");
        assert_eq!(header(&headers, "etag"), etag);
    }
    assert_eq!(http_head(addr, "/static/nope.js", "").0, 404);
    assert_eq!(http_head(addr, "/static/../Cargo.toml", "").0, 404);
}
