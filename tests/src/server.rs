//! Starts the real `golive` binary as a child process, one per test, and stops it on drop.

use anyhow::{Context, Result, anyhow, bail};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the server may take to print its `listening on` line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// The line the server prints on stdout once it is ready.
const READY_PREFIX: &str = "listening on http://";
/// How many lines of the server's stderr are printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 400;

/// Set this environment variable to print all of the server's stderr after every test (by
/// default only the tail is printed, and only after a failing test).
pub const PRINT_LOGS_ENV: &str = "GOLIVE_E2E_SERVER_LOGS";

/// A running `golive` process.
pub struct GoliveServer {
    child: Child,
    http_addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for GoliveServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoliveServer")
            .field("pid", &self.child.id())
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

/// Where the `golive` binary is: `$GOLIVE_BIN`, else next to the test executable's `deps/`.
pub fn golive_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("GOLIVE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/golive
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test executable lives in target/<profile>/deps/");
    profile_dir.join(format!("golive{}", std::env::consts::EXE_SUFFIX))
}

impl GoliveServer {
    /// Starts the server on ephemeral loopback ports with two media workers, so that a
    /// publisher and its viewers may well land on different workers.
    pub fn start() -> Result<Self> {
        Self::start_with_args(&[])
    }

    /// Starts the server as [`GoliveServer::start`] does, with `extra` arguments after those.
    pub fn start_with_args(extra: &[&str]) -> Result<Self> {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--udp-port",
            "0",
            "--workers",
            "2",
            "--public-ip",
            "127.0.0.1",
        ];
        args.extend_from_slice(extra);
        Self::start_exactly(&args)
    }

    /// Starts the server with exactly these command-line arguments.
    pub fn start_exactly(args: &[&str]) -> Result<Self> {
        let bin = golive_binary();
        if !bin.exists() {
            panic!(
                "the golive binary is missing at {}: run `cargo build -p golive-server` first \
                 (or set GOLIVE_BIN)",
                bin.display()
            );
        }
        let mut child = Command::new(&bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_pipe = child.stderr.take().context("child stderr")?;
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });

        // Read stdout on a thread until the ready line; keep draining it afterwards so the
        // server never blocks on a full pipe.
        let stdout_pipe = child.stdout.take().context("child stdout")?;
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout_pipe).lines().map_while(Result::ok) {
                if let Some(addr) = line.trim().strip_prefix(READY_PREFIX)
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(addr.trim_end_matches('/').to_owned());
                }
            }
        });

        let mut server = GoliveServer {
            child,
            http_addr: ([0, 0, 0, 0], 0).into(),
            stderr,
        };
        let addr = match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                bail!(
                    "golive did not print `{READY_PREFIX}...` within {STARTUP_TIMEOUT:?} \
                     (exit status: {status:?}); its stderr:\n{}",
                    server.logs()
                );
            }
        };
        server.http_addr = addr
            .parse()
            .map_err(|e| anyhow!("golive printed an unparsable address {addr:?}: {e}"))?;
        Ok(server)
    }

    /// The HTTP (and WebSocket) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The signalling WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.http_addr)
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The HTTP status of `GET path`, by a minimal HTTP/1.1 exchange.
    pub async fn http_get_status(&self, path: &str) -> Result<u16> {
        let mut stream = tokio::net::TcpStream::connect(self.http_addr).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http_addr
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response);
        let status_line = text.lines().next().unwrap_or_default();
        status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP response: {status_line:?}"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for GoliveServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let print_all = std::env::var_os(PRINT_LOGS_ENV).is_some();
        if std::thread::panicking() || print_all {
            let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            let shown = if print_all {
                lines.len()
            } else {
                lines.len().min(LOG_LINES_ON_FAILURE)
            };
            eprintln!(
                "---- golive stderr (last {shown} of {} lines; RUST_LOG sets the level, \
                 {PRINT_LOGS_ENV}=1 prints them all) ----",
                lines.len()
            );
            for line in &lines[lines.len() - shown..] {
                eprintln!("{line}");
            }
            eprintln!("---- end of golive stderr ----");
        }
    }
}
