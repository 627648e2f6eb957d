//! The SFU of one media worker, the facade of the core: its peers, the streams they publish or
//! watch, and the fan-out between them. Sans-IO: the shell feeds datagrams, timeouts, commands
//! and media from other workers in; it drains datagrams to send and [`Output`]s after every
//! input.
//!
//! The work is done by the parts behind it: the receiver (a broadcaster's packets and the
//! keyframe requests to it), the forwarder (fan-out, keyframe-cache replay, the slow-viewer
//! rule, NACKs from the shared history), the down tracks (each viewer's own headers) and the
//! outbox (what leaves for the shell, and the worker's timers). This module routes inputs to
//! them and owns the peers' lifecycle.

use golive_proto::StreamName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::SfuError;
use crate::adapt::{ProbeEvent, ViewerBwe};
use crate::bwe::Preference;
use crate::cache::{KeyframeCache, Media};
use crate::codec::{MediaKind, Offer, StreamMedia};
use crate::demux::Route;
use crate::down_track::{DownTrack, Viewer};
use crate::entry::{PeerEntry, PeerRole};
use crate::forwarder::Forwarder;
use crate::leg::{Leg, ViewerLeg};
use crate::outbox::Outbox;
use crate::peer::{DatagramVerdict, Inbound, Peer, PeerEvent, Role, SrtpPolicy};
use crate::receiver::{self, Receiver};
use crate::simulcast::{Allowance, Layer, LayerChange, MAX_LAYERS, Rung};
use crate::stream::LocalStream;
use crate::timers::Timers;
use crate::types::slot;
use crate::viewer_leg::{LeanViewer, Shared as LeanShared};

pub use crate::entry::{CONNECT_TIMEOUT, GARBAGE_LIMIT, GARBAGE_WINDOW};
pub use crate::forwarder::{REPLAY_BURST, REPLAY_INTERVAL};
pub use crate::types::{AbsCaptureTime, Batch, Output, PeerId, SfuStats, SourcePacket, Transmit};

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
    /// Probe viewers' links with padding when their estimate sits below the next layer they
    /// are allowed (see [`crate::adapt`]). Off only to measure the difference.
    pub probing: bool,
}

impl Default for MediaOptions {
    fn default() -> Self {
        Self {
            keyframe_cache: true,
            max_viewer_backlog_bytes: DEFAULT_MAX_VIEWER_BACKLOG_BYTES,
            viewer_leg: ViewerLeg::default(),
            probing: true,
        }
    }
}

/// The answer to a publish or a watch.
#[derive(Debug)]
pub struct Answer {
    pub sdp: String,
    /// For a publish: the stream's media, which viewers (on any worker) need.
    pub media: StreamMedia,
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
    out: Outbox,
    /// When to look for streams known only from other workers' media that went idle.
    sweep_at: Option<Instant>,
    /// The certificate and DTLS configuration of lean viewers (made with the first one).
    lean: Option<std::sync::Arc<LeanShared>>,
    /// Peers due at a wake-up (kept to reuse its memory).
    due: Vec<PeerId>,
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
            out: Outbox::default(),
            sweep_at: None,
            lean: None,
            due: Vec::new(),
        }
    }

    pub fn stats(&self) -> &SfuStats {
        &self.out.stats
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
        self.streams.get(stream).map_or((0, 0), |s| {
            s.caches
                .iter()
                .fold((0, 0), |(n, b), c| (n + c.len(), b + c.bytes()))
        })
    }

    /// Entries in the demultiplexer: ufrags plus bound addresses.
    pub fn demux_entries(&self) -> usize {
        self.out.demux.ufrags() + self.out.demux.bound_addrs()
    }

    /// Reads what a broadcaster's offer would publish, without creating anything: the shell
    /// checks it before it claims the stream name.
    pub fn publisher_media(offer_sdp: &str) -> Result<StreamMedia, SfuError> {
        let offer = Offer::parse(offer_sdp)?;
        offer.simulcast_rids()?;
        offer.publisher_media()
    }

    /// The forwarder, on this worker's peers, streams and outbox.
    fn forwarder(&mut self) -> Forwarder<'_> {
        Forwarder {
            peers: &mut self.peers,
            streams: &mut self.streams,
            out: &mut self.out,
            keyframe_cache: self.options.keyframe_cache,
            share_media: self.config.share_media,
        }
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
        let offer = Offer::parse(offer_sdp)?;
        let rids = offer.simulcast_rids()?;
        let media = offer.publisher_media()?;
        let (peer, sdp) = Peer::new(
            now,
            self.config.advertised_addr,
            self.config.srtp,
            offer_sdp,
            Role::Publisher {
                media: &media,
                rids: &rids,
            },
        )?;
        let capture_ext = crate::codec::extmap_id(offer_sdp, crate::codec::ABS_CAPTURE_TIME_URI);
        let receiver = Receiver::new(media.clone(), rids.len(), capture_ext);
        self.streams
            .entry(stream.clone())
            .or_insert_with(LocalStream::new)
            .publisher = Some(id);
        self.insert(
            now,
            id,
            Leg::Rtc(Box::new(peer)),
            stream,
            PeerRole::Publisher(Box::new(receiver)),
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
        self.add_watcher(now, id, stream, media, offer_sdp, false)
    }

    /// Answers a relay's offer for `stream`: another node that pulls the stream to serve its
    /// own viewers. A relay is sent every simulcast layer at once, layer n on the n-th video
    /// section of its offer (as many layers as it offered sections for; one section is a
    /// broadcast without simulcast, or a node that takes only the lowest layer), each on a
    /// line of SSRC, sequence numbers and timestamps of its own, and never switched; so the
    /// relaying node keeps every layer apart and chooses per viewer as this one does. Its
    /// keyframe requests name the layer by the track's SSRC. A relay is always served by the
    /// lean leg (the `rtc` leg carries one video track per viewer), gets no bandwidth estimate
    /// and no layer changes.
    pub fn add_relay(
        &mut self,
        now: Instant,
        id: PeerId,
        stream: StreamName,
        media: &StreamMedia,
        offer_sdp: &str,
    ) -> Result<Answer, SfuError> {
        self.add_watcher(now, id, stream, media, offer_sdp, true)
    }

    fn add_watcher(
        &mut self,
        now: Instant,
        id: PeerId,
        stream: StreamName,
        media: &StreamMedia,
        offer_sdp: &str,
        relay: bool,
    ) -> Result<Answer, SfuError> {
        let offer = Offer::parse(offer_sdp)?;
        let codecs = offer.viewer_codecs(media)?;
        let video_rtx_pt = codecs
            .video
            .as_ref()
            .and_then(|v| offer.rtx_payload_type(MediaKind::Video, v.payload_type));
        let leg = if relay {
            ViewerLeg::Lean
        } else {
            self.options.viewer_leg
        };
        let video_tracks = if relay { MAX_LAYERS } else { 1 };
        let (peer, sdp) = match leg {
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
                    video_tracks,
                )?;
                (Leg::Lean(Box::new(viewer)), sdp)
            }
        };
        let mut tracks: [Option<DownTrack>; 2] = [None, None];
        for c in [&codecs.audio, &codecs.video].into_iter().flatten() {
            let Some(ssrc) = peer.send_ssrc()[slot(c.kind)] else {
                continue;
            };
            tracks[slot(c.kind)] = Some(DownTrack::new(
                c.kind,
                c.payload_type,
                ssrc,
                peer.rtx()[slot(c.kind)],
                c.clock_rate,
            ));
        }
        self.streams
            .entry(stream.clone())
            .or_insert_with(LocalStream::new)
            .viewers
            .push(id);
        let mut viewer = match (relay, &codecs.video) {
            (true, Some(video)) => {
                let upper = peer
                    .layer_tracks()
                    .iter()
                    .map(|&(ssrc, rtx)| {
                        DownTrack::new(
                            MediaKind::Video,
                            video.payload_type,
                            ssrc,
                            rtx,
                            video.clock_rate,
                        )
                    })
                    .collect();
                Viewer::relay(tracks, upper)
            }
            (true, None) => Viewer::relay(tracks, Vec::new()),
            (false, _) => Viewer::new(tracks),
        };
        let (twcc, remb) = peer.estimate_feedback();
        if (twcc || remb) && !relay {
            // Held to the lowest layer until its feedback shows what its link carries.
            let padding_stream = viewer.tracks[slot(MediaKind::Video)]
                .as_ref()
                .is_some_and(DownTrack::has_rtx);
            let probing = self.options.probing && twcc && padding_stream;
            viewer.bwe = Some(Box::new(ViewerBwe::new(probing)));
            viewer.layers.set_estimate(
                Allowance::Rung(Rung::full(Layer::LOWEST)),
                Default::default(),
            );
        }
        self.insert(now, id, peer, stream, PeerRole::Viewer(Box::new(viewer)));
        Ok(Answer { sdp, media: codecs })
    }

    fn insert(&mut self, now: Instant, id: PeerId, peer: Leg, stream: StreamName, role: PeerRole) {
        self.out.demux.add_ufrag(peer.ufrag().to_owned(), id);
        self.peers
            .insert(id, PeerEntry::new(now, peer, stream, role));
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
            .leg
            .add_remote_candidate(candidate, sdp_mid, sdp_mline_index)
    }

    /// Removes a peer at once (its session ended). Removing an unknown peer does nothing.
    /// A broadcaster's viewers stay, waiting for a new broadcaster of the same stream. Its
    /// entries in the timers go stale and are dropped as they come up.
    pub fn remove_peer(&mut self, id: PeerId) {
        let Some(mut entry) = self.peers.remove(&id) else {
            return;
        };
        self.out
            .demux
            .remove(entry.leg.ufrag(), entry.leg.remote_addrs(), id);
        entry.leg.close();
        while let Some((to, data)) = entry.leg.poll_transmit() {
            self.out
                .transmits
                .push_back(Transmit { to, data, peer: id });
        }
        if let Some(s) = self.streams.get_mut(&entry.stream) {
            if s.publisher == Some(id) {
                s.publisher = None;
                // Its packets must not start a viewer that joins before the next broadcaster.
                s.caches.iter_mut().for_each(KeyframeCache::clear);
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
        self.out.demux.shrink();
    }

    /// One datagram from the worker's socket.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.out.stats.datagrams_in += 1;
        let Route::Peer(id) = self.out.demux.route(from, data) else {
            self.out.stats.datagrams_unroutable += 1;
            return;
        };
        let Some(entry) = self.peers.get_mut(&id) else {
            return;
        };
        let verdict = entry.leg.handle_datagram(now, from, data);
        // Only a proven (bound) address counts against its peer: anyone can send STUN that
        // names a peer's ufrag.
        if entry.leg.remote_addrs().contains(&from) {
            let bad = verdict == DatagramVerdict::Garbage;
            if bad {
                self.out.stats.datagrams_garbage += 1;
            }
            if entry.garbage.record(now, bad) {
                tracing::info!(peer = %id, "closed: it keeps sending garbage");
                self.out.stats.peers_closed_for_garbage += 1;
                self.remove_peer(id);
                self.out.outputs.push_back(Output::Failed(id));
                return;
            }
        } else if verdict == DatagramVerdict::Garbage {
            self.out.stats.datagrams_garbage += 1;
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
        self.forwarder()
            .source_packet(now, &packet.stream, packet.kind, &packet.media(), false);
    }

    /// A keyframe request from a viewer on another worker, for one simulcast layer or (`None`)
    /// every layer. Only the worker that has the stream's broadcaster acts on it; the others
    /// ignore it (and never pass it on again).
    pub fn handle_keyframe_request(
        &mut self,
        now: Instant,
        stream: &StreamName,
        layer: Option<Layer>,
    ) {
        if self
            .streams
            .get(stream)
            .is_some_and(|s| s.publisher.is_some())
        {
            self.forwarder().request_keyframe(now, stream, layer);
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
        let Some(v) = e.role.viewer_mut() else {
            return;
        };
        if queued_bytes > max {
            v.backlog_over = true;
        } else if v.backlog_over && queued_bytes <= max / 2 {
            v.backlog_over = false;
            if v.skipping && !v.congested(now) {
                // Ask now, so the keyframe is on its way when the viewer can take it (a relay
                // restarts every layer).
                let layer = (!v.is_relay()).then(|| v.layers.target());
                let stream = e.stream.clone();
                self.forwarder().request_keyframe(now, &stream, layer);
            }
        }
    }

    /// The shell could not send a datagram for `peer` (for a shell that drops instead of
    /// queueing: `try_send_to` failed). One failure is loss, which NACKs repair; a run of
    /// [`SEND_FAILURES_BEFORE_SKIP`] within [`SEND_FAILURE_WINDOW`] makes the viewer skip for
    /// [`SEND_FAILURE_BACKOFF`] and restart at a keyframe.
    pub fn handle_send_failed(&mut self, now: Instant, peer: PeerId) {
        let Some(v) = self.peers.get_mut(&peer).and_then(|e| e.role.viewer_mut()) else {
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
        self.out.transmits.pop_front()
    }

    /// The next batch of a lean viewer's media (see [`Batch`]). The shell sends it before it
    /// polls again; what a viewer was sent since its last batch went out is one batch or a few
    /// (a run of equal sizes per GSO send). Cheap to call: media of `rtc` viewers comes through
    /// [`Sfu::poll_transmit`] instead.
    pub fn poll_batch(&mut self) -> Option<Batch<'_>> {
        loop {
            let id = *self.out.batches.front()?;
            let next = match self.peers.get_mut(&id).map(|e| &mut e.leg) {
                Some(Leg::Lean(v)) => v.next_batch(),
                _ => None,
            };
            let Some((to, range, segment_size)) = next else {
                self.out.batches.pop_front();
                continue;
            };
            let Some(Leg::Lean(v)) = self.peers.get(&id).map(|e| &e.leg) else {
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
        self.out.outputs.pop_front()
    }

    /// The next viewer that moved to another simulcast layer (drain after every input, like
    /// [`Sfu::poll_output`]): what the shell tells that viewer, with the reason. A viewer
    /// starts on [`Layer::LOWEST`]; a broadcaster without simulcast causes none.
    pub fn poll_layer_change(&mut self) -> Option<LayerChange> {
        self.out.layer_changes.pop_front()
    }

    /// A viewer's own ceiling on quality (the default is [`Preference::Auto`]). A lower layer
    /// is taken at its next keyframe, which is asked for at once; so is a higher one the
    /// preference allows (until a bandwidth estimate says otherwise).
    pub fn set_viewer_preference(
        &mut self,
        now: Instant,
        peer: PeerId,
        preference: Preference,
    ) -> Result<(), SfuError> {
        let e = self.peers.get_mut(&peer).ok_or(SfuError::UnknownPeer)?;
        let stream = e.stream.clone();
        // A broadcaster is no viewer peer.
        let v = e.role.viewer_mut().ok_or(SfuError::UnknownPeer)?;
        let layers = self
            .streams
            .get(&stream)
            .map(LocalStream::availability)
            .unwrap_or_default();
        let target = v.layers.set_preference(preference, layers);
        if let Some(target) = target
            && v.replay.is_none()
            && e.leg.is_connected()
        {
            self.forwarder()
                .request_keyframe(now, &stream, Some(target));
        }
        Ok(())
    }

    /// A viewer's bandwidth estimate, in bits per second, where it negotiated feedback (TWCC,
    /// or REMB) for one.
    pub fn viewer_estimate_bps(&self, peer: PeerId) -> Option<f64> {
        let v = self.peers.get(&peer)?.role.viewer()?;
        v.bwe.as_ref().map(|b| b.estimate_bps())
    }

    /// The simulcast layer a viewer's video is on now, and the one it is moving to (equal when
    /// no move is pending); `None` for an unknown peer or a broadcaster.
    pub fn viewer_layers(&self, peer: PeerId) -> Option<(Layer, Layer)> {
        let v = self.peers.get(&peer)?.role.viewer()?;
        Some((v.layers.current(), v.layers.target()))
    }

    /// How many simulcast layers the stream a viewer watches has sent so far (a layer above
    /// the lowest counts the ones below it; 0 before any video): what names a [`LayerChange`]'s
    /// layer for the viewer. `None` for an unknown peer or a broadcaster.
    pub fn viewer_stream_layers(&self, peer: PeerId) -> Option<usize> {
        let e = self.peers.get(&peer)?;
        e.role.viewer()?;
        Some(
            self.streams
                .get(&e.stream)
                .map_or(0, |s| s.availability().seen),
        )
    }

    /// The earliest instant [`Sfu::handle_timeout`] must be called: the top of the worker's
    /// timer heap (or the idle-stream sweep), however many peers there are.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.out.timers.next(), self.sweep_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs the timers that are due: only the peers whose own deadline has come are touched.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.sweep_at.is_some_and(|t| t <= now) {
            self.sweep_idle_streams(now);
        }
        let mut due = std::mem::take(&mut self.due);
        while let Some((id, generation)) = self.out.timers.pop_due(now) {
            self.out.stats.timer_entries_popped += 1;
            let Some(e) = self.peers.get_mut(&id) else {
                continue;
            };
            if !Timers::claim(&mut e.timer, generation) {
                continue;
            }
            if e.next_deadline().is_some_and(|d| d <= now) {
                due.push(id);
            } else {
                // Its deadline moved later since it was scheduled.
                e.reschedule(id, &mut self.out.timers);
            }
        }
        for id in due.drain(..) {
            self.out.stats.peer_timeouts += 1;
            self.forwarder().continue_replay(now, id);
            self.forwarder().update_estimate(now, id);
            self.forwarder().send_padding(now, id);
            let Some(e) = self.peers.get_mut(&id) else {
                continue;
            };
            if e.connect_expired(now) {
                tracing::info!(peer = %id, "never connected; giving up");
                self.remove_peer(id);
                self.out.outputs.push_back(Output::Failed(id));
                continue;
            }
            let due_plis = e.role.receiver_mut().map(|p| p.handle_timeout(now));
            for ssrc in due_plis.into_iter().flatten().flatten() {
                e.leg.send_pli(now, ssrc);
                self.out.stats.pli_sent += 1;
            }
            e.leg.handle_timeout(now);
            self.drain_peer(now, id);
        }
        self.due = due;
        let peers = &self.peers;
        self.out
            .timers
            .sweep_if_stale(peers.len(), |id, generation| {
                peers.get(&id).is_some_and(|e| e.timer.is_live(generation))
            });
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

    /// Drains everything a peer produced after an input, and keeps its timer in step.
    fn drain_peer(&mut self, now: Instant, id: PeerId) {
        let Some(e) = self.peers.get_mut(&id) else {
            return;
        };
        self.out.drain_transmits(id, &mut e.leg);
        let mut inbound = Vec::new();
        while let Some(i) = e.leg.poll_inbound() {
            inbound.push(i);
        }
        let mut events = Vec::new();
        while let Some(ev) = e.leg.poll_event() {
            events.push(ev);
        }
        e.deadline = e.leg.poll_timeout();
        e.reschedule(id, &mut self.out.timers);
        let stream = e.stream.clone();
        let is_publisher = e.is_publisher();

        for i in inbound {
            match i {
                Inbound::Rtp { packet, layer } if is_publisher => {
                    if let Some(a) =
                        receiver::accept_rtp(now, id, packet, layer, &mut self.peers, &mut self.out)
                    {
                        self.on_source_packet(now, a.stream, a.kind, a.media, a.ask_keyframe);
                    }
                }
                Inbound::Rtp { .. } => {}
                Inbound::KeyframeRequest { media_ssrc } => {
                    if !is_publisher {
                        self.out.stats.keyframe_requests_in += 1;
                        // The layer the viewer is on, or moving to: the next picture it shows;
                        // for a relay, the layer of the track it names.
                        let layer = self.peers.get(&id).and_then(|e| e.role.viewer()).map(|v| {
                            match media_ssrc.and_then(|s| v.relay_layer_of(s)) {
                                Some(layer) => layer,
                                None => v.layers.target(),
                            }
                        });
                        if let Some(layer) = layer {
                            self.forwarder().request_keyframe(now, &stream, Some(layer));
                        }
                    }
                }
                Inbound::Twcc(feedback) => {
                    let bwe = self
                        .peers
                        .get_mut(&id)
                        .and_then(|e| e.role.viewer_mut())
                        .and_then(|v| v.bwe.as_mut());
                    if let Some(bwe) = bwe {
                        match bwe.on_twcc(now, &feedback) {
                            Ok(()) => {
                                self.out.stats.twcc_feedback_in += 1;
                                match bwe.take_probe_result(now) {
                                    Some(ProbeEvent::Succeeded) => {
                                        self.out.stats.probes_succeeded += 1;
                                    }
                                    Some(ProbeEvent::Failed) => self.out.stats.probes_failed += 1,
                                    None => {}
                                }
                            }
                            Err(e) => {
                                tracing::debug!(peer = %id, "TWCC feedback refused: {e}");
                                self.out.stats.twcc_feedback_refused += 1;
                            }
                        }
                    }
                }
                Inbound::Remb { bitrate_bps } => {
                    let bwe = self
                        .peers
                        .get_mut(&id)
                        .and_then(|e| e.role.viewer_mut())
                        .and_then(|v| v.bwe.as_mut());
                    if let Some(bwe) = bwe {
                        bwe.on_remb(bitrate_bps);
                    }
                }
                Inbound::Nack { media_ssrc, seqs } => {
                    if !is_publisher {
                        self.forwarder().nack(now, id, media_ssrc, &seqs);
                    }
                }
            }
        }
        for ev in events {
            match ev {
                PeerEvent::Connected => {
                    tracing::debug!(peer = %id, %stream, "connected");
                    self.out.outputs.push_back(Output::Connected(id));
                    if !is_publisher {
                        self.forwarder().start_viewer(now, id);
                    }
                }
                PeerEvent::Failed => {
                    tracing::info!(peer = %id, %stream, "connection failed or closed");
                    self.remove_peer(id);
                    self.out.outputs.push_back(Output::Failed(id));
                    return;
                }
            }
        }
    }

    /// A local broadcaster's packet: shared with the other workers when asked to, then
    /// remembered and fanned out here.
    fn on_source_packet(
        &mut self,
        now: Instant,
        stream: StreamName,
        kind: MediaKind,
        media: Media,
        ask_keyframe: bool,
    ) {
        if self.config.share_media {
            self.out
                .outputs
                .push_back(Output::Media(std::sync::Arc::new(SourcePacket {
                    stream: stream.clone(),
                    epoch: media.epoch,
                    layer: media.layer,
                    kind,
                    keyframe_start: media.keyframe_start,
                    seq: media.seq,
                    timestamp: media.timestamp,
                    marker: media.marker,
                    payload: media.payload.clone(),
                    capture_time: media.capture_time,
                    vp8: media.vp8,
                })));
        }
        let mut f = self.forwarder();
        f.source_packet(now, &stream, kind, &media, true);
        if ask_keyframe {
            f.request_keyframe(now, &stream, Some(media.layer));
        }
    }
}
