//! The golive server: HTTP and WebSocket signalling (axum) in front of media workers that each
//! own a UDP socket and a sans-IO [`golive_sfu::Sfu`].
//!
//! Data flow: a session (`session`) parses signalling, claims or looks up a stream in the
//! [`directory::Directory`], and asks a worker (`worker`) to answer an offer. From then on the
//! media never touches the async runtime of the signalling side: datagrams go socket → worker
//! → socket, and a broadcaster's packets reach viewers on other workers as shared
//! `Arc<SourcePacket>`s.

pub mod accept;
pub mod config;
pub mod directory;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod session;
pub mod web;
pub mod whip;
pub mod worker;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::config::Config;
use crate::directory::{Directory, DirectoryLimits};
use crate::limits::IpLimiter;
use crate::metrics::Metrics;
use crate::worker::{WorkerHandle, WorkerStats};

/// Titles are cut to this many characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Frames above the frame limit are read (up to this, or twice the limit) so they can be
/// refused with 1009 rather than by a dropped connection.
const WS_READ_LIMIT_BYTES: usize = 1024 * 1024;
/// How often viewer counts are considered for sending.
const VIEWER_COUNT_TICK: Duration = Duration::from_millis(200);

const PROTOCOL_MD: &str = include_str!("../../../docs/protocol.md");

/// What every handler shares.
pub struct AppState {
    pub directory: Directory,
    /// Live WHIP and WHEP session resources.
    pub whip: whip::Resources,
    /// `Link: <…>; rel="ice-server"` values for WHIP/WHEP responses.
    pub ice_server_links: Vec<String>,
    /// Who may publish which stream.
    pub keys: keys::StreamKeys,
    /// Hearts are gathered and sent this often; zero sends each at once.
    pub hearts_batch: Duration,
    pub workers: Vec<WorkerHandle>,
    next_worker: AtomicUsize,
    /// Set on SIGTERM: every session is told to end, new ones are refused.
    pub shutdown: watch::Sender<bool>,
    pub draining: AtomicBool,
    /// Sessions alive (WebSocket and WHIP/WHEP).
    pub sessions: AtomicUsize,
    pub metrics: Metrics,
    pub ip_limiter: Arc<IpLimiter>,
    pub max_frame_bytes: usize,
    pub max_messages_per_sec: u32,
    pub ws_idle_timeout: Duration,
    pub drain_timeout: Duration,
    /// How long viewers wait for a broadcaster whose connection was lost.
    pub reconnect_grace: Duration,
    pub metrics_max_stream_labels: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Open HTTP connections and their caps.
    pub connections: Arc<accept::Connections>,
}

impl AppState {
    pub fn new(workers: Vec<WorkerHandle>, config: &Config) -> anyhow::Result<Self> {
        assert!(!workers.is_empty(), "at least one media worker");
        let keys = match &config.keys_file {
            Some(path) => {
                let keys = keys::StreamKeys::load(path)?;
                tracing::info!(streams = keys.len(), "stream keys from {}", path.display());
                keys
            }
            None => {
                tracing::warn!(
                    "no --keys-file: development mode, anyone may publish any free stream name"
                );
                keys::StreamKeys::open()
            }
        };
        let max_connections =
            accept::effective_max_connections(config.max_connections, accept::open_files_limit());
        if max_connections < config.max_connections {
            tracing::warn!(
                max_connections,
                "--max-connections lowered to three quarters of the open-files limit \
                 (raise it with `ulimit -n` or LimitNOFILE=)"
            );
        }
        if config.max_connections_per_ip < config.max_sessions_per_ip {
            tracing::warn!(
                "--max-connections-per-ip is below --max-sessions-per-ip: clients will be \
                 refused connections before they reach their session limit"
            );
        }
        let connections = accept::Connections::new(accept::HttpLimits {
            header_timeout: Duration::from_secs(config.http_header_timeout_secs.max(1)),
            max_connections,
            max_connections_per_ip: config.max_connections_per_ip.max(1),
            exempt_ips: config.trusted_proxies.clone(),
            exempt_loopback: config.exempt_loopback(),
        });
        Ok(Self {
            directory: Directory::new(DirectoryLimits {
                max_streams: config.max_streams,
                max_viewers_per_stream: config.max_viewers_per_stream,
                max_viewers: config.max_viewers,
            }),
            whip: whip::Resources::default(),
            ice_server_links: config.ice_server_links(),
            keys,
            hearts_batch: Duration::from_millis(config.hearts_batch_ms),
            workers,
            next_worker: AtomicUsize::new(0),
            shutdown: watch::Sender::new(false),
            draining: AtomicBool::new(false),
            sessions: AtomicUsize::new(0),
            metrics: Metrics::new(),
            ip_limiter: IpLimiter::new(
                config.max_new_sessions_per_sec_per_ip,
                config.max_sessions_per_ip,
                config.exempt_loopback(),
            ),
            max_frame_bytes: config.max_frame_bytes,
            max_messages_per_sec: config.max_messages_per_sec.max(1),
            ws_idle_timeout: Duration::from_secs(config.ws_idle_timeout_secs.max(1)),
            drain_timeout: Duration::from_secs(config.drain_timeout_secs),
            reconnect_grace: Duration::from_secs(config.reconnect_grace_secs),
            metrics_max_stream_labels: config.metrics_max_stream_labels,
            trusted_proxies: config.trusted_proxies.clone(),
            connections,
        })
    }

    /// The client's address for per-IP limits: the connection's, or, when that is a trusted
    /// proxy, the nearest untrusted address of `X-Forwarded-For` (read from the right, since
    /// the left part is whatever the client claimed).
    pub fn client_ip(&self, peer: SocketAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
        if !self.trusted_proxies.contains(&peer.ip()) {
            return peer.ip();
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
            .rev()
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer.ip())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Every worker's totals (`None` for one that is down or did not answer).
    async fn worker_stats(&self) -> Vec<Option<WorkerStats>> {
        let mut all = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            all.push(w.stats().await);
        }
        all
    }

    /// Spreads peers over the live workers in turn. A worker that is restarting after a panic
    /// is skipped; only when every worker is, the next in turn is taken anyway: its commands
    /// wait in its queue and are answered as soon as it is back, a moment later.
    pub fn pick_worker(&self) -> WorkerHandle {
        let turn = self.next_worker.fetch_add(1, Ordering::Relaxed);
        pick_alive(&self.workers, turn).clone()
    }
}

/// The first live worker from `turn` on, or the one whose turn it is when none is alive.
fn pick_alive(workers: &[WorkerHandle], turn: usize) -> &WorkerHandle {
    let n = workers.len();
    (0..n)
        .map(|k| &workers[(turn + k) % n])
        .find(|w| w.is_alive())
        .unwrap_or(&workers[turn % n])
}

/// The HTTP routes.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/docs/protocol", get(protocol_doc))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/streams", get(streams))
        .route("/ws", get(ws))
        .merge(web::routes())
        .merge(whip::routes())
        .with_state(state)
}

async fn protocol_doc() -> Response {
    (
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        PROTOCOL_MD,
    )
        .into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let workers: Vec<_> = state.workers.iter().map(|w| w.health()).collect();
    let (status, body) = health(
        state.is_draining(),
        &workers,
        state.directory.stream_count(),
        state.sessions.load(Ordering::Relaxed),
    );
    (status, axum::Json(body)).into_response()
}

/// 200 `ok` while serving. 503 with `draining` once a shutdown began, and with `degraded` while
/// a media worker is restarting after a panic, so a load balancer moves new people away (the
/// workers that are up keep serving everyone they hold). Each worker is listed with its state,
/// its media peers and how often it was restarted.
fn health(
    draining: bool,
    workers: &[worker::WorkerHealth],
    streams: usize,
    sessions: usize,
) -> (StatusCode, serde_json::Value) {
    let down = workers
        .iter()
        .any(|w| w.state != worker::WorkerState::Alive);
    let status = if draining {
        "draining"
    } else if down {
        "degraded"
    } else {
        "ok"
    };
    let body = serde_json::json!({
        "status": status,
        "streams": streams,
        "sessions": sessions,
        "workers": workers.iter().map(|w| serde_json::json!({
            "index": w.index,
            "state": w.state.as_str(),
            "peers": w.peers,
            "restarts": w.restarts,
        })).collect::<Vec<_>>(),
    });
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let workers = state.worker_stats().await;
    let health: Vec<_> = state.workers.iter().map(|w| w.health()).collect();
    let text = state.metrics.render(
        &workers,
        &health,
        &state.connections.stats(),
        state.directory.stream_count(),
        state.directory.viewer_count(),
        &state
            .directory
            .viewers_per_stream(state.metrics_max_stream_labels),
    );
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response()
}

async fn streams(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.directory.list()).into_response()
}

async fn ws(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let limit = WS_READ_LIMIT_BYTES.max(state.max_frame_bytes.saturating_mul(2));
    // Refusals are sent over the socket: a browser cannot read the status of a failed upgrade.
    let admitted = if state.is_draining() {
        Err(session::Refused::Draining)
    } else {
        state
            .ip_limiter
            .acquire(state.client_ip(peer, &headers), Instant::now())
            .map_err(session::Refused::Limit)
    };
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| session::run(socket, state, admitted))
}

/// Binds the media sockets and starts the workers.
pub fn start_media(config: &Config) -> anyhow::Result<Arc<AppState>> {
    let srtp = golive_sfu::SrtpPolicy {
        allow_legacy_cm: config.srtp_legacy,
    };
    #[cfg(debug_assertions)]
    if let Some(token) = &config.test_worker_panic {
        anyhow::ensure!(
            token.len() >= 16,
            "--test-worker-panic needs a token of at least 16 bytes"
        );
        tracing::warn!(
            "test hook armed: a datagram carrying the --test-worker-panic token makes a media worker panic"
        );
        let _ = worker::TEST_PANIC_TOKEN.set(token.as_bytes().to_vec());
    }
    let workers = worker::start_workers(
        config.worker_count(),
        config.udp_bind_ip(),
        config.udp_port,
        config.advertised_ip()?,
        srtp,
        golive_sfu::MediaOptions {
            keyframe_cache: !config.no_keyframe_cache,
            ..Default::default()
        },
    )?;
    for w in &workers {
        tracing::info!(worker = w.index, "media on udp {}", w.addr);
    }
    Ok(Arc::new(AppState::new(workers, config)?))
}

/// Serves HTTP and signalling until `shutdown` resolves and every session has closed.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let ticker_state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(VIEWER_COUNT_TICK);
        loop {
            tick.tick().await;
            ticker_state.directory.send_viewer_counts(Instant::now());
        }
    });
    if !state.hearts_batch.is_zero() {
        let hearts_state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hearts_state.hearts_batch);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                hearts_state.directory.send_heart_batches();
            }
        });
    }

    let shutdown_state = state.clone();
    let connections = state.connections.clone();
    accept::serve(listener, app(state), connections, async move {
        shutdown.await;
        drain(&shutdown_state).await;
    })
    .await?;
    Ok(())
}

/// Graceful drain: refuse new sessions (health says draining), tell every session to end, and
/// wait until they have closed or the drain timeout passed. HTTP keeps serving meanwhile.
async fn drain(state: &AppState) {
    state.draining.store(true, Ordering::Relaxed);
    let open = state.sessions.load(Ordering::Relaxed);
    tracing::info!(sessions = open, timeout = ?state.drain_timeout, "draining: telling every session");
    state.shutdown.send_replace(true);
    let deadline = Instant::now() + state.drain_timeout;
    while state.sessions.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = state.sessions.load(Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(sessions = left, "drain timeout passed; closing anyway");
    } else {
        tracing::info!("every session closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{WorkerHealth, WorkerState};

    fn worker(index: usize, state: WorkerState) -> WorkerHealth {
        WorkerHealth {
            index,
            state,
            peers: 3,
            restarts: 1,
        }
    }

    #[test]
    fn new_peers_skip_a_worker_that_is_restarting() {
        let workers = [
            WorkerHandle::detached(0, true),
            WorkerHandle::detached(1, false),
            WorkerHandle::detached(2, true),
        ];
        let picked: Vec<usize> = (0..6).map(|t| pick_alive(&workers, t).index).collect();
        assert_eq!(picked, [0, 2, 2, 0, 2, 2]);
        let all_down = [
            WorkerHandle::detached(0, false),
            WorkerHandle::detached(1, false),
        ];
        assert_eq!(
            pick_alive(&all_down, 3).index,
            1,
            "the one whose turn it is"
        );
    }

    #[test]
    fn health_is_503_while_a_worker_restarts_or_the_server_drains() {
        let up = [worker(0, WorkerState::Alive), worker(1, WorkerState::Alive)];
        let (code, body) = health(false, &up, 2, 5);
        assert_eq!(code, StatusCode::OK);
        assert_eq!(body["status"], "ok");
        assert_eq!(body["workers"][1]["state"], "alive");
        assert_eq!(body["workers"][1]["peers"], 3);
        assert_eq!(body["workers"][1]["restarts"], 1);

        let one_down = [
            worker(0, WorkerState::Alive),
            worker(1, WorkerState::Restarting),
        ];
        let (code, body) = health(false, &one_down, 2, 5);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["workers"][1]["state"], "restarting");

        let (code, body) = health(true, &up, 0, 0);
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "draining");
    }
}
