//! The golive server: HTTP and WebSocket signalling (axum) in front of media workers that each
//! own a UDP socket and a sans-IO [`golive_sfu::Sfu`].
//!
//! Data flow: a front-end (`ws` for the WebSocket protocol, `whip` for WHIP/WHEP) admits a
//! client and hands its messages to a session (`session`), which claims or looks up a stream in
//! the [`directory::Directory`] and asks a worker (`worker`) to answer an offer. Imports run one
//! way: front-ends → session → {directory, worker} → `golive_sfu`; the directory and the workers
//! report back through sinks they define ([`directory::AudienceSink`], [`worker::PeerEvents`]),
//! never by naming a session. From then on the
//! media never touches the async runtime of the signalling side: datagrams go socket → worker
//! → socket, and a broadcaster's packets reach viewers on other workers as shared
//! `Arc<SourcePacket>`s.

pub mod accept;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod embed;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod outbox;
pub mod ranking;
pub mod recording;
pub mod replay;
pub mod session;
pub mod thumbnails;
pub mod web;
pub mod whip;
pub mod worker;
pub mod ws;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::directory::{Directory, DirectoryLimits};
use crate::keys::StreamKeys;
use crate::limits::IpLimiter;
use crate::metrics::Metrics;
use crate::recording::Recordings;
use crate::session::{Admission, Lifecycle, Workers};
use crate::whip::WhipState;

/// How often viewer counts are considered for sending.
const VIEWER_COUNT_TICK: Duration = Duration::from_millis(200);

const PROTOCOL_MD: &str = include_str!("../../../docs/protocol.md");

/// What the handlers share, in parts: each handler takes the parts it needs (axum's
/// `State<Part>` through [`FromRef`]), so its signature says what it may touch.
#[derive(Clone)]
pub struct AppState {
    pub directory: Arc<Directory>,
    pub workers: Arc<Workers>,
    /// Who may publish which stream.
    pub keys: Arc<StreamKeys>,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    pub admission: Arc<Admission>,
    pub sessions: session::Settings,
    pub ws: ws::Limits,
    pub whip: Arc<WhipState>,
    /// Open HTTP connections and their caps.
    pub connections: Arc<accept::Connections>,
    /// Cluster mode (`--cluster-redis`); `None` on a node that runs alone.
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// Recordings and replays (off without `--record-dir`).
    pub recordings: Arc<Recordings>,
    /// How link previews and oEmbed learn this server's public URL.
    pub public_url: embed::PublicUrl,
}

/// Each part of [`AppState`] is a state of its own for the handlers.
macro_rules! parts {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.$field.clone()
            }
        }
    )*};
}

parts!(
    directory: Arc<Directory>,
    workers: Arc<Workers>,
    keys: Arc<StreamKeys>,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    admission: Arc<Admission>,
    sessions: session::Settings,
    ws: ws::Limits,
    whip: Arc<WhipState>,
    connections: Arc<accept::Connections>,
    cluster: Option<Arc<cluster::Cluster>>,
    recordings: Arc<Recordings>,
    public_url: embed::PublicUrl,
);

/// What a session needs, whichever front-end starts it.
impl FromRef<AppState> for session::Context {
    fn from_ref(state: &AppState) -> Self {
        session::Context {
            directory: state.directory.clone(),
            cluster: state.cluster.clone(),
            workers: state.workers.clone(),
            keys: state.keys.clone(),
            metrics: state.metrics.clone(),
            lifecycle: state.lifecycle.clone(),
            recordings: state.recordings.clone(),
            settings: state.sessions,
        }
    }
}

impl AppState {
    pub fn new(workers: Vec<worker::WorkerHandle>, config: &Config) -> anyhow::Result<Self> {
        let keys = match &config.keys_file {
            Some(path) => {
                let keys = StreamKeys::load(path)?;
                tracing::info!(streams = keys.len(), "stream keys from {}", path.display());
                keys
            }
            None => {
                tracing::warn!(
                    "no --keys-file: development mode, anyone may publish any free stream name"
                );
                StreamKeys::open()
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
        let lifecycle = Arc::new(Lifecycle::new(Duration::from_secs(
            config.drain_timeout_secs,
        )));
        let metrics =
            Arc::new(Metrics::new().with_max_stream_labels(config.metrics_max_stream_labels));
        let cluster = match config.cluster_settings()? {
            Some(settings) => Some(Arc::new(cluster::Cluster::new(settings, &metrics)?)),
            None => None,
        };
        Ok(Self {
            directory: Arc::new(Directory::new(DirectoryLimits {
                max_streams: config.max_streams,
                max_viewers_per_stream: config.max_viewers_per_stream,
                max_viewers: config.max_viewers,
            })),
            workers: Arc::new(Workers::new(workers)),
            keys: Arc::new(keys),
            metrics,
            admission: Arc::new(Admission::new(
                lifecycle.clone(),
                IpLimiter::new(
                    config.max_new_sessions_per_sec_per_ip,
                    config.max_sessions_per_ip,
                    config.exempt_loopback(),
                ),
                config.trusted_proxies.clone(),
            )),
            lifecycle,
            sessions: session::Settings {
                hearts_batch: Duration::from_millis(config.hearts_batch_ms),
                reconnect_grace: Duration::from_secs(config.reconnect_grace_secs),
                max_queued_messages: config.max_queued_messages.max(1),
            },
            ws: ws::Limits {
                max_frame_bytes: config.max_frame_bytes,
                max_messages_per_sec: config.max_messages_per_sec.max(1),
                idle_timeout: Duration::from_secs(config.ws_idle_timeout_secs.max(1)),
            },
            whip: Arc::new(WhipState {
                resources: whip::Resources::default(),
                ice_server_links: config.ice_server_links(),
            }),
            connections,
            cluster,
            recordings: Arc::new(Recordings::disabled()),
            public_url: embed::PublicUrl::new(config.trusted_proxies.clone()),
        })
    }
}

/// The HTTP routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/docs/protocol", get(protocol_doc))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/streams", get(streams))
        .route("/ws", get(ws::upgrade))
        .merge(web::routes())
        .merge(whip::routes())
        .merge(replay::routes())
        .merge(cluster::relay::routes())
        .with_state(state)
}

async fn protocol_doc() -> Response {
    (
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        PROTOCOL_MD,
    )
        .into_response()
}

async fn healthz(
    State(lifecycle): State<Arc<Lifecycle>>,
    State(directory): State<Arc<Directory>>,
    State(workers): State<Arc<Workers>>,
) -> Response {
    let (status, body) = health(
        lifecycle.is_draining(),
        &workers.health(),
        directory.stream_count(),
        lifecycle.open_sessions(),
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

async fn metrics(
    State(metrics): State<Arc<Metrics>>,
    State(directory): State<Arc<Directory>>,
    State(workers): State<Arc<Workers>>,
    State(connections): State<Arc<accept::Connections>>,
    State(recordings): State<Arc<Recordings>>,
) -> Response {
    let mut text = metrics.render(
        &workers.stats().await,
        &workers.health(),
        &connections.stats(),
        directory.stream_count(),
        directory.viewer_count(),
        &directory.viewers_per_stream(metrics.max_stream_labels()),
    );
    text.push_str(&recordings.render_metrics());
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response()
}

/// The live streams: in cluster mode, every node's.
async fn streams(
    State(directory): State<Arc<Directory>>,
    State(cluster): State<Option<Arc<cluster::Cluster>>>,
) -> Response {
    let list = match cluster {
        Some(c) => c.streams(&directory),
        None => directory.list(),
    };
    // Readable from any origin: the SDK on other sites follows a stream through it.
    (
        [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
        axum::Json(list),
    )
        .into_response()
}

/// Binds the media sockets and starts the workers.
pub fn start_media(config: &Config) -> anyhow::Result<AppState> {
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
    let recording = config.recording();
    let taps = recording
        .as_ref()
        .map(|_| Arc::new(recording::RecordingTaps::default()));
    if config.no_udp_gso {
        tracing::info!("UDP GSO off (--no-udp-gso): lean viewers' batches go by sendmmsg");
        worker::UDP_GSO_DISABLED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
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
        worker::Sharing {
            taps: taps.clone(),
            relays: config.cluster_redis.is_some(),
        },
    )?;
    for w in &workers {
        tracing::info!(worker = w.index, "media on udp {}", w.addr);
    }
    let mut state = AppState::new(workers, config)?;
    if let (Some(rc), Some(taps)) = (recording, taps) {
        tracing::info!(dir = %rc.dir.display(), "recording every broadcast");
        state.recordings = Arc::new(Recordings::new(Some(rc), taps));
        state
            .recordings
            .set_workers(state.workers.handles().to_vec());
        let recordings = state.recordings.clone();
        state.directory.set_observer(Box::new(move |stream, msg| {
            recordings.timeline(stream, msg)
        }));
    }
    Ok(state)
}

/// Serves HTTP and signalling until `shutdown` resolves and every session has closed.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let directory = state.directory.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(VIEWER_COUNT_TICK);
        loop {
            tick.tick().await;
            directory.send_viewer_counts(Instant::now());
        }
    });
    let hearts_batch = state.sessions.hearts_batch;
    if !hearts_batch.is_zero() {
        let directory = state.directory.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(hearts_batch);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                directory.send_heart_batches();
            }
        });
    }

    if let Some(cluster) = state.cluster.clone() {
        cluster.start_live(&state.directory);
        tokio::spawn(cluster.run(
            state.directory.clone(),
            state.workers.clone(),
            listener.local_addr()?,
        ));
    }

    if let Some(retention) = state.recordings.retention() {
        let recordings = state.recordings.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(
                recording::RETENTION_SWEEP_INTERVAL.min(retention.max(Duration::from_secs(1))),
            );
            loop {
                tick.tick().await;
                let r = recordings.clone();
                let _ = tokio::task::spawn_blocking(move || r.sweep(std::time::SystemTime::now()))
                    .await;
            }
        });
    }

    let lifecycle = state.lifecycle.clone();
    let connections = state.connections.clone();
    let recordings = state.recordings.clone();
    accept::serve(listener, app(state), connections, async move {
        shutdown.await;
        drain(&lifecycle, &recordings).await;
    })
    .await?;
    Ok(())
}

/// Graceful drain: refuse new sessions (health says draining), tell every session to end, and
/// wait until they have closed or the drain timeout passed. HTTP keeps serving meanwhile.
async fn drain(lifecycle: &Lifecycle, recordings: &Recordings) {
    let timeout = lifecycle.drain_timeout();
    tracing::info!(
        sessions = lifecycle.open_sessions(),
        ?timeout,
        "draining: telling every session"
    );
    lifecycle.begin_drain();
    let deadline = Instant::now() + timeout;
    while lifecycle.open_sessions() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = lifecycle.open_sessions();
    if left > 0 {
        tracing::warn!(sessions = left, "drain timeout passed; closing anyway");
    } else {
        tracing::info!("every session closed");
    }
    // Recordings end with their broadcasts; their files are completed before the process exits.
    recordings.end_all();
    let deadline = Instant::now() + recording::FINISH_TIMEOUT;
    while recordings.active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
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
