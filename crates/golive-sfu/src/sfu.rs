//! The SFU of one media worker: its peers, the streams they publish or watch, and the
//! fan-out between them. Sans-IO: the shell feeds datagrams, timeouts, commands and media
//! from other workers in; it drains datagrams to send and [`Output`]s after every input.

use bytes::{BufMut, Bytes, BytesMut};
use golive_proto::StreamName;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::SfuError;
use crate::cache::{
    AUDIO_HISTORY_PACKETS, CacheState, History, KeyframeCache, Lookup, Media, VIDEO_HISTORY_PACKETS,
};
use crate::codec::{MediaKind, Offer, StreamMedia, VideoCodec};
use crate::demux::{Demuxer, Route};
use crate::keyframe::is_keyframe_start;
use crate::leg::{Leg, ViewerLeg};
use crate::peer::{DatagramVerdict, Inbound, Peer, PeerEvent, Role, SrtpPolicy};
use crate::pli::KeyframeRequests;
use crate::rewrite::{HeaderRewriter, SourceEpoch};
use crate::source::{SourceTrack, Verdict};
use crate::viewer_leg::{LeanViewer, Shared as LeanShared};

/// A peer that has not connected (ICE and DTLS) this long after its answer is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A joining viewer gets this many packets of the keyframe cache at once, then as many again
/// every [`REPLAY_INTERVAL`] until it has caught up with the live stream. A whole cache (up to
/// 512 packets) sent at once overflowed receivers' socket buffers (a browser's holds about 220
/// such packets): paced this way a full cache takes about 80 ms, about 7,700 packets a second.
pub const REPLAY_BURST: usize = 64;
pub const REPLAY_INTERVAL: Duration = Duration::from_millis(8);

/// A peer may send from this many remote addresses (NAT rebinding, several candidates).
const MAX_ADDRS_PER_PEER: usize = 8;
/// Garbage is judged over windows of this length...
pub const GARBAGE_WINDOW: Duration = Duration::from_secs(5);
/// ...and a peer whose bound address sent at least this many garbage datagrams in one window,
/// more garbage than good, is closed. An honest peer sends none; 200 a second for five seconds
/// is no accident.
pub const GARBAGE_LIMIT: u32 = 1000;
/// After this many failed sends to a viewer within [`SEND_FAILURE_WINDOW`]...
pub const SEND_FAILURES_BEFORE_SKIP: u32 = 8;
pub const SEND_FAILURE_WINDOW: Duration = Duration::from_secs(1);
/// ...the viewer gets nothing for this long, then restarts at the next keyframe.
pub const SEND_FAILURE_BACKOFF: Duration = Duration::from_millis(500);
/// A stream known here only from another worker's media is forgotten this long after its last
/// packet, once it has no viewer here.
pub const REMOTE_STREAM_IDLE: Duration = Duration::from_secs(5);
/// Default bound of a viewer's unsent backlog in the shell.
pub const DEFAULT_MAX_VIEWER_BACKLOG_BYTES: usize = 1024 * 1024;

/// Identifies a peer across all workers (the shell hands them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The address advertised in our ICE candidate, and the local address of every datagram.
    /// They must be equal: `rtc` drops every STUN request whose local address is not one of its
    /// local candidates (and still returns `Ok`), so a worker bound to 0.0.0.0 that passed its
    /// socket's address here would never connect a peer.
    pub advertised_addr: SocketAddr,
    pub srtp: SrtpPolicy,
    /// Emit every local broadcaster's packets as [`Output::Media`] for other workers.
    pub share_media: bool,
}

/// How the media path behaves; [`Default`] is what production wants.
#[derive(Debug, Clone)]
pub struct MediaOptions {
    /// Start joining viewers from the cached keyframe (instant join). Off only to measure the
    /// difference: then a joining viewer waits for the keyframe its PLI asks for.
    pub keyframe_cache: bool,
    /// A viewer whose backlog (as [`Sfu::handle_send_backlog`] reports it) goes over this skips
    /// to the next keyframe; it is sent to again once the backlog is under half of it.
    pub max_viewer_backlog_bytes: usize,
    /// Which transport serves viewers: `rtc`'s peer connection or the lean viewer leg.
    pub viewer_leg: ViewerLeg,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self {
            keyframe_cache: true,
            max_viewer_backlog_bytes: DEFAULT_MAX_VIEWER_BACKLOG_BYTES,
            viewer_leg: ViewerLeg::default(),
        }
    }
}

/// One packet of a broadcaster, parsed once and shared (never copied) with every viewer on
/// every worker.
#[derive(Debug, Clone)]
pub struct SourcePacket {
    pub stream: StreamName,
    /// The broadcaster's session: a new one restarts sequence numbers and timestamps.
    pub epoch: SourceEpoch,
    pub kind: MediaKind,
    /// A decoder can start here.
    pub keyframe_start: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
}

impl SourcePacket {
    fn media(&self) -> Media {
        Media {
            epoch: self.epoch,
            keyframe_start: self.keyframe_start,
            seq: self.seq,
            timestamp: self.timestamp,
            marker: self.marker,
            payload: self.payload.clone(),
        }
    }
}

/// What the worker's shell must act on.
#[derive(Debug)]
pub enum Output {
    /// ICE and DTLS are up: media flows.
    Connected(PeerId),
    /// The peer failed, went silent, never connected or kept sending garbage; it is already
    /// removed.
    Failed(PeerId),
    /// A local broadcaster's packet, for the viewers on other workers.
    Media(Arc<SourcePacket>),
    /// A local viewer wants a keyframe of a stream whose broadcaster is on another worker.
    KeyframeRequest(StreamName),
    /// A viewer was sent its first video packet (a keyframe start): its time to first frame.
    VideoStarted(PeerId),
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: BytesMut,
    /// The peer it is for: a shell that cannot send it reports so with
    /// [`Sfu::handle_send_failed`] (or keeps it and reports [`Sfu::handle_send_backlog`]).
    pub peer: PeerId,
}

/// Datagrams for one viewer, laid end to end: every one `segment_size` bytes long except
/// perhaps the last, which is shorter. One UDP GSO send (`UDP_SEGMENT`) carries them all; a
/// shell without GSO sends `data.chunks(segment_size)` one by one.
#[derive(Debug)]
pub struct Batch<'a> {
    pub to: SocketAddr,
    pub peer: PeerId,
    pub data: &'a [u8],
    pub segment_size: usize,
}

/// The answer to a publish or a watch.
#[derive(Debug)]
pub struct Answer {
    pub sdp: String,
    /// For a publish: the stream's media, which viewers (on any worker) need.
    pub media: StreamMedia,
}

/// Counters, for tests, logs and (later) metrics.
#[derive(Debug, Default, Clone)]
pub struct SfuStats {
    pub datagrams_in: u64,
    pub datagrams_unroutable: u64,
    /// Datagrams from a peer's bound address that were no protocol of ours, or SRTP that did not
    /// decrypt.
    pub datagrams_garbage: u64,
    pub peers_closed_for_garbage: u64,
    pub rtp_in: u64,
    pub rtp_dropped_duplicate_or_padding: u64,
    pub rtp_dropped_unknown_payload_type: u64,
    pub rtp_forwarded: u64,
    pub pli_sent: u64,
    pub keyframe_requests_in: u64,
    /// Viewers whose video started from the keyframe cache, and packets sent so.
    pub viewers_started_from_cache: u64,
    pub cache_packets_sent: u64,
    /// Times a source ran past the cache's bounds since its last keyframe.
    pub cache_overflows: u64,
    /// Packets viewers NACKed, and what became of them.
    pub nacked: u64,
    pub retransmitted: u64,
    pub retransmitted_rtx: u64,
    pub nack_not_yet_received: u64,
    pub nack_unrepairable: u64,
    /// Packets not sent to a viewer because its send backlog was over the bound.
    pub rtp_dropped_slow_viewer: u64,
    pub slow_viewer_skips: u64,
}

struct DownTrack {
    kind: MediaKind,
    payload_type: u8,
    ssrc: u32,
    /// RTX SSRC and payload type, if the viewer negotiated RTX.
    rtx: Option<(u32, u8)>,
    rtx_seq: u16,
    rewriter: HeaderRewriter,
    /// Video waits for a keyframe start before its first packet, after a skip, and when the
    /// source changes (a reconnected broadcaster).
    waiting_keyframe: bool,
    /// Its first keyframe went out (reported once, as [`Output::VideoStarted`]).
    started: bool,
    /// The source epoch last forwarded.
    epoch: Option<SourceEpoch>,
}

impl DownTrack {
    /// The viewer misses packets on purpose: video restarts at a keyframe, audio at the next
    /// packet; neither shows a sequence gap.
    fn skip(&mut self) {
        match self.kind {
            MediaKind::Video => self.waiting_keyframe = true,
            MediaKind::Audio => self.rewriter.resync(),
        }
    }
}

struct Viewer {
    tracks: [Option<DownTrack>; 2],
    /// Over the backlog bound (set and cleared by the shell's reports).
    backlog_over: bool,
    /// Failed sends in the current window, and when it started.
    send_failures: u32,
    failures_since: Option<Instant>,
    backoff_until: Option<Instant>,
    /// Packets were skipped for congestion; the next one sent is a restart.
    skipping: bool,
    /// The keyframe cache is being replayed to this viewer: its live video waits until the
    /// replay has caught up (the cache holds the live packets too, in order).
    replay: Option<Replay>,
}

/// Where a viewer's paced replay of the keyframe cache stands.
#[derive(Debug, Clone, Copy)]
struct Replay {
    epoch: SourceEpoch,
    /// Source sequence number of the last packet replayed.
    last_seq: u16,
    due: Instant,
}

impl Viewer {
    fn congested(&self, now: Instant) -> bool {
        self.backlog_over || self.backoff_until.is_some_and(|t| now < t)
    }
}

struct Publisher {
    media: StreamMedia,
    video_ssrc: Option<u32>,
    keyframes: KeyframeRequests,
    audio: SourceTrack,
    video: SourceTrack,
}

enum PeerRole {
    Publisher(Box<Publisher>),
    Viewer(Box<Viewer>),
}

/// How much garbage a peer sent lately.
#[derive(Default)]
struct GarbageMeter {
    since: Option<Instant>,
    bad: u32,
    good: u32,
}

impl GarbageMeter {
    /// Returns true when the peer must be closed.
    fn record(&mut self, now: Instant, bad: bool) -> bool {
        if self.since.is_none_or(|s| now >= s + GARBAGE_WINDOW) {
            *self = Self {
                since: Some(now),
                ..Self::default()
            };
        }
        if bad {
            self.bad += 1;
        } else {
            self.good = self.good.saturating_add(1);
        }
        self.bad >= GARBAGE_LIMIT && self.bad > self.good
    }
}

struct PeerEntry {
    peer: Leg,
    stream: StreamName,
    role: PeerRole,
    created_at: Instant,
    deadline: Option<Instant>,
    garbage: GarbageMeter,
}

/// What this worker knows of one stream: its local peers and what it remembers of the source,
/// whether the broadcaster is here or on another worker.
struct LocalStream {
    publisher: Option<PeerId>,
    viewers: Vec<PeerId>,
    /// Video packets since the last keyframe, for viewers that join.
    cache: KeyframeCache,
    /// Recent packets per kind, for viewers' NACKs (allocated with the first packet).
    history: [Option<History>; 2],
    last_media_at: Option<Instant>,
}

impl LocalStream {
    fn new() -> Self {
        Self {
            publisher: None,
            viewers: Vec::new(),
            cache: KeyframeCache::default(),
            history: [None, None],
            last_media_at: None,
        }
    }

    fn is_unused(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }
}

/// The SFU of one media worker: every peer of the worker, the streams they publish or watch,
/// and the fan-out between them. Sans-IO: it never reads a socket or the clock; the shell (the
/// worker) owns the socket, the timer and the channels to other workers.
///
/// # Calling it
///
/// Inputs, each with the current `Instant` (never earlier than the one before):
///
/// - signalling: [`add_publisher`](Sfu::add_publisher), [`add_viewer`](Sfu::add_viewer),
///   [`add_remote_candidate`](Sfu::add_remote_candidate) and [`remove_peer`](Sfu::remove_peer);
/// - every datagram the worker's socket reads: [`handle_datagram`](Sfu::handle_datagram);
/// - what other workers shared (their [`Output::Media`] and [`Output::KeyframeRequest`]):
///   [`handle_media`](Sfu::handle_media) and
///   [`handle_keyframe_request`](Sfu::handle_keyframe_request);
/// - a [`Transmit`] the shell could not send: [`handle_send_failed`](Sfu::handle_send_failed)
///   (a shell that drops), or [`handle_send_backlog`](Sfu::handle_send_backlog) (a shell that
///   queues);
/// - the time: [`handle_timeout`](Sfu::handle_timeout) once the instant
///   [`poll_timeout`](Sfu::poll_timeout) gave has come. Calling it early is harmless; calling it
///   late delays the peers' own timers (DTLS retransmissions, RTCP reports, ICE liveness),
///   coalesced keyframe requests, keyframe-cache replays and the end of dead peers.
///
/// After every input, drain both queues until they return `None`:
///
/// 1. [`poll_transmit`](Sfu::poll_transmit): datagrams to send from the advertised address.
///    They queue in memory until drained, so drain before the next input: a broadcaster's
///    packet then reaches every viewer before the next one is read.
/// 2. [`poll_output`](Sfu::poll_output): what the shell must act on: tell a peer's owner it
///    connected, failed or started video, and pass media and keyframe requests to every other
///    worker's `handle_media` / `handle_keyframe_request`.
///
/// Then ask [`poll_timeout`](Sfu::poll_timeout) again: any input may move the next deadline.
///
/// ```text
/// loop {
///     wait for a datagram, a command, shared media, or poll_timeout()
///     handle_* / add_* / remove_peer (now)
///     while let Some(t) = poll_transmit() { send t, or handle_send_failed(now, t.peer) }
///     while let Some(o) = poll_output() { act on o }
/// }
/// ```
pub struct Sfu {
    config: SfuConfig,
    options: MediaOptions,
    peers: HashMap<PeerId, PeerEntry>,
    streams: HashMap<StreamName, LocalStream>,
    demux: Demuxer<PeerId>,
    transmits: VecDeque<Transmit>,
    outputs: VecDeque<Output>,
    stats: SfuStats,
    /// When to look for streams known only from other workers' media that went idle.
    sweep_at: Option<Instant>,
    /// The certificate and DTLS configuration of lean viewers (made with the first one).
    lean: Option<std::sync::Arc<LeanShared>>,
    /// Lean viewers with encrypted datagrams waiting in their send buffers, for
    /// [`Sfu::poll_batch`].
    batches: VecDeque<PeerId>,
}

/// Where a peer's datagrams go: the parts of the SFU a send touches, borrowed apart from the
/// peer map and the stream map so the fan-out can hold all three.
struct Sink<'a> {
    demux: &'a mut Demuxer<PeerId>,
    transmits: &'a mut VecDeque<Transmit>,
    stats: &'a mut SfuStats,
    outputs: &'a mut VecDeque<Output>,
    batches: &'a mut VecDeque<PeerId>,
}

/// Moves a peer's outgoing datagrams to the send queue. A destination the peer has not sent to
/// before is bound to it in the demultiplexer: `rtc` only answers STUN whose integrity it checked,
/// so an address is bound once it is proven, never on a forged request.
fn drain_transmits(
    id: PeerId,
    peer: &mut Leg,
    demux: &mut Demuxer<PeerId>,
    transmits: &mut VecDeque<Transmit>,
) {
    while let Some((to, data)) = peer.poll_transmit() {
        let addrs = peer.remote_addrs_mut();
        if !addrs.contains(&to) {
            if addrs.len() >= MAX_ADDRS_PER_PEER {
                // Keep the newest: the oldest is the likeliest to be dead.
                let old = addrs.remove(0);
                demux.remove("", &[old], id);
            }
            addrs.push(to);
            demux.bind(to, id);
        }
        transmits.push_back(Transmit { to, data, peer: id });
    }
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

/// What forwarding one packet to one viewer asks of the caller.
#[derive(Debug, Default, Clone, Copy)]
struct After {
    /// The viewer restarts after a skip: ask the broadcaster for a keyframe.
    wants_keyframe: bool,
}

/// Sends one source packet to one viewer: the viewer's sync point, skip and epoch rules, then
/// its own header. The payload is shared, never copied.
fn forward(
    now: Instant,
    id: PeerId,
    e: &mut PeerEntry,
    kind: MediaKind,
    m: &Media,
    sink: &mut Sink<'_>,
) -> After {
    let mut after = After::default();
    if !e.peer.is_connected() {
        return after;
    }
    let PeerRole::Viewer(v) = &mut e.role else {
        return after;
    };
    if v.congested(now) {
        if !v.skipping {
            v.skipping = true;
            sink.stats.slow_viewer_skips += 1;
            v.tracks.iter_mut().flatten().for_each(DownTrack::skip);
        }
        sink.stats.rtp_dropped_slow_viewer += 1;
        return after;
    }
    if v.skipping {
        v.skipping = false;
        after.wants_keyframe = true;
    }
    let Some(t) = v.tracks[slot(kind)].as_mut() else {
        return after;
    };
    if t.epoch != Some(m.epoch) {
        // A new source (the broadcaster reconnected): its video starts at its own keyframe.
        t.epoch = Some(m.epoch);
        if kind == MediaKind::Video {
            t.waiting_keyframe = true;
        }
    }
    if t.waiting_keyframe {
        if !m.keyframe_start {
            return after;
        }
        t.waiting_keyframe = false;
        t.rewriter.resync();
        if !t.started {
            t.started = true;
            sink.outputs.push_back(Output::VideoStarted(id));
        }
    }
    let Some((seq, ts)) = t.rewriter.rewrite(now, m.epoch, m.seq, m.timestamp) else {
        return after;
    };
    let header = rtc::rtp::Header {
        version: 2,
        marker: m.marker,
        payload_type: t.payload_type,
        sequence_number: seq,
        timestamp: ts,
        ssrc: t.ssrc,
        ..Default::default()
    };
    if e.peer.send_rtp(now, header, m.payload.clone()) {
        sink.batches.push_back(id);
    }
    sink.stats.rtp_forwarded += 1;
    drain_transmits(id, &mut e.peer, sink.demux, sink.transmits);
    e.deadline = e.peer.poll_timeout();
    after
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Self {
        Self::with_options(config, MediaOptions::default())
    }

    pub fn with_options(config: SfuConfig, options: MediaOptions) -> Self {
        Self {
            config,
            options,
            peers: HashMap::new(),
            streams: HashMap::new(),
            demux: Demuxer::default(),
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: SfuStats::default(),
            sweep_at: None,
            lean: None,
            batches: VecDeque::new(),
        }
    }

    pub fn stats(&self) -> &SfuStats {
        &self.stats
    }

    pub fn options(&self) -> &MediaOptions {
        &self.options
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Streams this worker knows (with local peers, or media from another worker).
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Packets and payload bytes in `stream`'s keyframe cache on this worker.
    pub fn keyframe_cache_size(&self, stream: &StreamName) -> (usize, usize) {
        self.streams
            .get(stream)
            .map_or((0, 0), |s| (s.cache.len(), s.cache.bytes()))
    }

    /// Entries in the demultiplexer: ufrags plus bound addresses.
    pub fn demux_entries(&self) -> usize {
        self.demux.ufrags() + self.demux.bound_addrs()
    }

    /// Reads what a broadcaster's offer would publish, without creating anything: the shell
    /// checks it before it claims the stream name.
    pub fn publisher_media(offer_sdp: &str) -> Result<StreamMedia, SfuError> {
        Offer::parse(offer_sdp)?.publisher_media()
    }

    /// Answers a broadcaster's offer for `stream`. The shell guarantees one broadcaster per
    /// stream. A stream whose broadcaster left keeps its viewers: a new broadcaster of the same
    /// name (here or on another worker) continues their streams.
    pub fn add_publisher(
        &mut self,
        now: Instant,
        id: PeerId,
        stream: StreamName,
        offer_sdp: &str,
    ) -> Result<Answer, SfuError> {
        let media = Self::publisher_media(offer_sdp)?;
        let (peer, sdp) = Peer::new(
            now,
            self.config.advertised_addr,
            self.config.srtp,
            offer_sdp,
            Role::Publisher { media: &media },
        )?;
        let publisher = Publisher {
            media: media.clone(),
            video_ssrc: None,
            keyframes: KeyframeRequests::default(),
            audio: SourceTrack::default(),
            video: SourceTrack::default(),
        };
        self.streams
            .entry(stream.clone())
            .or_insert_with(LocalStream::new)
            .publisher = Some(id);
        self.insert(
            now,
            id,
            Leg::Rtc(Box::new(peer)),
            stream,
            PeerRole::Publisher(Box::new(publisher)),
        );
        Ok(Answer { sdp, media })
    }

    /// Answers a viewer's offer for `stream`, whose media is `media` (from the publish, on
    /// whichever worker it happened).
    pub fn add_viewer(
        &mut self,
        now: Instant,
        id: PeerId,
        stream: StreamName,
        media: &StreamMedia,
        offer_sdp: &str,
    ) -> Result<Answer, SfuError> {
        let offer = Offer::parse(offer_sdp)?;
        let codecs = offer.viewer_codecs(media)?;
        let video_rtx_pt = codecs
            .video
            .as_ref()
            .and_then(|v| offer.rtx_payload_type(MediaKind::Video, v.payload_type));
        let (peer, sdp) = match self.options.viewer_leg {
            ViewerLeg::Rtc => {
                let (peer, sdp) = Peer::new(
                    now,
                    self.config.advertised_addr,
                    self.config.srtp,
                    offer_sdp,
                    Role::Viewer {
                        codecs: &codecs,
                        video_rtx_pt,
                    },
                )?;
                (Leg::Rtc(Box::new(peer)), sdp)
            }
            ViewerLeg::Lean => {
                let shared = match &self.lean {
                    Some(s) => s.clone(),
                    None => self
                        .lean
                        .insert(LeanShared::new(now, self.config.srtp)?)
                        .clone(),
                };
                let (viewer, sdp) = LeanViewer::new(
                    now,
                    shared,
                    self.config.advertised_addr,
                    offer_sdp,
                    &codecs,
                    video_rtx_pt,
                )?;
                (Leg::Lean(Box::new(viewer)), sdp)
            }
        };
        let mut tracks: [Option<DownTrack>; 2] = [None, None];
        for c in [&codecs.audio, &codecs.video].into_iter().flatten() {
            let Some(ssrc) = peer.send_ssrc()[slot(c.kind)] else {
                continue;
            };
            tracks[slot(c.kind)] = Some(DownTrack {
                kind: c.kind,
                payload_type: c.payload_type,
                ssrc,
                rtx: peer.rtx()[slot(c.kind)],
                rtx_seq: rand::random(),
                rewriter: HeaderRewriter::new(c.clock_rate, rand::random(), rand::random()),
                waiting_keyframe: c.kind == MediaKind::Video,
                started: false,
                epoch: None,
            });
        }
        self.streams
            .entry(stream.clone())
            .or_insert_with(LocalStream::new)
            .viewers
            .push(id);
        let viewer = Viewer {
            tracks,
            backlog_over: false,
            send_failures: 0,
            failures_since: None,
            backoff_until: None,
            skipping: false,
            replay: None,
        };
        self.insert(now, id, peer, stream, PeerRole::Viewer(Box::new(viewer)));
        Ok(Answer { sdp, media: codecs })
    }

    fn insert(&mut self, now: Instant, id: PeerId, peer: Leg, stream: StreamName, role: PeerRole) {
        self.demux.add_ufrag(peer.ufrag().to_owned(), id);
        self.peers.insert(
            id,
            PeerEntry {
                peer,
                stream,
                role,
                created_at: now,
                deadline: None,
                garbage: GarbageMeter::default(),
            },
        );
        self.drain_peer(now, id);
    }

    /// A trickled remote candidate. An empty candidate (end of candidates) is accepted and
    /// changes nothing: as ICE-lite we never send checks.
    pub fn add_remote_candidate(
        &mut self,
        id: PeerId,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), SfuError> {
        let entry = self.peers.get_mut(&id).ok_or(SfuError::UnknownPeer)?;
        if candidate.trim().is_empty() {
            return Ok(());
        }
        entry
            .peer
            .add_remote_candidate(candidate, sdp_mid, sdp_mline_index)
    }

    /// Removes a peer at once (its session ended). Removing an unknown peer does nothing.
    /// A broadcaster's viewers stay, waiting for a new broadcaster of the same stream.
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(mut entry) = self.peers.remove(&id) else {
            return;
        };
        self.demux
            .remove(entry.peer.ufrag(), entry.peer.remote_addrs(), id);
        entry.peer.close();
        while let Some((to, data)) = entry.peer.poll_transmit() {
            self.transmits.push_back(Transmit { to, data, peer: id });
        }
        if let Some(s) = self.streams.get_mut(&entry.stream) {
            if s.publisher == Some(id) {
                s.publisher = None;
                // Its packets must not start a viewer that joins before the next broadcaster.
                s.cache.clear();
            }
            s.viewers.retain(|v| *v != id);
            if s.viewers.capacity() > 64 && s.viewers.len() * 4 < s.viewers.capacity() {
                s.viewers.shrink_to(s.viewers.len() * 2);
            }
            if s.is_unused() {
                self.streams.remove(&entry.stream);
            }
        }
        // Maps keep their high-water capacity; give it back when most of it is empty, so a
        // burst of peers does not hold memory for good.
        if self.peers.capacity() > 64 && self.peers.len() * 4 < self.peers.capacity() {
            self.peers.shrink_to(self.peers.len() * 2);
        }
        self.demux.shrink();
    }

    /// One datagram from the worker's socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        let Route::Peer(id) = self.demux.route(from, data) else {
            self.stats.datagrams_unroutable += 1;
            return;
        };
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        let verdict = entry.peer.handle_datagram(now, from, data);
        // Only a proven (bound) address counts against its peer: anyone can send STUN that
        // names a peer's ufrag.
        if entry.peer.remote_addrs().contains(&from) {
            let bad = verdict == DatagramVerdict::Garbage;
            if bad {
                self.stats.datagrams_garbage += 1;
            }
            if entry.garbage.record(now, bad) {
                tracing::info!(peer = %id, "closed: it keeps sending garbage");
                self.stats.peers_closed_for_garbage += 1;
                self.remove_peer(id);
                self.outputs.push_back(Output::Failed(id));
                return;
            }
        } else if verdict == DatagramVerdict::Garbage {
            self.stats.datagrams_garbage += 1;
        }
        self.drain_peer(now, id);
    }

    /// A packet of a broadcaster on another worker. The worker remembers it (keyframe cache,
    /// NACK history) whether or not it has viewers of the stream yet, so its first viewer joins
    /// at once too; the payload is the one the broadcaster's worker shares, so that costs an
    /// entry, not a copy.
    pub fn handle_media(&mut self, now: Instant, packet: &SourcePacket) {
        if !self.streams.contains_key(&packet.stream) {
            self.streams
                .insert(packet.stream.clone(), LocalStream::new());
            self.sweep_at.get_or_insert(now + REMOTE_STREAM_IDLE);
        }
        self.on_source_packet(now, &packet.stream, packet.kind, &packet.media(), false);
    }

    /// A keyframe request from a viewer on another worker. Only the worker that has the
    /// stream's broadcaster acts on it; the others ignore it (and never pass it on again).
    pub fn handle_keyframe_request(&mut self, now: Instant, stream: &StreamName) {
        if self
            .streams
            .get(stream)
            .is_some_and(|s| s.publisher.is_some())
        {
            self.request_keyframe(now, stream);
        }
    }

    /// The shell holds `queued_bytes` for viewer `peer` that it has not sent yet (a shell with
    /// a queue or pacer per viewer reports after each flush). Over
    /// [`MediaOptions::max_viewer_backlog_bytes`], the viewer is sent nothing more and restarts
    /// at a keyframe once the backlog is under half the bound. Nobody else is affected.
    pub fn handle_send_backlog(&mut self, now: Instant, peer: PeerId, queued_bytes: usize) {
        let max = self.options.max_viewer_backlog_bytes;
        let Some(e) = self.peers.get_mut(&peer) else {
            return;
        };
        let PeerRole::Viewer(v) = &mut e.role else {
            return;
        };
        if queued_bytes > max {
            v.backlog_over = true;
        } else if v.backlog_over && queued_bytes <= max / 2 {
            v.backlog_over = false;
            if v.skipping && !v.congested(now) {
                // Ask now, so the keyframe is on its way when the viewer can take it.
                let stream = e.stream.clone();
                self.request_keyframe(now, &stream);
            }
        }
    }

    /// The shell could not send a datagram for `peer` (for a shell that drops instead of
    /// queueing: `try_send_to` failed). One failure is loss, which NACKs repair; a run of
    /// [`SEND_FAILURES_BEFORE_SKIP`] within [`SEND_FAILURE_WINDOW`] makes the viewer skip for
    /// [`SEND_FAILURE_BACKOFF`] and restart at a keyframe.
    pub fn handle_send_failed(&mut self, now: Instant, peer: PeerId) {
        let Some(e) = self.peers.get_mut(&peer) else {
            return;
        };
        let PeerRole::Viewer(v) = &mut e.role else {
            return;
        };
        if v.failures_since
            .is_none_or(|s| now >= s + SEND_FAILURE_WINDOW)
        {
            v.failures_since = Some(now);
            v.send_failures = 0;
        }
        v.send_failures += 1;
        if v.send_failures >= SEND_FAILURES_BEFORE_SKIP {
            v.backoff_until = Some(now + SEND_FAILURE_BACKOFF);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next batch of a lean viewer's media (see [`Batch`]). The shell sends it before it
    /// polls again; what a viewer was sent since its last batch went out is one batch or a few
    /// (a run of equal sizes per GSO send). Cheap to call: media of `rtc` viewers comes through
    /// [`Sfu::poll_transmit`] instead.
    pub fn poll_batch(&mut self) -> Option<Batch<'_>> {
        loop {
            let id = *self.batches.front()?;
            let next = match self.peers.get_mut(&id).map(|e| &mut e.peer) {
                Some(Leg::Lean(v)) => v.next_batch(),
                _ => None,
            };
            let Some((to, range, segment_size)) = next else {
                self.batches.pop_front();
                continue;
            };
            let Some(Leg::Lean(v)) = self.peers.get(&id).map(|e| &e.peer) else {
                unreachable!("the viewer just gave a batch");
            };
            return Some(Batch {
                to,
                peer: id,
                data: &v.send_buffer()[range],
                segment_size,
            });
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest instant [`Sfu::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|e| {
                let connect = (!e.peer.is_connected()).then_some(e.created_at + CONNECT_TIMEOUT);
                let pli = match &e.role {
                    PeerRole::Publisher(p) => p.keyframes.poll_timeout(),
                    PeerRole::Viewer(v) => v.replay.map(|r| r.due),
                };
                [e.deadline, connect, pli]
            })
            .flatten()
            .chain(self.sweep_at)
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.sweep_at.is_some_and(|t| t <= now) {
            self.sweep_idle_streams(now);
        }
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, e)| {
                e.deadline.is_some_and(|d| d <= now)
                    || (!e.peer.is_connected() && e.created_at + CONNECT_TIMEOUT <= now)
                    || matches!(&e.role, PeerRole::Publisher(p) if p.keyframes.poll_timeout().is_some_and(|d| d <= now))
                    || matches!(&e.role, PeerRole::Viewer(v) if v.replay.is_some_and(|r| r.due <= now))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.continue_replay(now, id);
            let Some(e) = self.peers.get_mut(&id) else {
                continue;
            };
            if !e.peer.is_connected() && e.created_at + CONNECT_TIMEOUT <= now {
                tracing::info!(peer = %id, "never connected; giving up");
                self.remove_peer(id);
                self.outputs.push_back(Output::Failed(id));
                continue;
            }
            if let PeerRole::Publisher(p) = &mut e.role
                && p.keyframes.handle_timeout(now)
                && let Some(ssrc) = p.video_ssrc
            {
                e.peer.send_pli(now, ssrc);
                self.stats.pli_sent += 1;
            }
            e.peer.handle_timeout(now);
            self.drain_peer(now, id);
        }
    }

    /// Forgets streams known only from other workers' media once they went quiet.
    fn sweep_idle_streams(&mut self, now: Instant) {
        self.streams.retain(|_, s| {
            !(s.is_unused()
                && s.last_media_at
                    .is_none_or(|t| now >= t + REMOTE_STREAM_IDLE))
        });
        self.sweep_at = self
            .streams
            .values()
            .any(LocalStream::is_unused)
            .then_some(now + REMOTE_STREAM_IDLE);
    }

    /// Drains everything a peer produced after an input.
    fn drain_peer(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        drain_transmits(id, &mut e.peer, &mut self.demux, &mut self.transmits);
        let mut inbound = Vec::new();
        while let Some(i) = e.peer.poll_inbound() {
            inbound.push(i);
        }
        let mut events = Vec::new();
        while let Some(ev) = e.peer.poll_event() {
            events.push(ev);
        }
        e.deadline = e.peer.poll_timeout();
        let stream = e.stream.clone();
        let is_publisher = matches!(e.role, PeerRole::Publisher(_));

        for i in inbound {
            match i {
                Inbound::Rtp(packet) if is_publisher => self.on_publisher_rtp(now, id, packet),
                Inbound::Rtp(_) => {}
                Inbound::KeyframeRequest => {
                    if !is_publisher {
                        self.stats.keyframe_requests_in += 1;
                        self.request_keyframe(now, &stream);
                    }
                }
                Inbound::Nack { media_ssrc, seqs } => {
                    if !is_publisher {
                        self.on_nack(now, id, media_ssrc, &seqs);
                    }
                }
            }
        }
        for ev in events {
            match ev {
                PeerEvent::Connected => {
                    tracing::debug!(peer = %id, %stream, "connected");
                    self.outputs.push_back(Output::Connected(id));
                    if !is_publisher {
                        self.start_viewer(now, id);
                    }
                }
                PeerEvent::Failed => {
                    tracing::info!(peer = %id, %stream, "connection failed or closed");
                    self.remove_peer(id);
                    self.outputs.push_back(Output::Failed(id));
                    return;
                }
            }
        }
    }

    /// A viewer just connected: its video starts from the cached keyframe when there is one
    /// (its first picture after one round trip), otherwise at the keyframe it asks for.
    fn start_viewer(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let stream = e.stream.clone();
        let Some(ls) = self.streams.get(&stream) else {
            return;
        };
        let state = if self.options.keyframe_cache {
            ls.cache.state()
        } else {
            CacheState::Empty
        };
        if state != CacheState::Empty {
            let mut sink = Sink {
                demux: &mut self.demux,
                transmits: &mut self.transmits,
                stats: &mut self.stats,
                outputs: &mut self.outputs,
                batches: &mut self.batches,
            };
            // A keyframe-only cache is one picture: it goes at once.
            let burst = match state {
                CacheState::Complete => REPLAY_BURST,
                _ => usize::MAX,
            };
            let mut sent = 0;
            let mut last = None;
            for m in ls.cache.packets().take(burst) {
                forward(now, id, e, MediaKind::Video, m, &mut sink);
                sent += 1;
                last = Some((m.epoch, m.seq));
            }
            sink.stats.viewers_started_from_cache += 1;
            sink.stats.cache_packets_sent += sent as u64;
            if state == CacheState::Complete {
                if let (Some((epoch, last_seq)), PeerRole::Viewer(v)) = (last, &mut e.role)
                    && ls.cache.len() > sent
                {
                    v.replay = Some(Replay {
                        epoch,
                        last_seq,
                        due: now + REPLAY_INTERVAL,
                    });
                }
                return;
            }
            // Only the keyframe was kept: show it, then wait for the next one.
            if let PeerRole::Viewer(v) = &mut e.role
                && let Some(t) = v.tracks[slot(MediaKind::Video)].as_mut()
            {
                t.waiting_keyframe = true;
            }
        }
        self.request_keyframe(now, &stream);
    }

    /// The next step of a viewer's paced replay of the keyframe cache, when it is due: the next
    /// [`REPLAY_BURST`] packets after the last one replayed, until the replay has caught up with
    /// the cache (and so with the live stream). If the cache started over at a newer keyframe
    /// meanwhile, the replay goes on from that keyframe without a gap; if it lost its packets
    /// (overflow, a new source without a keyframe yet), the viewer waits for the next keyframe.
    fn continue_replay(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let PeerRole::Viewer(v) = &mut e.role else {
            return;
        };
        let Some(r) = v.replay.filter(|r| r.due <= now) else {
            return;
        };
        let Some(ls) = self.streams.get(&e.stream) else {
            v.replay = None;
            return;
        };
        if ls.cache.state() != CacheState::Complete {
            v.replay = None;
            if let Some(t) = v.tracks[slot(MediaKind::Video)].as_mut() {
                t.waiting_keyframe = true;
            }
            let stream = e.stream.clone();
            self.request_keyframe(now, &stream);
            return;
        }
        let same_run =
            ls.cache.packets().next().is_some_and(|m| {
                m.epoch == r.epoch && (m.seq.wrapping_sub(r.last_seq) as i16) <= 0
            });
        let next: Vec<Media> = ls
            .cache
            .packets()
            .filter(|m| !same_run || (m.seq.wrapping_sub(r.last_seq) as i16) > 0)
            .take(REPLAY_BURST)
            .cloned()
            .collect();
        if !same_run
            && next.first().is_some_and(|m| m.keyframe_start)
            && let Some(t) = v.tracks[slot(MediaKind::Video)].as_mut()
        {
            // The cache started over at a newer keyframe: skip ahead to it without a gap.
            t.waiting_keyframe = true;
        }
        v.replay = match next.last() {
            Some(m) if next.len() == REPLAY_BURST => Some(Replay {
                epoch: m.epoch,
                last_seq: m.seq,
                due: now + REPLAY_INTERVAL,
            }),
            // Caught up: live packets from here on.
            _ => None,
        };
        let mut sink = Sink {
            demux: &mut self.demux,
            transmits: &mut self.transmits,
            stats: &mut self.stats,
            outputs: &mut self.outputs,
            batches: &mut self.batches,
        };
        for m in &next {
            forward(now, id, e, MediaKind::Video, m, &mut sink);
        }
        sink.stats.cache_packets_sent += next.len() as u64;
    }

    /// A viewer lost packets: resend them from the stream's history (as RTX where the viewer
    /// negotiated it). What the SFU never got is the broadcaster leg's to repair; what is too
    /// old to resend takes a keyframe.
    fn on_nack(&mut self, now: Instant, id: PeerId, media_ssrc: u32, seqs: &[u16]) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let PeerRole::Viewer(v) = &mut e.role else {
            return;
        };
        let Some(t) = v.tracks.iter_mut().flatten().find(|t| t.ssrc == media_ssrc) else {
            return;
        };
        let history = self
            .streams
            .get(&e.stream)
            .and_then(|s| s.history[slot(t.kind)].as_ref());
        let mut unrepairable = false;
        for &seq in seqs {
            self.stats.nacked += 1;
            let Some((epoch, source_seq)) = t.rewriter.source_of(seq) else {
                // Before the viewer's sync point: not part of its stream.
                continue;
            };
            let found = match history.map(|h| h.get(epoch, source_seq)) {
                Some(Lookup::Found(m)) => m,
                Some(Lookup::NotYetReceived) => {
                    self.stats.nack_not_yet_received += 1;
                    continue;
                }
                Some(Lookup::Gone) | None => {
                    self.stats.nack_unrepairable += 1;
                    unrepairable = true;
                    continue;
                }
            };
            let Some((out_seq, out_ts)) =
                t.rewriter
                    .rewrite(now, found.epoch, found.seq, found.timestamp)
            else {
                continue;
            };
            let (header, payload) = match t.rtx {
                Some((rtx_ssrc, rtx_pt)) => {
                    // RFC 4588: the original sequence number, then the original payload. The
                    // one copy of the payload on the whole path, and only for a loss.
                    let mut p = BytesMut::with_capacity(2 + found.payload.len());
                    p.put_u16(out_seq);
                    p.put_slice(&found.payload);
                    let rtx_seq = t.rtx_seq;
                    t.rtx_seq = t.rtx_seq.wrapping_add(1);
                    self.stats.retransmitted_rtx += 1;
                    (
                        rtc::rtp::Header {
                            version: 2,
                            marker: found.marker,
                            payload_type: rtx_pt,
                            sequence_number: rtx_seq,
                            timestamp: out_ts,
                            ssrc: rtx_ssrc,
                            ..Default::default()
                        },
                        p.freeze(),
                    )
                }
                None => (
                    rtc::rtp::Header {
                        version: 2,
                        marker: found.marker,
                        payload_type: t.payload_type,
                        sequence_number: out_seq,
                        timestamp: out_ts,
                        ssrc: t.ssrc,
                        ..Default::default()
                    },
                    found.payload.clone(),
                ),
            };
            if e.peer.send_rtp(now, header, payload) {
                self.batches.push_back(id);
            }
            self.stats.retransmitted += 1;
        }
        drain_transmits(id, &mut e.peer, &mut self.demux, &mut self.transmits);
        e.deadline = e.peer.poll_timeout();
        if unrepairable {
            let stream = e.stream.clone();
            self.request_keyframe(now, &stream);
        }
    }

    fn on_publisher_rtp(&mut self, now: Instant, id: PeerId, packet: rtc::rtp::Packet) {
        self.stats.rtp_in += 1;
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        let PeerRole::Publisher(p) = &mut e.role else {
            return;
        };
        let pt = packet.header.payload_type;
        let kind = if p.media.video.as_ref().is_some_and(|c| c.payload_type == pt) {
            MediaKind::Video
        } else if p.media.audio.as_ref().is_some_and(|c| c.payload_type == pt) {
            MediaKind::Audio
        } else {
            self.stats.rtp_dropped_unknown_payload_type += 1;
            return;
        };
        let track = match kind {
            MediaKind::Audio => &mut p.audio,
            MediaKind::Video => &mut p.video,
        };
        let seq = match track.accept(packet.header.sequence_number, packet.payload.is_empty()) {
            Verdict::Forward(seq) => seq,
            Verdict::Drop => {
                self.stats.rtp_dropped_duplicate_or_padding += 1;
                return;
            }
        };
        let video_codec: Option<VideoCodec> = p.media.video.as_ref().and_then(|c| c.video);
        let keyframe_start = kind == MediaKind::Video
            && video_codec.is_some_and(|c| is_keyframe_start(c, &packet.payload));
        let mut ask_keyframe = false;
        if kind == MediaKind::Video {
            // A source whose first video is no keyframe (it started before we listened, or
            // reconnected mid-GOP) is asked for one at once: viewers wait for it.
            ask_keyframe = p.video_ssrc.is_none() && !keyframe_start;
            p.video_ssrc = Some(packet.header.ssrc);
            if keyframe_start {
                p.keyframes.keyframe_received(now);
            }
        }
        let stream = e.stream.clone();
        let media = Media {
            epoch: id.0,
            keyframe_start,
            seq,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload: packet.payload,
        };
        if self.config.share_media {
            self.outputs.push_back(Output::Media(Arc::new(SourcePacket {
                stream: stream.clone(),
                epoch: media.epoch,
                kind,
                keyframe_start,
                seq,
                timestamp: media.timestamp,
                marker: media.marker,
                payload: media.payload.clone(),
            })));
        }
        self.on_source_packet(now, &stream, kind, &media, true);
        if ask_keyframe {
            self.request_keyframe(now, &stream);
        }
    }

    /// One source packet, local or from another worker: remembered (history, keyframe cache),
    /// then sent to every local viewer of its stream.
    fn on_source_packet(
        &mut self,
        now: Instant,
        stream: &StreamName,
        kind: MediaKind,
        m: &Media,
        local: bool,
    ) {
        let Some(ls) = self.streams.get_mut(stream) else {
            return;
        };
        ls.last_media_at = Some(now);
        let capacity = match kind {
            MediaKind::Audio => AUDIO_HISTORY_PACKETS,
            MediaKind::Video => VIDEO_HISTORY_PACKETS,
        };
        ls.history[slot(kind)]
            .get_or_insert_with(|| History::new(capacity))
            .push(m);
        let mut wants_keyframe = false;
        if kind == MediaKind::Video && self.options.keyframe_cache && ls.cache.push(m) {
            self.stats.cache_overflows += 1;
            // Every worker's cache overflows at the same packet; the broadcaster's asks.
            wants_keyframe = local;
        }
        let mut sink = Sink {
            demux: &mut self.demux,
            transmits: &mut self.transmits,
            stats: &mut self.stats,
            outputs: &mut self.outputs,
            batches: &mut self.batches,
        };
        for id in &ls.viewers {
            let Some(e) = self.peers.get_mut(id) else {
                continue;
            };
            let replaying = matches!(&e.role, PeerRole::Viewer(v) if v.replay.is_some());
            if replaying && kind == MediaKind::Video {
                // In the cache already: the replay sends it, in order.
                continue;
            }
            wants_keyframe |= forward(now, *id, e, kind, m, &mut sink).wants_keyframe;
        }
        if wants_keyframe {
            self.request_keyframe(now, stream);
        }
    }

    /// A viewer of `stream` wants a keyframe: ask the broadcaster (coalesced), here or on the
    /// worker that has it.
    fn request_keyframe(&mut self, now: Instant, stream: &StreamName) {
        let publisher = self.streams.get(stream).and_then(|s| s.publisher);
        let Some(pid) = publisher else {
            if self.config.share_media {
                self.outputs
                    .push_back(Output::KeyframeRequest(stream.clone()));
            }
            return;
        };
        let Some(e) = self.peers.get_mut(&pid) else {
            return;
        };
        let PeerRole::Publisher(p) = &mut e.role else {
            return;
        };
        // Before the first video packet there is no SSRC to ask; that first packet of a new
        // encoder is a keyframe anyway.
        if let Some(ssrc) = p.video_ssrc
            && p.keyframes.request(now)
        {
            e.peer.send_pli(now, ssrc);
            self.stats.pli_sent += 1;
            drain_transmits(pid, &mut e.peer, &mut self.demux, &mut self.transmits);
            e.deadline = e.peer.poll_timeout();
        }
    }
}
