//! The server-process harness: starts the real `golive` binary on free ports, waits until it
//! says where it listens, keeps its stderr, and stops it on drop (printing the log's tail when
//! the test that owned it failed).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A watchdog against a server that never comes up, not a performance bound: a debug build
/// starts in well under a second, but a machine busy compiling can be slow.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The line the server prints on stdout once it is ready.
pub const READY_PREFIX: &str = "listening on http://";
/// How many lines of the server's stderr are printed when a test fails.
const LOG_LINES_ON_FAILURE: usize = 400;

/// Set this environment variable to print all of the server's stderr after every test (by
/// default only the tail is printed, and only after a failing test).
pub const PRINT_LOGS_ENV: &str = "GOLIVE_E2E_SERVER_LOGS";

/// Arguments for a server on free loopback ports with two media workers (so a publisher and
/// its viewers may well land on different workers).
pub const LOOPBACK_ARGS: [&str; 8] = [
    "--listen",
    "127.0.0.1:0",
    "--udp-port",
    "0",
    "--workers",
    "2",
    "--public-ip",
    "127.0.0.1",
];

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HarnessError(String);

/// Where the `golive` binary is: `$GOLIVE_BIN`, else next to the running test executable's
/// `deps/` folder (`target/<profile>/golive`, built by `cargo build -p golive-server`).
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

/// A running `golive` process.
pub struct ServerProcess {
    pub child: Child,
    /// The HTTP (and WebSocket) address.
    pub addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("pid", &self.child.id())
            .field("addr", &self.addr)
            .finish()
    }
}

impl ServerProcess {
    /// Starts [`golive_binary`] with exactly these arguments.
    pub fn start(args: &[&str]) -> Result<Self, HarnessError> {
        Self::start_command(Self::command(args)?)
    }

    /// A command that runs [`golive_binary`] with these arguments, for a caller to add to
    /// (its environment, say) before [`start_command`](Self::start_command).
    pub fn command(args: &[&str]) -> Result<Command, HarnessError> {
        let bin = golive_binary();
        if !bin.exists() {
            return Err(HarnessError(format!(
                "the golive binary is missing at {}: run `cargo build -p golive-server` first \
                 (same profile as the tests), or set GOLIVE_BIN",
                bin.display()
            )));
        }
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Ok(cmd)
    }

    /// Starts a prepared `golive` command (its arguments and environment set) and waits for
    /// its `listening on` line.
    pub fn start_command(mut cmd: Command) -> Result<Self, HarnessError> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| HarnessError(format!("starting {:?}: {e}", cmd.get_program())))?;

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });

        // Read stdout until the ready line, and keep draining it afterwards so the server
        // never blocks on a full pipe.
        let pipe = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(addr) = line.trim().strip_prefix(READY_PREFIX)
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(addr.trim_end_matches('/').to_owned());
                }
            }
        });

        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stderr,
        };
        let Ok(addr) = ready_rx.recv_timeout(STARTUP_TIMEOUT) else {
            let status = server.child.try_wait().ok().flatten();
            return Err(HarnessError(format!(
                "golive did not print `{READY_PREFIX}...` within {STARTUP_TIMEOUT:?} \
                 (exit status: {status:?}); its stderr:\n{}",
                server.logs()
            )));
        };
        server.addr = addr
            .parse()
            .map_err(|e| HarnessError(format!("golive printed an odd address {addr:?}: {e}")))?;
        Ok(server)
    }

    /// `http://host:port`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The signalling WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let print_all = std::env::var_os(PRINT_LOGS_ENV).is_some();
        if !std::thread::panicking() && !print_all {
            return;
        }
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
