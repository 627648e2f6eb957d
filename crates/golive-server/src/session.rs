//! A signalling session: one broadcaster or one viewer, behind either front-end (the
//! WebSocket protocol in `ws`, WHIP/WHEP in `whip`).
//!
//! A session takes parsed client messages one at a time, calls the directory and a media
//! worker, and maps every failure to a [`ProtocolError`]; it stays usable after an error about
//! a message. What it says on its own (audience frames, `ended`) comes out of its outbox.
//! Dropping its handle (the socket closed, the WHIP resource was deleted) ends the session's
//! broadcast or viewing at once.

use axum::http::HeaderMap;
use golive_proto::{
    ClientMessage, EndReason, ErrorCode, ProtocolError, QualityLayer, QualityPreference,
    QualityReason, ServerMessage, StreamName, chat_text, display_name,
};
use golive_sfu::bwe::{Preference, SwitchReason};
use golive_sfu::{PeerId, SfuError};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

use crate::cluster::Cluster;
use crate::directory::{AudienceEvent, AudienceSink, Directory, MemberId, Sink, limit_label};
use crate::keys::StreamKeys;
use crate::limits::{IpLimiter, IpSlot, Refusal, TokenBucket};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxRx, Outgoing, outbox};
use crate::recording::{Recordings, Started};
use crate::worker::{Command, PeerEvent, PeerEvents, WorkerHandle, WorkerHealth, WorkerStats};

/// What every session shares, whichever front-end it is behind.
#[derive(Clone)]
pub struct Context {
    pub directory: Arc<Directory>,
    /// Cluster mode (`--cluster-redis`); `None` on a node that runs alone.
    pub cluster: Option<Arc<Cluster>>,
    pub workers: Arc<Workers>,
    pub keys: Arc<StreamKeys>,
    pub metrics: Arc<Metrics>,
    pub lifecycle: Arc<Lifecycle>,
    /// Recordings and replays (off without `--record-dir`).
    pub recordings: Arc<Recordings>,
    pub settings: Settings,
}

/// How sessions behave, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Hearts are gathered and sent this often; zero sends each at once.
    pub hearts_batch: Duration,
    /// How long viewers wait for a broadcaster whose connection was lost.
    pub reconnect_grace: Duration,
    /// Messages waiting for one client (see [`Outbox`]).
    pub max_queued_messages: usize,
}

/// The media workers: new peers are spread over them in turn.
pub struct Workers {
    handles: Vec<WorkerHandle>,
    next: AtomicUsize,
}

impl Workers {
    pub fn new(handles: Vec<WorkerHandle>) -> Self {
        assert!(!handles.is_empty(), "at least one media worker");
        Self {
            handles,
            next: AtomicUsize::new(0),
        }
    }

    /// The worker that takes the next peer: the live workers in turn. A worker that is
    /// restarting after a panic is skipped; only when every worker is, the next in turn is taken
    /// anyway: its commands wait in its queue and are answered as soon as it is back, a moment
    /// later.
    pub fn pick(&self) -> WorkerHandle {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        pick_alive(&self.handles, turn).clone()
    }

    pub fn handles(&self) -> &[WorkerHandle] {
        &self.handles
    }

    /// Every worker's totals (`None` for one that is down or did not answer).
    pub async fn stats(&self) -> Vec<Option<WorkerStats>> {
        let mut all = Vec::with_capacity(self.handles.len());
        for w in &self.handles {
            all.push(w.stats().await);
        }
        all
    }

    /// Every worker's state, for `/healthz` and `/metrics`.
    pub fn health(&self) -> Vec<WorkerHealth> {
        self.handles.iter().map(|w| w.health()).collect()
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

/// The sessions alive, and the server's drain: once it begins (on SIGTERM) every session is
/// told to end and new ones are refused.
pub struct Lifecycle {
    shutdown: watch::Sender<bool>,
    draining: AtomicBool,
    open: AtomicUsize,
    drain_timeout: Duration,
}

impl Lifecycle {
    pub fn new(drain_timeout: Duration) -> Self {
        Self {
            shutdown: watch::Sender::new(false),
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            drain_timeout,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Sessions alive (WebSocket and WHIP/WHEP).
    pub fn open_sessions(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// How long a drain waits for sessions to close.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Refuses new sessions from now on and tells every open one to end.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.shutdown.send_replace(true);
    }
}

/// Why a session was not admitted.
#[derive(Debug)]
pub enum Refused {
    Draining,
    Limit(Refusal),
}

/// Who may open a session: nobody while the server drains, and each client address within
/// its limits.
pub struct Admission {
    lifecycle: Arc<Lifecycle>,
    limiter: Arc<IpLimiter>,
    /// Proxies whose `X-Forwarded-For` names the client.
    trusted_proxies: Vec<IpAddr>,
}

impl Admission {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        limiter: Arc<IpLimiter>,
        trusted_proxies: Vec<IpAddr>,
    ) -> Self {
        Self {
            lifecycle,
            limiter,
            trusted_proxies,
        }
    }

    /// A place for a new session of the client at `peer` (the connection's address), held
    /// until the returned slot is dropped.
    pub fn admit(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<IpSlot, Refused> {
        if self.lifecycle.is_draining() {
            return Err(Refused::Draining);
        }
        self.limiter
            .acquire(self.client_ip(peer, headers), Instant::now())
            .map_err(Refused::Limit)
    }

    /// The client's address for per-IP limits: the connection's, or, when that is a trusted
    /// proxy, the nearest untrusted address of `X-Forwarded-For` (read from the right, since
    /// the left part is whatever the client claimed).
    fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.contains(&peer.ip()) {
            return peer.ip();
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .rev()
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer.ip())
    }
}

/// Identifies a signalling session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl From<SessionId> for MemberId {
    fn from(id: SessionId) -> Self {
        MemberId(id.0)
    }
}

/// Chat: a burst of this many messages, then one per [`CHAT_REFILL_PER_SEC`].
const CHAT_BURST: f64 = 5.0;
const CHAT_REFILL_PER_SEC: f64 = 1.0;
/// Hearts past this many a second from one sender are dropped silently.
const HEARTS_PER_SEC: f64 = 10.0;
/// Titles are cut to this many characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Name of a broadcaster who gave none.
const DEFAULT_BROADCASTER_NAME: &str = "broadcaster";

/// The session's place in the directory. Audience frames go straight into the client's outbox
/// (in the order the directory sends them, never waiting); the end of a broadcast goes to the
/// session's task, which ends the viewing before it says `ended`.
struct Member {
    outbox: Outbox,
    /// Unbounded, yet at most one: the directory drops a viewer as it tells it the end.
    ended: mpsc::UnboundedSender<EndReason>,
}

impl AudienceSink for Member {
    fn deliver(&self, event: AudienceEvent) {
        match event {
            AudienceEvent::Frame(f) => self.outbox.push(Outgoing::Frame(f)),
            AudienceEvent::Ended(reason) => {
                let _ = self.ended.send(reason);
            }
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

enum Role {
    Idle,
    Publishing {
        stream: StreamName,
        peer: PeerId,
        worker: WorkerHandle,
    },
    Watching {
        stream: StreamName,
        peer: PeerId,
        worker: WorkerHandle,
        /// When the watch arrived, for the time-to-first-frame histogram.
        since: Instant,
    },
}

struct Session {
    id: SessionId,
    ctx: Context,
    role: Role,
    /// Where the directory tells this session about its stream.
    audience: Sink,
    /// What the session says on its own, to its client.
    outbox: Outbox,
    /// Where workers tell this session about its media peer.
    peer_events: PeerEvents,
    chat_limit: TokenBucket,
    heart_limit: TokenBucket,
}

fn sfu_error(e: SfuError) -> ProtocolError {
    match e {
        SfuError::BadSdp(m) => ProtocolError::new(ErrorCode::BadSdp, m),
        SfuError::CodecUnsupported(m) => ProtocolError::new(ErrorCode::CodecUnsupported, m),
        SfuError::BadCandidate(m) => ProtocolError::bad_request(format!("bad candidate: {m}")),
        SfuError::UnknownPeer => ProtocolError::bad_request("the session has no media peer"),
        SfuError::Internal(m) => {
            tracing::error!("internal error: {m}");
            ProtocolError::new(ErrorCode::Internal, "internal error; see the server log")
        }
    }
}

fn preference(prefer: QualityPreference) -> Preference {
    match prefer {
        QualityPreference::Auto => Preference::Auto,
        QualityPreference::High => Preference::High,
        QualityPreference::Medium => Preference::Medium,
        QualityPreference::Low => Preference::Low,
    }
}

fn quality_reason(reason: SwitchReason) -> QualityReason {
    match reason {
        SwitchReason::Bandwidth => QualityReason::Bandwidth,
        SwitchReason::Preference => QualityReason::Preference,
        SwitchReason::Publisher => QualityReason::Publisher,
    }
}

fn stream_name(name: &str) -> Result<StreamName, ProtocolError> {
    StreamName::new(name).map_err(|e| ProtocolError::new(ErrorCode::BadStreamName, e.to_string()))
}

/// What a front-end (WebSocket or WHIP/WHEP) asks of a session.
pub type Reply = Result<Option<ServerMessage>, ProtocolError>;

/// The handle a front-end holds. Dropping it (every clone of it) ends the session: its broadcast
/// or viewing stops and its media peer is freed at once.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: SessionId,
    inputs: mpsc::Sender<(ClientMessage, oneshot::Sender<Reply>)>,
}

impl SessionHandle {
    /// Hands one client message to the session and waits for its reply.
    pub async fn call(&self, msg: ClientMessage) -> Reply {
        let (tx, rx) = oneshot::channel();
        if self.inputs.send((msg, tx)).await.is_err() {
            return Err(ProtocolError::new(
                ErrorCode::Internal,
                "the session has ended",
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ProtocolError::new(
                ErrorCode::Internal,
                "the session has ended",
            ))
        })
    }
}

/// Starts a session. Messages the server sends on its own (viewer counts, `ended`) come out of
/// the returned queue; it closes when the session is over (for instance at shutdown).
pub fn spawn(ctx: Context) -> (SessionHandle, OutboxRx) {
    let (inputs_tx, mut inputs) = mpsc::channel::<(ClientMessage, oneshot::Sender<Reply>)>(8);
    let (outbox, outbox_rx) = outbox(ctx.settings.max_queued_messages);
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let (peer_events, mut peer_events_rx) = mpsc::unbounded_channel();
    let mut shutdown: watch::Receiver<bool> = ctx.lifecycle.shutdown.subscribe();
    let id = SessionId(next_id());
    let mut s = Session {
        id,
        ctx,
        role: Role::Idle,
        audience: Arc::new(Member {
            outbox: outbox.clone(),
            ended: ended_tx,
        }),
        outbox,
        peer_events,
        chat_limit: TokenBucket::new(CHAT_BURST, CHAT_REFILL_PER_SEC, Instant::now()),
        heart_limit: TokenBucket::new(HEARTS_PER_SEC, HEARTS_PER_SEC, Instant::now()),
    };
    s.ctx.lifecycle.open.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        tracing::debug!(session = id.0, "session opened");
        loop {
            tokio::select! {
                input = inputs.recv() => {
                    let Some((msg, reply)) = input else { break };
                    let ty = msg.type_name();
                    s.ctx.metrics.signalling_message(ty);
                    let r = s.handle(msg).await;
                    if let Err(e) = &r {
                        tracing::debug!(session = id.0, code = %e.code, "refused: {}", e.message);
                        s.ctx.metrics.signalling_error(e.code.as_str());
                        if let Some(limit) = limit_label(e.code, ty == "publish") {
                            s.ctx.metrics.limit_refused(limit);
                        }
                    }
                    let _ = reply.send(r);
                }
                Some(reason) = ended.recv() => s.on_ended(reason).await,
                Some(ev) = peer_events_rx.recv() => s.on_peer(ev).await,
                _ = shutdown.changed() => {
                    s.say(ServerMessage::Ended { reason: EndReason::ServerShutdown });
                    break;
                }
            }
        }
        // The socket closed (or the HTTP session was dropped) without a leave: a broadcaster
        // may come back, unless the server itself is going away.
        let lost = !*shutdown.borrow();
        let reason = if lost {
            EndReason::BroadcasterLeft
        } else {
            EndReason::ServerShutdown
        };
        s.end(reason, lost).await;
        s.ctx.lifecycle.open.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(session = id.0, "session closed");
    });
    (
        SessionHandle {
            id,
            inputs: inputs_tx,
        },
        outbox_rx,
    )
}

impl Session {
    async fn handle(&mut self, msg: ClientMessage) -> Result<Option<ServerMessage>, ProtocolError> {
        match msg {
            ClientMessage::Publish {
                stream,
                sdp,
                key,
                title,
                name,
                record,
            } => {
                let r = self.publish(&stream, sdp, key, title, name).await;
                if r.is_ok() {
                    self.start_recording(record.unwrap_or(true));
                }
                r.map(Some)
            }
            ClientMessage::Watch { stream, sdp, name } => {
                self.watch(&stream, sdp, name).await.map(Some)
            }
            ClientMessage::Chat { text } => {
                let stream = self.stream()?.clone();
                let text = chat_text(&text)?;
                if !self.chat_limit.take(Instant::now()) {
                    return Err(ProtocolError::new(
                        ErrorCode::RateLimited,
                        "too many chat messages; wait a moment",
                    ));
                }
                // Cluster mode: the id is the cluster's, and a mute on any node holds.
                let id = match &self.ctx.cluster {
                    Some(c) => {
                        c.chat_id(&self.ctx.directory, &stream, self.id.into())
                            .await?
                    }
                    None => None,
                };
                self.ctx
                    .directory
                    .chat_as(&stream, self.id.into(), text, id)?;
                Ok(None)
            }
            ClientMessage::Heart => {
                let stream = self.stream()?.clone();
                if self.heart_limit.take(Instant::now()) {
                    let immediate = self.ctx.settings.hearts_batch.is_zero();
                    self.ctx.directory.heart(&stream, immediate);
                }
                Ok(None)
            }
            ClientMessage::Remove { id } => {
                let stream = self.stream()?.clone();
                self.ctx
                    .directory
                    .remove_chat(&stream, self.id.into(), id)?;
                Ok(None)
            }
            ClientMessage::Mute { name } => {
                let stream = self.stream()?.clone();
                let name = display_name(&name)?;
                self.ctx.directory.mute(&stream, self.id.into(), &name)?;
                Ok(None)
            }
            ClientMessage::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
                ..
            } => {
                let (peer, worker) = match &self.role {
                    Role::Publishing { peer, worker, .. } | Role::Watching { peer, worker, .. } => {
                        (*peer, worker.clone())
                    }
                    Role::Idle => {
                        return Err(ProtocolError::bad_request(
                            "a candidate needs a publish or watch first",
                        ));
                    }
                };
                worker
                    .call(|reply| Command::Candidate {
                        id: peer,
                        candidate,
                        sdp_mid,
                        sdp_mline_index,
                        reply,
                    })
                    .await
                    .map_err(sfu_error)?;
                Ok(None)
            }
            ClientMessage::Leave => {
                self.end(EndReason::BroadcasterLeft, false).await;
                Ok(None)
            }
            ClientMessage::Quality { prefer } => {
                let Role::Watching { peer, worker, .. } = &self.role else {
                    return Err(ProtocolError::bad_request(
                        "quality is a viewer's choice: watch a stream first",
                    ));
                };
                let (peer, worker) = (*peer, worker.clone());
                worker
                    .call(|reply| Command::Quality {
                        id: peer,
                        preference: preference(prefer),
                        reply,
                    })
                    .await
                    .map_err(sfu_error)?;
                Ok(None)
            }
            ClientMessage::Thumbnail { jpeg } => {
                let stream = self.stream()?.clone();
                let thumbnail = crate::thumbnails::Thumbnail::from_base64(&jpeg, Instant::now())?;
                self.ctx
                    .directory
                    .set_thumbnail(&stream, self.id.into(), thumbnail)?;
                Ok(None)
            }
        }
    }

    /// The stream this session broadcasts or watches.
    fn stream(&self) -> Result<&StreamName, ProtocolError> {
        match &self.role {
            Role::Publishing { stream, .. } | Role::Watching { stream, .. } => Ok(stream),
            Role::Idle => Err(ProtocolError::bad_request(
                "publish or watch a stream first",
            )),
        }
    }

    fn ensure_accepting(&self) -> Result<(), ProtocolError> {
        if self.ctx.lifecycle.is_draining() {
            return Err(ProtocolError::new(
                ErrorCode::Draining,
                "the server is shutting down",
            ));
        }
        Ok(())
    }

    fn ensure_idle(&self) -> Result<(), ProtocolError> {
        match self.role {
            Role::Idle => Ok(()),
            _ => Err(ProtocolError::bad_request(
                "this session already publishes or watches; send leave first",
            )),
        }
    }

    async fn publish(
        &mut self,
        stream: &str,
        sdp: String,
        key: Option<String>,
        title: Option<String>,
        name: Option<String>,
    ) -> Result<ServerMessage, ProtocolError> {
        let stream = stream_name(stream)?;
        self.ensure_idle()?;
        self.ensure_accepting()?;
        let name = match name {
            Some(n) => display_name(&n)?,
            None => DEFAULT_BROADCASTER_NAME.to_owned(),
        };
        self.ctx.keys.check(&stream, key.as_deref())?;
        // Checked before the name is claimed, so a bad offer never makes a stream appear.
        let media = golive_sfu::Sfu::publisher_media(&sdp).map_err(sfu_error)?;
        if let Some(cluster) = &self.ctx.cluster {
            cluster.acquire_origin(&stream).await?;
            // A relay of the stream here gives way: this broadcaster is its source now.
            cluster.yield_relay(&stream, &self.ctx.directory);
        }
        let claimed = self.ctx.directory.claim(
            &stream,
            self.id.into(),
            self.audience.clone(),
            name,
            media,
            title.map(|t| t.chars().take(MAX_TITLE_CHARS).collect()),
        );
        if let Err(e) = claimed {
            self.release_lease(&stream);
            return Err(e);
        }
        let worker = self.ctx.workers.pick();
        let peer = PeerId(next_id());
        let answer = worker
            .call(|reply| Command::Publish {
                id: peer,
                stream: stream.clone(),
                offer: sdp,
                events: self.peer_events.clone(),
                reply,
            })
            .await;
        match answer {
            Ok(a) => {
                tracing::info!(session = self.id.0, %stream, %peer, worker = worker.index, "live");
                self.role = Role::Publishing {
                    stream,
                    peer,
                    worker,
                };
                Ok(ServerMessage::Answer {
                    sdp: a.sdp,
                    peer: peer.to_string(),
                })
            }
            Err(e) => {
                self.ctx
                    .directory
                    .release(&stream, self.id.into(), EndReason::BroadcasterLeft);
                self.release_lease(&stream);
                Err(sfu_error(e))
            }
        }
    }

    /// Records the broadcast just started (or continues its recording after a reconnection);
    /// the broadcaster hears which replay it is, or why it is not recorded, after its answer.
    fn start_recording(&mut self, wanted: bool) {
        let Role::Publishing { stream, .. } = &self.role else {
            return;
        };
        let Some((title, media)) = self.ctx.directory.recording_info(stream) else {
            return;
        };
        let notice =
            match self
                .ctx
                .recordings
                .publish(stream, wanted, title, &media, self.outbox.clone())
            {
                Started::Recording(id) => ServerMessage::Recording {
                    replay: id.to_string(),
                },
                Started::Off => return,
                Started::Refused(reason, message) => {
                    ServerMessage::RecordingStopped { reason, message }
                }
            };
        self.say(notice);
    }

    async fn watch(
        &mut self,
        stream: &str,
        sdp: String,
        name: Option<String>,
    ) -> Result<ServerMessage, ProtocolError> {
        let since = Instant::now();
        let stream = stream_name(stream)?;
        self.ensure_idle()?;
        self.ensure_accepting()?;
        let name = match name {
            Some(n) => display_name(&n)?,
            None => format!("viewer-{:04x}", rand::random::<u16>()),
        };
        if let Some(url) =
            (self.ctx.cluster.as_ref()).and_then(|c| c.redirect_for_watch(&self.ctx.directory))
        {
            return Ok(ServerMessage::Redirect { url });
        }
        let mut joined =
            self.ctx
                .directory
                .watch(&stream, self.id.into(), self.audience.clone(), name.clone());
        if let (Err(e), Some(c)) = (&joined, &self.ctx.cluster)
            && e.code == ErrorCode::StreamNotFound
        {
            // Live on another node, perhaps: this node pulls it once, as a relay.
            c.pull(&stream).await?;
            joined = self
                .ctx
                .directory
                .watch(&stream, self.id.into(), self.audience.clone(), name)
                .map_err(|e| match e.code {
                    ErrorCode::StreamNotFound => c.not_here(&stream),
                    _ => e,
                });
        }
        let joined = joined?;
        let media = joined.media;
        let mut history = joined.chat_history;
        if let Some(c) = &self.ctx.cluster
            && let Some(h) = c.audience_history(&stream).await
        {
            // The cluster's: messages posted on every node, removals applied.
            history = h;
        }
        let worker = self.ctx.workers.pick();
        let peer = PeerId(next_id());
        let answer = worker
            .call(|reply| Command::Watch {
                id: peer,
                stream: stream.clone(),
                media,
                offer: sdp,
                relay: false,
                events: self.peer_events.clone(),
                reply,
            })
            .await;
        match answer {
            Ok(a) => {
                tracing::debug!(session = self.id.0, %stream, %peer, worker = worker.index, "watching");
                // The recent chat follows the answer (the events are handled after the reply).
                for f in history {
                    self.audience.deliver(AudienceEvent::Frame(f));
                }
                self.role = Role::Watching {
                    stream,
                    peer,
                    worker,
                    since,
                };
                Ok(ServerMessage::Answer {
                    sdp: a.sdp,
                    peer: peer.to_string(),
                })
            }
            Err(e) => {
                self.ctx.directory.unwatch(&stream, self.id.into());
                Err(sfu_error(e))
            }
        }
    }

    fn say(&self, m: ServerMessage) {
        self.outbox.push(Outgoing::Message(m));
    }

    /// The broadcast this session watches (or, in cluster mode, broadcasts) is over.
    async fn on_ended(&mut self, reason: EndReason) {
        if !matches!(self.role, Role::Idle) {
            self.end(reason, false).await;
            self.say(ServerMessage::Ended { reason });
        }
    }

    async fn on_peer(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::VideoStarted(id) => {
                if let Role::Watching { peer, since, .. } = &self.role
                    && *peer == id
                {
                    self.ctx.metrics.ttff.observe(since.elapsed().as_secs_f64());
                }
            }
            PeerEvent::LayerChanged {
                peer,
                layer,
                layers,
                reason,
            } => {
                if matches!(&self.role, Role::Watching { peer: p, .. } if *p == peer) {
                    self.say(ServerMessage::Quality {
                        layer: layer.map_or(QualityLayer::Audio, |l| {
                            QualityLayer::from_index(usize::from(l.0), layers)
                        }),
                        reason: quality_reason(reason),
                    });
                }
            }
            PeerEvent::Connected(id) => {
                tracing::debug!(session = self.id.0, peer = %id, "media connected");
            }
            PeerEvent::Failed(id) => {
                if self.is_our_peer(id) {
                    self.end(EndReason::BroadcasterLeft, true).await;
                    self.say(ServerMessage::Ended {
                        reason: EndReason::ConnectionLost,
                    });
                }
            }
            PeerEvent::WorkerFailed(id) => {
                // The error says what happened, then the session ends as on a lost connection.
                if self.is_our_peer(id) {
                    self.say(
                        ProtocolError::new(
                            ErrorCode::Internal,
                            "the media worker serving this session failed and was restarted; \
                             publish or watch again",
                        )
                        .into(),
                    );
                    self.end(EndReason::BroadcasterLeft, true).await;
                    self.say(ServerMessage::Ended {
                        reason: EndReason::ConnectionLost,
                    });
                }
            }
        }
    }

    /// Cluster mode: gives up the stream's lease unless this node still holds the stream.
    fn release_lease(&self, stream: &StreamName) {
        if let Some(c) = &self.ctx.cluster {
            c.release_if_unused(stream, &self.ctx.directory);
        }
    }

    fn is_our_peer(&self, id: PeerId) -> bool {
        matches!(&self.role,
            Role::Publishing { peer, .. } | Role::Watching { peer, .. } if *peer == id)
    }

    /// Ends whatever the session does; a broadcaster's viewers are told with `reason`, or, when
    /// the connection was `lost` rather than ended on purpose, wait for the broadcaster to come
    /// back for the grace period.
    async fn end(&mut self, reason: EndReason, lost: bool) {
        match std::mem::replace(&mut self.role, Role::Idle) {
            Role::Idle => {}
            Role::Publishing {
                stream,
                peer,
                worker,
            } => {
                let grace = self.ctx.settings.reconnect_grace;
                let waiting = if lost && !grace.is_zero() {
                    // Other nodes' viewers of a relayed stream wait for the broadcaster too.
                    let relayed =
                        (self.ctx.cluster.as_ref()).is_some_and(|c| c.serves_relays(&stream));
                    self.ctx
                        .directory
                        .orphan(&stream, self.id.into(), grace, relayed)
                } else {
                    None
                };
                match waiting {
                    Some(loss) => {
                        tracing::info!(session = self.id.0, %stream, ?grace, "broadcaster lost; viewers wait");
                        let directory = self.ctx.directory.clone();
                        let stream = stream.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(grace).await;
                            directory.expire(&stream, loss);
                        });
                    }
                    None => {
                        tracing::info!(session = self.id.0, %stream, "broadcast ended");
                        self.ctx.directory.release(&stream, self.id.into(), reason);
                        self.release_lease(&stream);
                    }
                }
                self.ctx.recordings.end(&stream, lost, grace);
                let _ = worker.send(Command::Remove { id: peer }).await;
            }
            Role::Watching {
                stream,
                peer,
                worker,
                ..
            } => {
                self.ctx.directory.unwatch(&stream, self.id.into());
                let _ = worker.send(Command::Remove { id: peer }).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
