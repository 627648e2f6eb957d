//! The SFU of one media worker: its peers, the streams they publish or watch, and the
//! fan-out between them. Sans-IO: the shell feeds datagrams, timeouts, commands and media
//! from other workers in; it drains datagrams to send and [`Output`]s after every input.

use bytes::{Bytes, BytesMut};
use golive_proto::StreamName;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::SfuError;
use crate::codec::{MediaKind, Offer, StreamMedia, VideoCodec};
use crate::demux::{Demuxer, Route};
use crate::keyframe::is_keyframe_start;
use crate::peer::{Inbound, Peer, PeerEvent, Role, SrtpPolicy};
use crate::pli::KeyframeRequests;
use crate::rewrite::{HeaderRewriter, SourceEpoch};
use crate::source::{SourceTrack, Verdict};

/// A peer that has not connected (ICE and DTLS) this long after its answer is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer may send from this many remote addresses (NAT rebinding, several candidates).
const MAX_ADDRS_PER_PEER: usize = 8;

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
    /// The address advertised in our ICE candidate, and the local address of every datagram
    /// (they must be equal: RTC-NOTES pitfall 6).
    pub advertised_addr: SocketAddr,
    pub srtp: SrtpPolicy,
    /// Emit every local broadcaster's packets as [`Output::Media`] for other workers.
    pub share_media: bool,
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

/// What the worker's shell must act on.
#[derive(Debug)]
pub enum Output {
    /// ICE and DTLS are up: media flows.
    Connected(PeerId),
    /// The peer failed, went silent or never connected; it is already removed.
    Failed(PeerId),
    /// A local broadcaster's packet, for the viewers on other workers.
    Media(Arc<SourcePacket>),
    /// A local viewer wants a keyframe of a stream whose broadcaster is on another worker.
    KeyframeRequest(StreamName),
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: BytesMut,
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
    pub rtp_in: u64,
    pub rtp_dropped_duplicate_or_padding: u64,
    pub rtp_dropped_unknown_payload_type: u64,
    pub rtp_forwarded: u64,
    pub pli_sent: u64,
    pub keyframe_requests_in: u64,
}

struct DownTrack {
    payload_type: u8,
    ssrc: u32,
    rewriter: HeaderRewriter,
    /// Video waits for a keyframe start before its first packet.
    waiting_keyframe: bool,
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
    Viewer([Option<DownTrack>; 2]),
}

struct PeerEntry {
    peer: Peer,
    stream: StreamName,
    role: PeerRole,
    created_at: Instant,
    deadline: Option<Instant>,
}

#[derive(Default)]
struct LocalStream {
    publisher: Option<PeerId>,
    viewers: Vec<PeerId>,
}

pub struct Sfu {
    config: SfuConfig,
    peers: HashMap<PeerId, PeerEntry>,
    streams: HashMap<StreamName, LocalStream>,
    demux: Demuxer<PeerId>,
    transmits: VecDeque<Transmit>,
    outputs: VecDeque<Output>,
    stats: SfuStats,
}

/// Moves a peer's outgoing datagrams to the send queue. A destination the peer has not sent to
/// before is bound to it in the demultiplexer: `rtc` only answers STUN whose integrity it checked,
/// so an address is bound once it is proven, never on a forged request.
fn drain_transmits(
    id: PeerId,
    peer: &mut Peer,
    demux: &mut Demuxer<PeerId>,
    transmits: &mut VecDeque<Transmit>,
) {
    while let Some((to, data)) = peer.poll_transmit() {
        if !peer.remote_addrs.contains(&to) {
            if peer.remote_addrs.len() >= MAX_ADDRS_PER_PEER {
                // Keep the newest: the oldest is the likeliest to be dead.
                let old = peer.remote_addrs.remove(0);
                demux.remove("", &[old], id);
            }
            peer.remote_addrs.push(to);
            demux.bind(to, id);
        }
        transmits.push_back(Transmit { to, data });
    }
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

impl Sfu {
    pub fn new(config: SfuConfig) -> Self {
        Self {
            config,
            peers: HashMap::new(),
            streams: HashMap::new(),
            demux: Demuxer::default(),
            transmits: VecDeque::new(),
            outputs: VecDeque::new(),
            stats: SfuStats::default(),
        }
    }

    pub fn stats(&self) -> &SfuStats {
        &self.stats
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Reads what a broadcaster's offer would publish, without creating anything: the shell
    /// checks it before it claims the stream name.
    pub fn publisher_media(offer_sdp: &str) -> Result<StreamMedia, SfuError> {
        Offer::parse(offer_sdp)?.publisher_media()
    }

    /// Answers a broadcaster's offer for `stream`. The shell guarantees one broadcaster per
    /// stream.
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
        self.streams.entry(stream.clone()).or_default().publisher = Some(id);
        self.insert(
            now,
            id,
            peer,
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
        let codecs = Offer::parse(offer_sdp)?.viewer_codecs(media)?;
        let (peer, sdp) = Peer::new(
            now,
            self.config.advertised_addr,
            self.config.srtp,
            offer_sdp,
            Role::Viewer { codecs: &codecs },
        )?;
        let mut tracks: [Option<DownTrack>; 2] = [None, None];
        for c in [&codecs.audio, &codecs.video].into_iter().flatten() {
            let Some(ssrc) = peer.send_ssrc[slot(c.kind)] else {
                continue;
            };
            tracks[slot(c.kind)] = Some(DownTrack {
                payload_type: c.payload_type,
                ssrc,
                rewriter: HeaderRewriter::new(c.clock_rate, rand::random(), rand::random()),
                waiting_keyframe: c.kind == MediaKind::Video,
            });
        }
        self.streams
            .entry(stream.clone())
            .or_default()
            .viewers
            .push(id);
        self.insert(now, id, peer, stream, PeerRole::Viewer(tracks));
        Ok(Answer { sdp, media: codecs })
    }

    fn insert(&mut self, now: Instant, id: PeerId, peer: Peer, stream: StreamName, role: PeerRole) {
        self.demux.add_ufrag(peer.ufrag.clone(), id);
        self.peers.insert(
            id,
            PeerEntry {
                peer,
                stream,
                role,
                created_at: now,
                deadline: None,
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
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(mut entry) = self.peers.remove(&id) else {
            return;
        };
        self.demux
            .remove(&entry.peer.ufrag, &entry.peer.remote_addrs, id);
        entry.peer.close();
        while let Some((to, data)) = entry.peer.poll_transmit() {
            self.transmits.push_back(Transmit { to, data });
        }
        if let Some(s) = self.streams.get_mut(&entry.stream) {
            if s.publisher == Some(id) {
                s.publisher = None;
            }
            s.viewers.retain(|v| *v != id);
            if s.publisher.is_none() && s.viewers.is_empty() {
                self.streams.remove(&entry.stream);
            }
        }
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
        entry.peer.handle_datagram(now, from, data);
        self.drain_peer(now, id);
    }

    /// A packet of a broadcaster on another worker.
    pub fn handle_media(&mut self, now: Instant, packet: &SourcePacket) {
        self.fan_out(now, packet);
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

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
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
                    PeerRole::Viewer(_) => None,
                };
                [e.deadline, connect, pli]
            })
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, e)| {
                e.deadline.is_some_and(|d| d <= now)
                    || (!e.peer.is_connected() && e.created_at + CONNECT_TIMEOUT <= now)
                    || matches!(&e.role, PeerRole::Publisher(p) if p.keyframes.poll_timeout().is_some_and(|d| d <= now))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
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
            }
        }
        for ev in events {
            match ev {
                PeerEvent::Connected => {
                    tracing::debug!(peer = %id, %stream, "connected");
                    self.outputs.push_back(Output::Connected(id));
                    if !is_publisher {
                        // The viewer's picture starts at a keyframe: ask for one now.
                        self.request_keyframe(now, &stream);
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
        if kind == MediaKind::Video {
            p.video_ssrc = Some(packet.header.ssrc);
            if keyframe_start {
                p.keyframes.keyframe_received(now);
            }
        }
        let source = SourcePacket {
            stream: e.stream.clone(),
            epoch: id.0,
            kind,
            keyframe_start,
            seq,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload: packet.payload,
        };
        self.fan_out(now, &source);
        if self.config.share_media {
            self.outputs.push_back(Output::Media(Arc::new(source)));
        }
    }

    /// Sends one source packet to every local viewer of its stream.
    fn fan_out(&mut self, now: Instant, packet: &SourcePacket) {
        let Some(stream) = self.streams.get(&packet.stream) else {
            return;
        };
        for id in &stream.viewers {
            let Some(e) = self.peers.get_mut(id) else {
                continue;
            };
            if !e.peer.is_connected() {
                continue;
            }
            let PeerRole::Viewer(tracks) = &mut e.role else {
                continue;
            };
            let Some(t) = tracks[slot(packet.kind)].as_mut() else {
                continue;
            };
            if t.waiting_keyframe {
                if !packet.keyframe_start {
                    continue;
                }
                t.waiting_keyframe = false;
                t.rewriter.resync();
            }
            let Some((seq, ts)) =
                t.rewriter
                    .rewrite(now, packet.epoch, packet.seq, packet.timestamp)
            else {
                continue;
            };
            let header = rtc::rtp::Header {
                version: 2,
                marker: packet.marker,
                payload_type: t.payload_type,
                sequence_number: seq,
                timestamp: ts,
                ssrc: t.ssrc,
                ..Default::default()
            };
            e.peer.send_rtp(now, header, packet.payload.clone());
            self.stats.rtp_forwarded += 1;
            drain_transmits(*id, &mut e.peer, &mut self.demux, &mut self.transmits);
            e.deadline = e.peer.poll_timeout();
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
