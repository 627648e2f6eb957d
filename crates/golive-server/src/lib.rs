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
pub mod session;
pub mod web;
pub mod whip;
pub mod worker;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use crate::config::Config;
use crate::directory::Directory;
use crate::worker::WorkerHandle;

/// Titles are cut to this many characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Frames above the protocol limit are read (up to this) so they can be refused with 1009.
const WS_READ_LIMIT_BYTES: usize = 1024 * 1024;
/// How often viewer counts are considered for sending.
const VIEWER_COUNT_TICK: Duration = Duration::from_millis(200);

const INDEX_HTML: &str = include_str!("../../../web/index.html");
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
    pub shutdown: watch::Sender<bool>,
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
            directory: Directory::default(),
            whip: whip::Resources::default(),
            ice_server_links: config.ice_server_links(),
            keys,
            hearts_batch: Duration::from_millis(config.hearts_batch_ms),
            workers,
            next_worker: AtomicUsize::new(0),
            shutdown: watch::Sender::new(false),
        })
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
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/docs/protocol", get(protocol_doc))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(healthz))
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
    let body = serde_json::json!({
        "status": "ok",
        "streams": state.directory.stream_count(),
        "workers": state.workers.len(),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn streams(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.directory.list()).into_response()
}

async fn ws(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_READ_LIMIT_BYTES)
        .max_frame_size(WS_READ_LIMIT_BYTES)
        .on_upgrade(move |socket| session::run(socket, state))
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
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: telling every session");
            // Sessions end their broadcasts and close their sockets, which lets the graceful
            // shutdown finish.
            shutdown_state.shutdown.send_replace(true);
        })
        .await?;
    Ok(())
}
