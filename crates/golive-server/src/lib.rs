//! The golive server: HTTP and WebSocket signalling (axum) in front of media workers that each
//! own a UDP socket and a sans-IO [`golive_sfu::Sfu`].
//!
//! Data flow: a session (`session`) parses signalling, claims or looks up a stream in the
//! [`directory::Directory`], and asks a worker (`worker`) to answer an offer. From then on the
//! media never touches the async runtime of the signalling side: datagrams go socket → worker
//! → socket, and a broadcaster's packets reach viewers on other workers as shared
//! `Arc<SourcePacket>`s.

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

    /// Every worker's totals, summed where a scrape needs them.
    async fn worker_stats(&self) -> Vec<WorkerStats> {
        let mut all = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            all.push(w.stats().await.unwrap_or_default());
        }
        all
    }

    /// Spreads peers over workers in turn.
    pub fn pick_worker(&self) -> WorkerHandle {
        let i = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.workers[i].clone()
    }
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

/// 200 while serving; 503 with `"status":"draining"` once a shutdown began, so a load balancer
/// moves people away.
async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let draining = state.is_draining();
    let body = serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "streams": state.directory.stream_count(),
        "sessions": state.sessions.load(Ordering::Relaxed),
        "workers": state.workers.len(),
    });
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let workers = state.worker_stats().await;
    let text = state.metrics.render(
        &workers,
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
    let workers = worker::start_workers(
        config.worker_count(),
        config.udp_bind_ip(),
        config.udp_port,
        config.advertised_ip()?,
        srtp,
        golive_sfu::MediaOptions {
            keyframe_cache: !config.no_keyframe_cache,
            viewer_leg: config.viewer_leg,
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
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
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
