//! The HTTP accept loop: every TCP connection is counted from accept to close (a WebSocket until
//! its socket closes, long after the HTTP request that upgraded it), held to a cap in all and
//! per client address, and given a deadline for each request head.
//!
//! Without these, a client that opens connections and sends one header byte every few seconds
//! keeps each one open forever: 2,000 of them held 2,000 descriptors, and under a lower
//! descriptor limit `accept` failed with EMFILE until `/healthz` itself went unanswered. Here:
//!
//! - a connection over a cap is closed at once, with a best-effort `503` and without reading
//!   anything, so refusing costs the loop an `accept` and a `close` and never waits;
//! - each request head must arrive within the header timeout, counted from when the server
//!   starts waiting for it (so an idle keep-alive connection is closed after as long), and each
//!   request gets [`REQUEST_TIMEOUT`] from its head to the start of its response (a body
//!   trickled a byte at a time is cut too);
//! - `accept` errors that concern the process rather than one connection (EMFILE, ENFILE,
//!   ENOBUFS, ENOMEM) make the loop pause, doubling from [`ACCEPT_PAUSE_MIN`] to
//!   [`ACCEPT_PAUSE_MAX`], instead of spinning on a listener that stays readable;
//! - on shutdown the loop stops accepting, every connection finishes its request in flight and
//!   closes, and [`serve`] returns when the last one has.
//!
//! HTTP/1.1 only (`hyper`'s http1 builder, upgrades on): the router is built without HTTP/2, and
//! the auto-detecting builder reads a connection's first bytes to choose a protocol without any
//! deadline, which is exactly what a slow client exploits.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::limits::client_key;

/// From a request's head to the start of its response. Generous next to what any handler
/// takes (milliseconds; an offer answered by a worker that is restarting, a few seconds), short
/// next to how long a trickled body could otherwise hold a connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after an `accept` error that is not about one connection, doubled while they go on.
pub const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(5);
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_millis(500);
/// `accept` errors are logged at most this often (each one is counted).
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// What a refused connection is sent, if its socket takes it at once.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Content-Type: text/plain\r\nContent-Length: 36\r\nRetry-After: 5\r\n\r\ntoo many connections; try again soon";

/// The caps and timeouts of [`serve`].
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    /// Connections open at once, in all.
    pub max_connections: usize,
    /// Connections open at once from one client (per [`client_key`]).
    pub max_connections_per_ip: usize,
    /// Clients the per-address cap does not apply to: trusted proxies (they carry many
    /// clients), and loopback when the per-address limits exempt it.
    pub exempt_ips: Vec<IpAddr>,
    pub exempt_loopback: bool,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    MaxConnections,
    MaxConnectionsPerIp,
}

/// The connection counters, for `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnStats {
    pub open: usize,
    pub refused_max_connections: u64,
    pub refused_max_connections_per_ip: u64,
    pub header_timeouts: u64,
    pub request_timeouts: u64,
    pub accept_errors: u64,
}

/// The open connections, in all and per client, and what was refused.
#[derive(Debug)]
pub struct Connections {
    limits: HttpLimits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refused_max_connections: AtomicU64,
    refused_max_connections_per_ip: AtomicU64,
    header_timeouts: AtomicU64,
    request_timeouts: AtomicU64,
    accept_errors: AtomicU64,
}

/// One connection's place; dropping it (with the socket) frees the place.
#[derive(Debug)]
pub struct ConnSlot {
    conns: Arc<Connections>,
    /// `None` for a client the per-address cap does not count.
    key: Option<IpAddr>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(key) = self.key {
            let mut map = self.conns.lock();
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }
}

impl Connections {
    pub fn new(limits: HttpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refused_max_connections: AtomicU64::new(0),
            refused_max_connections_per_ip: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            request_timeouts: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a new connection from `ip`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, ConnRefusal> {
        let admitted = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limits.max_connections).then_some(n + 1)
            });
        if admitted.is_err() {
            self.refused_max_connections.fetch_add(1, Ordering::Relaxed);
            return Err(ConnRefusal::MaxConnections);
        }
        // Counted from here on: an early return drops the slot, which gives the place back.
        let mut slot = ConnSlot {
            conns: self.clone(),
            key: None,
        };
        let key = client_key(ip);
        if self.limits.exempt_ips.contains(&ip)
            || self.limits.exempt_ips.contains(&key)
            || (self.limits.exempt_loopback && key.is_loopback())
        {
            return Ok(slot);
        }
        let mut map = self.lock();
        let n = map.entry(key).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            drop(map);
            self.refused_max_connections_per_ip
                .fetch_add(1, Ordering::Relaxed);
            return Err(ConnRefusal::MaxConnectionsPerIp);
        }
        *n += 1;
        slot.key = Some(key);
        Ok(slot)
    }

    pub fn stats(&self) -> ConnStats {
        ConnStats {
            open: self.open.load(Ordering::Relaxed),
            refused_max_connections: self.refused_max_connections.load(Ordering::Relaxed),
            refused_max_connections_per_ip: self
                .refused_max_connections_per_ip
                .load(Ordering::Relaxed),
            header_timeouts: self.header_timeouts.load(Ordering::Relaxed),
            request_timeouts: self.request_timeouts.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }
}

/// The number of files this process may open (the soft `RLIMIT_NOFILE`), from `/proc`; `None`
/// when unlimited or unknown.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The connection cap to use: the configured one, lowered to three quarters of the descriptors
/// the process may open, so that the cap refuses connections before `accept` runs out of
/// descriptors; the last quarter stays for media sockets, files and everything else.
pub fn effective_max_connections(configured: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => configured.min(usize::try_from(n / 4 * 3).unwrap_or(usize::MAX)),
        None => configured,
    }
    .max(1)
}

/// A TCP stream with its place among the open connections: the place is freed when the stream
/// is dropped, whoever holds it last (hyper, or a WebSocket after an upgrade).
struct Counted {
    io: TcpStream,
    _slot: ConnSlot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether an `accept` error concerns only the connection being accepted (it is gone; take the
/// next), rather than the process (out of descriptors or memory: pause).
fn only_this_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets every connection finish
/// its request in flight and returns once all have closed (upgraded WebSockets end on their
/// own: the sessions were told by then).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Arc<Connections>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // Connections watch `stop`; each holds a `done` receiver until it has closed.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut pause = ACCEPT_PAUSE_MIN;
    let mut last_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) if only_this_connection(&e) => continue,
            Err(e) => {
                conns.accept_errors.fetch_add(1, Ordering::Relaxed);
                if last_logged.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    last_logged = Some(Instant::now());
                    tracing::warn!(
                        open = conns.open.load(Ordering::Relaxed),
                        "accept failed ({e}); pausing {pause:?} (lower --max-connections or \
                         raise the open-files limit)"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = &mut shutdown => break,
                }
                pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                continue;
            }
        };
        pause = ACCEPT_PAUSE_MIN;
        let slot = match conns.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Whatever the socket buffer takes at once; never wait for a refused client.
                let _ = stream.try_write(REFUSED_RESPONSE);
                tracing::debug!(%peer, ?refusal, "connection refused");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            Counted {
                io: stream,
                _slot: slot,
            },
            peer,
            router.clone(),
            conns.clone(),
            stop_rx.clone(),
            done_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

async fn serve_connection(
    io: Counted,
    peer: SocketAddr,
    router: Router,
    conns: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
) {
    let service_conns = conns.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut router = router.clone();
        let conns = service_conns.clone();
        async move {
            use tower_service::Service;
            match tokio::time::timeout(REQUEST_TIMEOUT, router.call(req)).await {
                Ok(r) => r,
                Err(_) => {
                    conns.request_timeouts.fetch_add(1, Ordering::Relaxed);
                    let mut r = axum::response::Response::new(axum::body::Body::from(
                        "the request took too long\n",
                    ));
                    *r.status_mut() = axum::http::StatusCode::REQUEST_TIMEOUT;
                    Ok(r)
                }
            }
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(conns.limits.header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        conns.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::trace!(%peer, "connection ended: {e}");
                }
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            max_connections: max,
            max_connections_per_ip: per_ip,
            exempt_ips: vec!["192.0.2.100".parse().unwrap()],
            exempt_loopback: false,
        }
    }

    #[test]
    fn connections_are_capped_in_all_and_per_client() {
        let c = Connections::new(limits(5, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_again: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b_same_64: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let a1 = c.admit(a).unwrap();
        let _a2 = c.admit(a_again).unwrap();
        assert_eq!(c.admit(a).err(), Some(ConnRefusal::MaxConnectionsPerIp));
        let _b1 = c.admit(b).unwrap();
        let _b2 = c.admit(b_same_64).unwrap();
        assert_eq!(c.admit(b).err(), Some(ConnRefusal::MaxConnectionsPerIp));
        // A trusted proxy has no per-address cap, but the global one holds for it too.
        let proxy: IpAddr = "192.0.2.100".parse().unwrap();
        let _p1 = c.admit(proxy).unwrap();
        assert_eq!(c.admit(proxy).err(), Some(ConnRefusal::MaxConnections));
        drop(a1);
        let p2 = c.admit(proxy).unwrap();
        assert_eq!(c.admit(a).err(), Some(ConnRefusal::MaxConnections));
        drop(p2);
        assert!(c.admit(a).is_ok());
        let s = c.stats();
        assert_eq!(s.refused_max_connections, 2);
        assert_eq!(s.refused_max_connections_per_ip, 2);
        assert_eq!(s.open, 4, "a2, b1, b2 and p1");
    }

    #[test]
    fn refused_and_closed_connections_give_their_places_back() {
        let c = Connections::new(limits(10, 1));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let held = c.admit(a).unwrap();
        for _ in 0..5 {
            assert!(c.admit(a).is_err());
        }
        assert_eq!(c.stats().open, 1);
        drop(held);
        assert_eq!(c.stats().open, 0);
        assert!(c.lock().is_empty(), "no entry left for a client gone");
        let proxy = c.admit("192.0.2.100".parse().unwrap()).unwrap();
        let proxy2 = c.admit("192.0.2.100".parse().unwrap()).unwrap();
        drop((proxy, proxy2));
        assert_eq!(c.stats().open, 0);
    }

    #[test]
    fn the_connection_cap_stays_under_the_open_files_limit() {
        assert_eq!(effective_max_connections(25_000, Some(1024)), 768);
        assert_eq!(effective_max_connections(25_000, Some(1_048_576)), 25_000);
        assert_eq!(effective_max_connections(25_000, None), 25_000);
        assert_eq!(effective_max_connections(25_000, Some(1)), 1);
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
