//! The real `golive` binary as a child process, one per test, stopped on drop: golive-client's
//! harness with the arguments every end-to-end test starts from.

use anyhow::{Result, anyhow};
use golive_client::harness::{LOOPBACK_ARGS, ServerProcess};
use std::net::SocketAddr;
use std::time::Duration;

pub use golive_client::harness::{PRINT_LOGS_ENV, golive_binary};

/// A running `golive` process.
#[derive(Debug)]
pub struct GoliveServer(ServerProcess);

impl GoliveServer {
    /// Starts the server on ephemeral loopback ports with two media workers, so that a
    /// publisher and its viewers may well land on different workers.
    pub fn start() -> Result<Self> {
        Self::start_with_args(&[])
    }

    /// Starts the server as [`GoliveServer::start`] does, with `extra` arguments after those.
    pub fn start_with_args(extra: &[&str]) -> Result<Self> {
        let mut args = LOOPBACK_ARGS.to_vec();
        args.extend_from_slice(extra);
        Self::start_exactly(&args)
    }

    /// Starts the server with exactly these command-line arguments.
    pub fn start_exactly(args: &[&str]) -> Result<Self> {
        Ok(Self(ServerProcess::start(args)?))
    }

    /// Starts a prepared command that runs [`golive_binary`] (through a launcher such as
    /// `ip netns exec <ns>`, which execs it, so that stopping the child stops the server), and
    /// waits for its `listening on` line.
    pub fn start_command(cmd: std::process::Command) -> Result<Self> {
        Ok(Self(ServerProcess::start_command(cmd)?))
    }

    /// The HTTP (and WebSocket) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// The signalling WebSocket URL.
    pub fn ws_url(&self) -> String {
        self.0.ws_url()
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.0.logs()
    }

    /// The HTTP status of `GET path`.
    pub async fn http_get_status(&self, path: &str) -> Result<u16> {
        let authority = self.http_addr().to_string();
        let timeout = Duration::from_secs(10);
        let r = golive_client::http::request(&authority, "GET", path, &[], b"", timeout)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        Ok(r.status)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.0.is_running()
    }
}
