//! Relays: a node pulls a stream it does not hold from a node that does, once, over WebRTC, and
//! serves it to its own viewers as if its broadcaster were here.
//!
//! # Pulling (the edge)
//!
//! A viewer (`watch` or WHEP) of a stream that is live elsewhere makes its node [`pull`] it.
//! The node picks a parent: the stream's origin (the holder of its lease) while the origin
//! serves fewer than `--max-relays-per-stream` relays, otherwise a node that already relays the
//! stream and has room (the `golive:relays:<stream>` hash in Redis says who holds the stream and
//! how many relays each serves), so the nodes form a tree and the origin's egress stays bounded.
//! It asks the parent for the stream's media (`GET /cluster/relay/<stream>`), offers a
//! receive-only peer for it (`POST` with the SDP offer) and runs that peer, a
//! [`golive_client::ClientPeer`] (the client library the load tester runs), on a UDP socket of
//! its own in a task of its own. The peer repairs loss on the hop with NACK (rtc's
//! receive side) and sends reports as a browser does.
//!
//! The relay's offer has one video section per simulcast layer ([`MAX_LAYERS`]); the parent
//! sends layer n on the n-th (a broadcast without simulcast uses the first alone). Each packet
//! it receives becomes one [`SourcePacket`] tagged with the layer of its section, given to
//! every media worker of the node through the queue by which workers share a local
//! broadcaster's packets: the workers remember it (keyframe cache and NACK history per layer)
//! and fan it out, choosing a layer per viewer, so viewers on an edge get what viewers on the
//! origin get (instant join, NACK, a layer by preference and bandwidth, the next layer down
//! when the broadcaster stops one, slow-viewer isolation). The stream is claimed in the node's
//! directory by the relay, so `watch`, counts and chat work as for a local broadcast.
//! Keyframe requests of the edge's viewers reach the relay task from the workers, per layer,
//! and go upstream as PLI for that layer's section, coalesced per layer ([`KeyframeRequests`]).
//!
//! The relay lasts while the node has viewers of the stream or serves relays of it to other
//! nodes, plus `--relay-linger-secs`.
//!
//! # Losing the source
//!
//! When the parent stops sending, the relay asks Redis who holds the lease. The same origin,
//! alive: its broadcaster is reconnecting; the relay waits. No lease while the origin lives: the
//! broadcast is over, and the edge's viewers are told. Otherwise (the origin or the parent died,
//! or the lease moved to another node because the broadcaster reconnected there) the relay's
//! stream is orphaned like a broadcaster's lost connection: its viewers keep their peers and
//! wait, and the relay pulls again from the new origin within the reconnect grace. The new
//! connection is a new source epoch, so viewers continue with continuous sequence numbers and
//! timestamps, exactly as after a broadcaster's reconnection. A broadcaster that reconnects to a
//! node relaying its stream takes the stream over from the relay ([`Relays::yield_to_broadcaster`]).
//!
//! # Serving (the origin, or any node that holds the stream)
//!
//! `POST /cluster/relay/<stream>` adds a viewer peer on a media worker that is no member of the
//! audience (no count, no chat). Every request carries [`AUTH_HEADER`]: the requesting node,
//! the time, a nonce and an HMAC-SHA256 of them with the cluster secret; a request older than
//! [`AUTH_MAX_AGE`] or a nonce seen before is refused.

use bytes::BytesMut;
use golive_client::{ClientPeer, Feedback, PayloadTypes, PeerConfig, PeerEvent, Role, SrtpOffer};
use golive_proto::{EndReason, ErrorCode, ProtocolError, StreamName};
use golive_sfu::keyframe::is_keyframe_start;
use golive_sfu::pli::KeyframeRequests;
use golive_sfu::simulcast::MAX_LAYERS;
use golive_sfu::temporal::Vp8Descriptor;
use golive_sfu::{Codec, Layer, MediaKind, PeerId, SourcePacket, StreamMedia, VideoCodec};
use prometheus::{IntCounter, IntGauge};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, watch};

mod auth;
mod serve;
mod wire;

pub use auth::{AUTH_HEADER, AUTH_MAX_AGE, Auth, AuthError};
pub use serve::routes;

use super::{Cluster, NODE_TTL};
use crate::directory::{AudienceEvent, AudienceSink, Directory, MemberId};
use crate::metrics::Metrics;
use crate::session::Workers;
use auth::unix_secs;
use wire::MediaJson;

/// Node-to-node HTTP requests give up after this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// A viewer waits at most this long for its node to start pulling a stream.
const PULL_TIMEOUT: Duration = Duration::from_secs(10);
/// A relay checks its audience and, when it has received nothing for [`STALL`], its source this
/// often.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// No media for this long: the relay asks Redis what became of its source.
const STALL: Duration = Duration::from_secs(2);
/// Between attempts to pull from a parent.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
const MAX_DATAGRAM: usize = 2048;
/// The name the relay goes by as the stream's "broadcaster" in this node's directory.
const RELAY_NAME: &str = "relay";
/// Relay peers and relay members get ids from their own range, apart from sessions' ids.
static NEXT_RELAY_ID: AtomicU64 = AtomicU64::new(1 << 62);

fn next_relay_id() -> u64 {
    NEXT_RELAY_ID.fetch_add(1, Ordering::Relaxed)
}

struct RelayMetrics {
    relays_in: IntGauge,
    relays_out: IntGauge,
    bytes_in: IntCounter,
    packets_in: IntCounter,
    packets_dropped: IntCounter,
    pulls_failed: IntCounter,
}

impl RelayMetrics {
    fn new(m: &Metrics) -> Self {
        let r = m.registry();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        Self {
            relays_in: gauge(
                "golive_cluster_relays_in",
                "Streams this node pulls from another node (relays in).",
            ),
            relays_out: gauge(
                "golive_cluster_relays_out",
                "Relays this node serves to other nodes (relays out), every stream together.",
            ),
            bytes_in: counter(
                "golive_cluster_relay_bytes_in_total",
                "RTP payload bytes received over relays from other nodes.",
            ),
            packets_in: counter(
                "golive_cluster_relay_packets_in_total",
                "RTP packets received over relays from other nodes.",
            ),
            packets_dropped: counter(
                "golive_cluster_relay_packets_dropped_total",
                "Relayed packets a media worker's full queue could not take (loss for its viewers).",
            ),
            pulls_failed: counter(
                "golive_cluster_relay_pulls_failed_total",
                "Attempts to pull a stream from another node that failed.",
            ),
        }
    }
}

/// What a viewer waiting for a pull sees.
#[derive(Debug, Clone)]
enum PullState {
    Starting,
    Live,
    Failed(ProtocolError),
}

/// One stream this node pulls.
struct Inbound {
    member: MemberId,
    state: watch::Receiver<PullState>,
    /// Keyframe requests of this node's viewers of the stream: the layers asked for (bit n:
    /// layer n), and the wake-up of the relay task.
    keyframe_layers: AtomicU8,
    keyframes: Notify,
    /// A broadcaster of the stream arrived here: the relay gives the stream up.
    stop: Notify,
    stopped: AtomicBool,
    /// Media flows from the parent now: only then may this node serve the stream onwards (two
    /// nodes that lost their sources must not pull from each other).
    receiving: AtomicBool,
}

/// The relays of one node: those it pulls and those it serves.
pub struct Relays {
    auth: Arc<Auth>,
    inbound: Mutex<HashMap<StreamName, Arc<Inbound>>>,
    /// The relay peers this node serves, per stream.
    served: Mutex<HashMap<StreamName, HashSet<PeerId>>>,
    deps: OnceLock<(Arc<Directory>, Arc<Workers>)>,
    metrics: RelayMetrics,
}

impl Relays {
    pub fn new(secret: &str, metrics: &Metrics) -> Self {
        Self {
            auth: Arc::new(Auth::new(secret)),
            inbound: Mutex::default(),
            served: Mutex::default(),
            deps: OnceLock::new(),
            metrics: RelayMetrics::new(metrics),
        }
    }

    fn lock_inbound(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Arc<Inbound>>> {
        self.inbound.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_served(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, HashSet<PeerId>>> {
        self.served.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node pulls `stream` from another node (it is not its origin).
    pub fn is_relayed(&self, stream: &str) -> bool {
        StreamName::new(stream).is_ok_and(|s| self.lock_inbound().contains_key(&s))
    }

    /// Relays of `stream` this node serves to other nodes.
    pub fn served(&self, stream: &StreamName) -> usize {
        self.lock_served().get(stream).map_or(0, HashSet::len)
    }

    /// A broadcaster of `stream` goes live on this node (it holds the lease now): a relay of the
    /// stream stops, and its viewers wait for the broadcaster as for one that reconnects.
    pub fn yield_to_broadcaster(
        &self,
        stream: &StreamName,
        directory: &Directory,
        grace: Duration,
    ) {
        let Some(inbound) = self.lock_inbound().get(stream).cloned() else {
            return;
        };
        inbound.stopped.store(true, Ordering::Relaxed);
        inbound.stop.notify_one();
        directory.orphan(stream, inbound.member, grace, false);
    }

    fn set_served_gauge(&self) {
        let n: usize = self.lock_served().values().map(HashSet::len).sum();
        self.metrics.relays_out.set(n as i64);
    }
}

/// Starts what relays need once the node runs: where keyframe requests go.
pub(super) fn start(cluster: &Arc<Cluster>, directory: Arc<Directory>, workers: Arc<Workers>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(StreamName, Option<Layer>)>();
    for w in workers.handles() {
        w.listen_keyframe_requests(tx.clone());
    }
    let _ = cluster.relays.deps.set((directory, workers));
    let cluster = cluster.clone();
    tokio::spawn(async move {
        while let Some((stream, layer)) = rx.recv().await {
            let inbound = cluster.relays.lock_inbound().get(&stream).cloned();
            if let Some(i) = inbound {
                i.keyframe_layers
                    .fetch_or(layer_bits(layer), Ordering::Relaxed);
                i.keyframes.notify_one();
            }
        }
    });
}

/// The layers a keyframe request names, as bits (`None`: every layer).
fn layer_bits(layer: Option<Layer>) -> u8 {
    match layer {
        Some(l) if usize::from(l.0) < MAX_LAYERS => 1 << l.0,
        Some(_) => 0,
        None => (1 << MAX_LAYERS) - 1,
    }
}

/// Makes this node pull `stream` (or waits for the pull under way); `Ok` once the stream is in
/// this node's directory.
pub(super) async fn pull(cluster: &Arc<Cluster>, stream: &StreamName) -> Result<(), ProtocolError> {
    let mut state = {
        let mut inbound = cluster.relays.lock_inbound();
        match inbound.get(stream) {
            Some(i) => i.state.clone(),
            None => {
                let (tx, rx) = watch::channel(PullState::Starting);
                let i = Arc::new(Inbound {
                    member: MemberId(next_relay_id()),
                    state: rx.clone(),
                    keyframe_layers: AtomicU8::new(0),
                    keyframes: Notify::new(),
                    stop: Notify::new(),
                    stopped: AtomicBool::new(false),
                    receiving: AtomicBool::new(false),
                });
                inbound.insert(stream.clone(), i.clone());
                tokio::spawn(run_inbound(cluster.clone(), stream.clone(), i, tx));
                rx
            }
        }
    };
    let waited = tokio::time::timeout(
        PULL_TIMEOUT,
        state.wait_for(|s| !matches!(s, PullState::Starting)),
    )
    .await;
    match waited {
        Ok(Ok(s)) => match &*s {
            PullState::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        },
        Ok(Err(_)) => Err(cluster.not_here(stream)),
        Err(_) => Err(ProtocolError::new(
            ErrorCode::ClusterUnavailable,
            format!("stream \"{stream}\" could not be pulled from another node in time"),
        )),
    }
}

/// Why connecting to a parent failed.
#[derive(Debug)]
enum ConnectError {
    /// No node holds the stream (or none that is alive).
    NotLive,
    /// This node holds the lease: its own broadcaster is the source.
    HereNow,
    /// Every parent serves as many relays as it may (or is not receiving the stream itself).
    NoRoom,
    /// The stream's codecs cannot be relayed, or a parent refused for good.
    Refused(ProtocolError),
    /// Redis or a parent out of reach.
    Unreachable(String),
}

impl ConnectError {
    fn to_protocol(&self, cluster: &Cluster, stream: &StreamName) -> ProtocolError {
        match self {
            ConnectError::NotLive | ConnectError::HereNow => cluster.not_here(stream),
            ConnectError::Refused(e) => e.clone(),
            ConnectError::NoRoom => ProtocolError::new(
                ErrorCode::ClusterUnavailable,
                format!("no node has room to relay stream \"{stream}\" here"),
            ),
            ConnectError::Unreachable(why) => ProtocolError::new(
                ErrorCode::ClusterUnavailable,
                format!(
                    "stream \"{stream}\" is live on another node that cannot be reached: {why}"
                ),
            ),
        }
    }

    /// Worth trying again while a first viewer waits.
    fn is_transient(&self) -> bool {
        matches!(self, ConnectError::NoRoom | ConnectError::Unreachable(_))
    }
}

/// How a relay's connection to its parent ended.
#[derive(Debug)]
enum End {
    /// No viewers and no relays of the stream here for the linger time.
    Idle,
    /// The broadcast ended at its origin.
    Over,
    /// A broadcaster of the stream is live on this node now.
    Yielded,
    /// The source is gone or moved: pull again.
    Lost(&'static str),
}

/// The audience sink of the relay as the stream's "broadcaster" in this node's directory. What
/// the audience sends a broadcaster (chat, counts) is not the relay's concern.
struct RelaySink;

impl AudienceSink for RelaySink {
    fn deliver(&self, _event: AudienceEvent) {}
}

/// One relay's life: connect, pump, and on a loss connect again within the grace period.
async fn run_inbound(
    cluster: Arc<Cluster>,
    stream: StreamName,
    me: Arc<Inbound>,
    state: watch::Sender<PullState>,
) {
    let relays = &cluster.relays;
    relays.metrics.relays_in.inc();
    let Some((directory, workers)) = relays.deps.get().cloned() else {
        state.send_replace(PullState::Failed(cluster.not_here(&stream)));
        finish(&cluster, &stream, &me);
        return;
    };
    let grace = cluster.settings.reconnect_grace;
    let started = Instant::now();
    // The stream is in this node's directory under the relay's name.
    let mut claimed = false;
    // Since when the source is lost, and the directory's number for that loss.
    let mut lost: Option<(Instant, Option<u64>)> = None;
    loop {
        if me.stopped.load(Ordering::Relaxed) {
            break;
        }
        let link = connect(&cluster, &stream, &workers).await;
        let mut link = match link {
            Ok(link) => link,
            Err(ConnectError::HereNow) => break,
            Err(e) => {
                relays.metrics.pulls_failed.inc();
                let retry = match lost {
                    Some((since, _)) => since.elapsed() < grace,
                    None => !claimed && e.is_transient() && started.elapsed() < PULL_TIMEOUT,
                };
                if retry {
                    tokio::time::sleep(RETRY_INTERVAL).await;
                    continue;
                }
                tracing::info!(%stream, "relay: cannot pull the stream ({e:?}); giving up");
                if !claimed {
                    state.send_replace(PullState::Failed(e.to_protocol(&cluster, &stream)));
                }
                if let Some((_, Some(loss))) = lost {
                    directory.expire(&stream, loss);
                }
                break;
            }
        };
        if !claimed || lost.is_some() {
            let claim = directory.claim(
                &stream,
                me.member,
                Arc::new(RelaySink),
                RELAY_NAME.to_owned(),
                link.media.clone(),
                link.title.clone(),
            );
            if let Err(e) = claim {
                tracing::info!(%stream, "relay: the stream is held here otherwise ({e:?})");
                if !claimed {
                    state.send_replace(PullState::Failed(e));
                }
                link.close();
                break;
            }
        }
        claimed = true;
        tracing::info!(%stream, parent = %link.parent, "relay: pulling the stream");
        state.send_replace(PullState::Live);
        publish_entry(&cluster, &stream);
        let end = link
            .pump(&cluster, &stream, &me, &directory, &workers)
            .await;
        link.close();
        tracing::info!(%stream, ?end, "relay: the connection to its parent ended");
        match end {
            End::Idle | End::Over => {
                directory.release(&stream, me.member, EndReason::BroadcasterLeft);
                break;
            }
            End::Yielded => break,
            End::Lost(why) => {
                tracing::info!(%stream, "relay: lost its source ({why}); its viewers wait");
                let loss = directory.orphan(&stream, me.member, grace, relays.served(&stream) > 0);
                if loss.is_none() {
                    // Nobody here was watching: nothing to keep.
                    break;
                }
                lost = Some((Instant::now(), loss));
            }
        }
    }
    finish(&cluster, &stream, &me);
}

fn finish(cluster: &Arc<Cluster>, stream: &StreamName, me: &Arc<Inbound>) {
    let relays = &cluster.relays;
    {
        let mut inbound = relays.lock_inbound();
        if inbound.get(stream).is_some_and(|i| Arc::ptr_eq(i, me)) {
            inbound.remove(stream);
        }
    }
    relays.metrics.relays_in.dec();
    if relays.served(stream) == 0 {
        let cluster = cluster.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let _ = cluster.store.drop_relay_entry(&stream, &cluster.id).await;
        });
    }
}

/// Tells the other nodes at once (not at the next heartbeat) that this node holds `stream` and
/// how many relays of it it serves.
fn publish_entry(cluster: &Arc<Cluster>, stream: &StreamName) {
    let cluster = cluster.clone();
    let stream = stream.clone();
    tokio::spawn(async move {
        let served = cluster.relays.served(&stream);
        let _ = cluster
            .store
            .set_relay_entry(&stream, &cluster.id, served, NODE_TTL)
            .await;
    });
}

/// The nodes to pull `stream` from, best first (see [`order_parents`]).
async fn parents(cluster: &Cluster, stream: &StreamName, origin: &str) -> Vec<(String, String)> {
    let entries = cluster
        .store
        .relay_entries(stream)
        .await
        .unwrap_or_default();
    let view = cluster.lock_view().clone();
    order_parents(
        &entries,
        |id| view.url_of(id).map(str::to_owned),
        origin,
        &cluster.id,
        cluster.settings.max_relays_per_stream,
    )
}

/// Orders the nodes that hold a stream (`entries`: each with the relays it serves) as parents
/// for node `me`: the origin while it has room, then the nodes relaying the stream with room,
/// fewest relays first, and the origin last in any case (its count may be a heartbeat old).
/// Nodes without a live record (`url_of` gives none) are left out.
fn order_parents(
    entries: &[(String, usize)],
    url_of: impl Fn(&str) -> Option<String>,
    origin: &str,
    me: &str,
    max: usize,
) -> Vec<(String, String)> {
    let served = |id: &str| entries.iter().find(|(n, _)| n == id).map_or(0, |(_, c)| *c);
    let mut out = Vec::new();
    let origin_url = url_of(origin);
    if let Some(url) = &origin_url
        && served(origin) < max
    {
        out.push((origin.to_owned(), url.clone()));
    }
    let mut relays: Vec<(usize, String, String)> = entries
        .iter()
        .filter(|(id, n)| id != origin && id != me && *n < max)
        .filter_map(|(id, n)| Some((*n, id.clone(), url_of(id)?)))
        .collect();
    relays.sort();
    out.extend(relays.into_iter().map(|(_, id, url)| (id, url)));
    if let Some(url) = origin_url
        && !out.iter().any(|(id, _)| id == origin)
    {
        out.push((origin.to_owned(), url));
    }
    out
}

async fn connect(
    cluster: &Arc<Cluster>,
    stream: &StreamName,
    workers: &Workers,
) -> Result<Link, ConnectError> {
    let origin = cluster
        .store
        .origin_of(stream)
        .await
        .map_err(|e| ConnectError::Unreachable(e.to_string()))?
        .ok_or(ConnectError::NotLive)?;
    if origin == cluster.id {
        return Err(ConnectError::HereNow);
    }
    let mut last = ConnectError::NotLive;
    for (id, url) in parents(cluster, stream, &origin).await {
        match Link::open(cluster, stream, &id, &url, workers).await {
            Ok(mut link) => {
                link.origin = origin;
                return Ok(link);
            }
            Err(e) => {
                tracing::debug!(%stream, parent = %id, "relay: cannot pull from this node: {e:?}");
                last = e;
            }
        }
    }
    Err(last)
}

fn client_codec(media: &StreamMedia) -> Result<golive_client::VideoCodec, ConnectError> {
    match media.video.as_ref().map(|c| c.video) {
        None | Some(Some(VideoCodec::Vp8)) => Ok(golive_client::VideoCodec::Vp8),
        Some(Some(VideoCodec::H264)) => Ok(golive_client::VideoCodec::H264),
        Some(_) => Err(ConnectError::Refused(ProtocolError::new(
            ErrorCode::CodecUnsupported,
            "this broadcast's video codec is not relayed between nodes (VP8 and H.264 are); \
             watch it on the node that holds it",
        ))),
    }
}

/// Duplicate suppression per track: a packet NACKed on the hop may arrive twice.
#[derive(Default)]
struct Seen {
    highest: Option<u16>,
    /// Bit i: `highest - i` was received.
    bits: u128,
}

impl Seen {
    fn first_time(&mut self, seq: u16) -> bool {
        let Some(h) = self.highest else {
            self.highest = Some(seq);
            self.bits = 1;
            return true;
        };
        let ahead = seq.wrapping_sub(h) as i16;
        if ahead > 0 {
            self.bits = if ahead >= 128 { 0 } else { self.bits << ahead };
            self.bits |= 1;
            self.highest = Some(seq);
            return true;
        }
        let back = u32::from((-i32::from(ahead)) as u16);
        if back >= 128 {
            return false;
        }
        let bit = 1u128 << back;
        let new = self.bits & bit == 0;
        self.bits |= bit;
        new
    }
}

/// A relay's connection to its parent.
struct Link {
    peer: ClientPeer,
    socket: UdpSocket,
    media: StreamMedia,
    title: Option<String>,
    /// The node pulled from, and the stream's origin when the pull began.
    parent: String,
    origin: String,
    epoch: u64,
    /// Where the parent serves this relay (its authority and the relay's path), for the
    /// DELETE that ends it there at once.
    authority: String,
    location: String,
    stream: StreamName,
    auth: Arc<Auth>,
    node: String,
}

impl Link {
    async fn open(
        cluster: &Arc<Cluster>,
        stream: &StreamName,
        parent: &str,
        url: &str,
        workers: &Workers,
    ) -> Result<Self, ConnectError> {
        let unreachable = |e: &dyn std::fmt::Display| ConnectError::Unreachable(e.to_string());
        let authority = golive_client::http::authority(url).map_err(|e| unreachable(&e))?;
        let path = format!("/cluster/relay/{stream}");
        let auth = cluster
            .relays
            .auth
            .sign("GET", stream, &cluster.id, unix_secs());
        let r = golive_client::http::request(
            &authority,
            "GET",
            &path,
            &[(AUTH_HEADER, &auth)],
            b"",
            HTTP_TIMEOUT,
        )
        .await
        .map_err(|e| unreachable(&e))?;
        let described: MediaJson = match r.status {
            200 => serde_json::from_str(&r.body).map_err(|e| unreachable(&e))?,
            404 => return Err(ConnectError::NotLive),
            503 => return Err(ConnectError::NoRoom),
            s => return Err(ConnectError::Unreachable(format!("{s} {}", r.body.trim()))),
        };
        let media = described.media();
        let video_codec = client_codec(&media)?;
        // The relay's host candidate: the address this node's media workers advertise, which
        // the other nodes reach it at.
        let ip = workers.handles()[0].addr.ip();
        let socket = match UdpSocket::bind(SocketAddr::new(ip, 0)).await {
            Ok(s) => s,
            // A 1:1 NAT address is not local: listen on every address, advertise that one.
            Err(_) => UdpSocket::bind(SocketAddr::new([0, 0, 0, 0].into(), 0))
                .await
                .map_err(|e| unreachable(&e))?,
        };
        let port = socket.local_addr().map_err(|e| unreachable(&e))?.port();
        let defaults = PayloadTypes::default();
        let pt = |c: &Option<Codec>, d: u8| c.as_ref().map_or(d, |c| c.payload_type);
        let config = PeerConfig {
            video_codec,
            payload_types: PayloadTypes {
                vp8: pt(&media.video, defaults.vp8),
                h264: pt(&media.video, defaults.h264),
                opus: pt(&media.audio, defaults.opus),
            },
            feedback: Feedback::Browser,
            srtp: Some(SrtpOffer::Gcm),
            ..PeerConfig::default()
        };
        let mut peer = ClientPeer::new(
            Instant::now(),
            SocketAddr::new(ip, port),
            &config,
            Role::Relay {
                video_sections: MAX_LAYERS,
            },
        )
        .map_err(|e| unreachable(&e))?;
        let auth = cluster
            .relays
            .auth
            .sign("POST", stream, &cluster.id, unix_secs());
        let r = golive_client::http::request(
            &authority,
            "POST",
            &path,
            &[("Content-Type", "application/sdp"), (AUTH_HEADER, &auth)],
            peer.offer_sdp().as_bytes(),
            HTTP_TIMEOUT,
        )
        .await
        .map_err(|e| unreachable(&e))?;
        match r.status {
            201 => {}
            404 => return Err(ConnectError::NotLive),
            503 => return Err(ConnectError::NoRoom),
            s => return Err(ConnectError::Unreachable(format!("{s} {}", r.body.trim()))),
        }
        peer.accept_answer(Instant::now(), &r.body)
            .map_err(|e| unreachable(&e))?;
        let location =
            golive_client::http::resource_path(r.header("location").unwrap_or(&path)).to_owned();
        Ok(Self {
            authority,
            location,
            stream: stream.clone(),
            auth: cluster.relays.auth.clone(),
            node: cluster.id.clone(),
            peer,
            socket,
            media,
            title: described.title,
            parent: parent.to_owned(),
            origin: String::new(),
            // Apart from local broadcasters' epochs (their peer ids, counted from 1).
            epoch: rand::random::<u64>() | (1 << 63),
        })
    }

    /// Receives until the connection ends, feeding every packet to every worker of the node.
    async fn pump(
        &mut self,
        cluster: &Arc<Cluster>,
        stream: &StreamName,
        me: &Inbound,
        directory: &Directory,
        workers: &Workers,
    ) -> End {
        let relays = &cluster.relays;
        let linger = cluster.settings.relay_linger;
        let video = self.media.video.as_ref().and_then(|c| c.video);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Per simulcast layer: keyframe requests up the hop, and duplicate suppression (audio's
        // is the last).
        let mut keyframes: [KeyframeRequests; MAX_LAYERS] = Default::default();
        let mut seen: [Seen; MAX_LAYERS + 1] = Default::default();
        let mut next_check = Instant::now() + CHECK_INTERVAL;
        let mut last_media = Instant::now();
        let mut idle_since: Option<Instant> = None;
        let mut over_once = false;
        let end = loop {
            let now = Instant::now();
            let due = keyframes
                .iter()
                .map(KeyframeRequests::poll_timeout)
                .chain([self.peer.poll_timeout(), Some(next_check)])
                .flatten()
                .min()
                .unwrap_or(next_check);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        let _ = self.peer.handle_datagram(Instant::now(), from, BytesMut::from(&buf[..n]));
                    }
                }
                _ = tokio::time::sleep_until(due.max(now).into()) => {
                    let now = Instant::now();
                    let _ = self.peer.handle_timeout(now);
                    for (layer, k) in keyframes.iter_mut().enumerate() {
                        if k.handle_timeout(now) {
                            let _ = self.peer.send_pli_for(now, layer);
                        }
                    }
                }
                _ = me.keyframes.notified() => {
                    let now = Instant::now();
                    let wanted = me.keyframe_layers.swap(0, Ordering::Relaxed);
                    for (layer, k) in keyframes.iter_mut().enumerate() {
                        // A layer's PLI names its section's SSRC; before the layer's first
                        // packet there is none, and that first packet is a keyframe.
                        if wanted & (1 << layer) != 0 && k.request(now) {
                            let _ = self.peer.send_pli_for(now, layer);
                        }
                    }
                }
                _ = me.stop.notified() => break End::Yielded,
            }
            let now = Instant::now();
            while let Some(t) = self.peer.poll_transmit() {
                let _ = self.socket.try_send_to(&t.data, t.to);
            }
            while let Some(ev) = self.peer.poll_event() {
                let PeerEvent::Rtp {
                    kind,
                    packet,
                    section,
                    ..
                } = ev
                else {
                    continue;
                };
                let kind = match kind {
                    golive_client::MediaKind::Audio => MediaKind::Audio,
                    golive_client::MediaKind::Video => MediaKind::Video,
                };
                // The parent sends simulcast layer n on the n-th video section.
                let (layer, slot) = match kind {
                    MediaKind::Audio => (Layer::LOWEST, MAX_LAYERS),
                    MediaKind::Video if section < MAX_LAYERS => (Layer(section as u8), section),
                    MediaKind::Video => continue,
                };
                if packet.payload.is_empty()
                    || !seen[slot].first_time(packet.header.sequence_number)
                {
                    continue;
                }
                last_media = now;
                if !me.receiving.swap(true, Ordering::Relaxed) {
                    publish_entry(cluster, stream);
                }
                let keyframe_start = kind == MediaKind::Video
                    && video.is_some_and(|c| is_keyframe_start(c, &packet.payload));
                if keyframe_start {
                    keyframes[layer.0 as usize].keyframe_received(now);
                }
                relays.metrics.packets_in.inc();
                relays.metrics.bytes_in.inc_by(packet.payload.len() as u64);
                let vp8 = (kind == MediaKind::Video && video == Some(VideoCodec::Vp8))
                    .then(|| Vp8Descriptor::parse(&packet.payload))
                    .flatten();
                let p = Arc::new(SourcePacket {
                    vp8,
                    stream: stream.clone(),
                    epoch: self.epoch,
                    layer,
                    kind,
                    keyframe_start,
                    seq: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                    marker: packet.header.marker,
                    payload: packet.payload,
                    capture_time: None,
                });
                for w in workers.handles() {
                    if !w.relay_media(p.clone()) {
                        relays.metrics.packets_dropped.inc();
                    }
                }
            }
            if self.peer.is_over() {
                break End::Lost("the connection to the parent failed");
            }
            if now < next_check {
                continue;
            }
            next_check = now + CHECK_INTERVAL;
            let audience = directory.viewers_of(stream).unwrap_or(0) + relays.served(stream);
            if audience > 0 {
                idle_since = None;
            } else if now.duration_since(*idle_since.get_or_insert(now)) >= linger {
                break End::Idle;
            }
            if now.duration_since(last_media) >= STALL {
                me.receiving.store(false, Ordering::Relaxed);
                let (parent, origin) = (self.parent.clone(), self.origin.clone());
                match check_source(cluster, stream, &parent, &origin).await {
                    // No lease while the origin lives, twice a check apart: a Redis that has
                    // just restarted empty shows no lease until the origin takes it again.
                    Some(End::Over) if !over_once => over_once = true,
                    Some(end) => break end,
                    None => over_once = false,
                }
            } else {
                over_once = false;
            }
        };
        me.receiving.store(false, Ordering::Relaxed);
        end
    }

    /// Closes the peer connection, and tells the parent, which would otherwise keep its relay
    /// peer until that peer's liveness timeout.
    fn close(&mut self) {
        let _ = self.peer.close();
        while let Some(t) = self.peer.poll_transmit() {
            let _ = self.socket.try_send_to(&t.data, t.to);
        }
        let auth = self
            .auth
            .sign("DELETE", &self.stream, &self.node, unix_secs());
        let (authority, location) = (self.authority.clone(), self.location.clone());
        tokio::spawn(async move {
            let headers = [(AUTH_HEADER, auth.as_str())];
            let _ = golive_client::http::request(
                &authority,
                "DELETE",
                &location,
                &headers,
                b"",
                HTTP_TIMEOUT,
            )
            .await;
        });
    }
}

/// Nothing arrives: what became of the source, as Redis says (`None`: keep waiting).
async fn check_source(
    cluster: &Cluster,
    stream: &StreamName,
    parent: &str,
    origin: &str,
) -> Option<End> {
    let holder = match cluster.store.origin_of(stream).await {
        Ok(h) => h,
        // Redis out of reach: the media path does not need it; keep what there is.
        Err(_) => return None,
    };
    let alive = |id: &str| cluster.lock_view().url_of(id).is_some();
    match holder {
        Some(id) if id == cluster.id => Some(End::Lost("this node is the origin now")),
        Some(id) if id != origin => Some(End::Lost("the stream moved to another origin")),
        Some(_) if !alive(parent) => Some(End::Lost("the parent node is gone")),
        Some(_) => None,
        None if alive(origin) => Some(End::Over),
        None => Some(End::Lost("the origin node is gone")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(parents: Vec<(String, String)>) -> Vec<String> {
        parents.into_iter().map(|(id, _)| id).collect()
    }

    #[test]
    fn a_node_pulls_from_the_origin_while_it_has_room_then_from_the_least_busy_relay() {
        let url_of = |id: &str| (id != "dead").then(|| format!("http://{id}"));
        let entries = |origin_serves: usize| {
            vec![
                ("origin".to_owned(), origin_serves),
                ("busy".to_owned(), 3),
                ("idle".to_owned(), 0),
                ("full".to_owned(), 4),
                ("dead".to_owned(), 0),
                ("me".to_owned(), 0),
            ]
        };
        let order = |served| ids(order_parents(&entries(served), url_of, "origin", "me", 4));
        assert_eq!(order(3), ["origin", "idle", "busy"]);
        // A full origin comes last, in case its count is a heartbeat old.
        assert_eq!(order(4), ["idle", "busy", "origin"]);
        // An origin without a live record is no parent.
        let none = ids(order_parents(&entries(0), |_| None, "origin", "me", 4));
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn a_keyframe_request_names_its_layer_or_every_layer() {
        assert_eq!(layer_bits(Some(Layer(0))), 0b001);
        assert_eq!(layer_bits(Some(Layer(2))), 0b100);
        assert_eq!(layer_bits(None), 0b111);
        // A layer no relay section carries asks for nothing.
        assert_eq!(layer_bits(Some(Layer(MAX_LAYERS as u8))), 0);
    }

    #[test]
    fn a_packet_repaired_twice_on_the_hop_is_forwarded_once() {
        let mut s = Seen::default();
        assert!(s.first_time(65_534));
        assert!(s.first_time(1));
        assert!(s.first_time(65_535), "a late packet within the window");
        assert!(!s.first_time(65_535));
        assert!(s.first_time(0));
        assert!(!s.first_time(1));
        assert!(s.first_time(2));
    }
}
