//! A simulated network for driving the sans-IO SFU core with in-process WebRTC clients: the
//! in-memory I/O loop around `golive-client`'s sans-IO [`ClientPeer`].
//!
//! Every client is a full (not lite) `rtc` peer connection that makes the offer, with its own
//! made-up address `127.0.0.1:<port>`; no socket is ever opened. The test loop advances a
//! simulated clock by a fixed step and, at each step, fires whichever deadlines are due
//! (every client's, publishers' media among them, then the SFU's), and moves every datagram
//! between the SFU and the clients in memory, with no latency and no loss, until nobody has
//! anything left to send.
//!
//! Each client's link can be made lossy (per direction, SRTP only: the handshake is left alone),
//! delayed, or stalled (the "shell" then queues what the SFU sends that client, bounded, and
//! reports the backlog to the SFU as a real shell would); see [`Link`].
//!
//! Publishers send golive-client's synthetic VP8 (RFC 7741 descriptor and frame tag) and Opus;
//! every payload carries a stamp (its source and number) and filler made from the stamp, so a
//! viewer checks each packet it receives byte for byte without anyone keeping the bytes.
#![allow(dead_code)]

pub mod raw;

use bytes::{Bytes, BytesMut};
use golive_client::{
    ClientPeer, Clock, Feedback, MediaPlan, Numbering, PayloadTypes, PeerConfig, PeerEvent,
    Role as PeerRole, SIMULCAST_RIDS, Simulcast, SyntheticSource,
};
use golive_proto::StreamName;
use golive_sfu::{
    LayerChange, MediaOptions, Output, PeerId, Sfu, SfuConfig, SrtpPolicy, StreamMedia, ViewerLeg,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::peer_connection::state::RTCPeerConnectionState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use golive_client::MediaKind as Kind;
/// A packet a publisher sent (its payload dropped: the stamp identifies it).
pub type Sent = golive_client::SyntheticPacket;
/// A packet a viewer received.
pub type Received = golive_client::ReceivedPacket;

pub const SFU_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);
/// The simulated clock's tick.
pub const STEP: Duration = Duration::from_millis(1);

pub const VIDEO_CLOCK: u32 = golive_client::media::VIDEO_CLOCK_RATE;
pub const AUDIO_CLOCK: u32 = golive_client::media::AUDIO_CLOCK_RATE;
/// The publisher's payload types, and the (different) ones every viewer offers: the SFU must
/// rewrite them.
pub const PUB_VP8_PT: u8 = 96;
pub const PUB_OPUS_PT: u8 = 111;
pub const VIEWER_VP8_PT: u8 = 120;
pub const VIEWER_OPUS_PT: u8 = 109;
/// The RTX payload type of a viewer that offers RTX.
pub const VIEWER_RTX_PT: u8 = 121;

pub const VIDEO_FPS: u32 = 30;
/// A keyframe is this many packets; a delta frame one.
pub const KEYFRAME_PACKETS: usize = 3;
const VIDEO_PACKET_BYTES: usize = 900;
const AUDIO_PACKET_BYTES: usize = 120;
/// How often a viewer client NACKs one lost packet (browsers go on for longer).
const VIEWER_MAX_NACKS: u16 = 10;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A publisher's media: 30 fps of 900-byte packets (a keyframe three of them, a delta frame
/// one), 20 ms Opus packets of 120 bytes.
fn media_plan(gop_frames: u64) -> MediaPlan {
    MediaPlan {
        video_fps: VIDEO_FPS,
        gop_frames,
        keyframe_bytes: KEYFRAME_PACKETS * VIDEO_PACKET_BYTES,
        delta_frame_bytes: VIDEO_PACKET_BYTES,
        max_payload_bytes: VIDEO_PACKET_BYTES,
        audio_payload_bytes: AUDIO_PACKET_BYTES,
        temporal_layers: 1,
    }
}

/// A viewer NACKs what it lost, as a browser does; a publisher answers the SFU's NACKs.
fn peer_config(publisher: bool) -> PeerConfig {
    let (vp8, opus) = if publisher {
        (PUB_VP8_PT, PUB_OPUS_PT)
    } else {
        (VIEWER_VP8_PT, VIEWER_OPUS_PT)
    };
    PeerConfig {
        payload_types: PayloadTypes {
            vp8,
            opus,
            ..PayloadTypes::default()
        },
        feedback: Feedback::Nack {
            max_nacks_per_packet: VIEWER_MAX_NACKS,
        },
        report_sent: publisher,
        ..PeerConfig::default()
    }
}

pub struct Client {
    pub id: PeerId,
    pub stream: StreamName,
    pub addr: SocketAddr,
    /// The ICE ufrag the SFU chose for this peer (from its answer).
    pub sfu_ufrag: String,
    pub peer: ClientPeer,
    pub connected_at: Option<Instant>,
    pub failed: bool,
    pub deadline: Option<Instant>,
    pub received: Vec<Received>,
    /// The video section each packet of `received` came on (0 for audio): a relay's layer.
    pub received_sections: Vec<usize>,
    /// What a publisher sent.
    pub sent: Vec<Sent>,
    pub write_errors: u64,
    /// Instants the client received a PLI or FIR (publishers care).
    pub plis: Vec<Instant>,
    pub read_errors: u64,
    /// SRTCP datagrams that reached the client (by their plaintext header), decryptable or not.
    pub rtcp_datagrams: u64,
    /// Every header extension (kind, id, data) the client's RTP carried, once each.
    pub extensions_seen: std::collections::HashSet<(Kind, u8, Vec<u8>)>,
    /// RTP packets of each kind with no header extension at all: (audio, video).
    pub without_extensions: (u64, u64),
    /// What a simulcast publisher sent of each layer's video (see
    /// [`Sim::add_simulcast_publisher`]); its layers are `peer.simulcast()`.
    pub layer_sent: Vec<Vec<Sent>>,
}

/// Video payload bytes per packet of each layer of the harness's simulcast publisher: a
/// keyframe is [`KEYFRAME_PACKETS`] of them, a delta frame one.
pub const SIMULCAST_PACKET_BYTES: [usize; 3] = [200, 500, 1000];

impl Client {
    pub fn is_publisher(&self) -> bool {
        self.peer.is_publisher()
    }

    pub fn received_of(&self, kind: Kind) -> Vec<&Received> {
        self.received.iter().filter(|r| r.kind == kind).collect()
    }

    pub fn sent_of(&self, kind: Kind) -> Vec<&Sent> {
        self.sent.iter().filter(|s| s.kind == kind).collect()
    }

    /// A publisher's media source.
    pub fn source_mut(&mut self) -> &mut SyntheticSource {
        let id = self.id;
        self.peer
            .source_mut()
            .unwrap_or_else(|| panic!("{id} is not a publisher"))
    }

    pub fn video_ssrc(&self) -> u32 {
        self.peer.ssrcs().expect("a publisher").0
    }

    fn read(&mut self, now: Instant, data: BytesMut) {
        if data.len() >= 2 && (128..192).contains(&data[0]) && (200..=206).contains(&data[1]) {
            self.rtcp_datagrams += 1;
        }
        if self.peer.handle_datagram(now, SFU_ADDR, data).is_err() {
            self.read_errors += 1;
        }
    }

    /// Drains everything the client produced after an input.
    fn drain(&mut self, now: Instant, out: &mut VecDeque<(SocketAddr, BytesMut)>) {
        while let Some(t) = self.peer.poll_transmit() {
            if t.to == SFU_ADDR {
                out.push_back((self.addr, t.data));
            }
        }
        while let Some(ev) = self.peer.poll_event() {
            match ev {
                PeerEvent::State(RTCPeerConnectionState::Connected)
                    if self.connected_at.is_none() =>
                {
                    self.connected_at = Some(now);
                }
                PeerEvent::State(
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                ) => {
                    self.failed = true;
                }
                PeerEvent::Rtp {
                    kind,
                    packet,
                    section,
                    ..
                } => {
                    for e in &packet.header.extensions {
                        if e.id != 0 && self.extensions_seen.len() < 4096 {
                            self.extensions_seen
                                .insert((kind, e.id, e.payload.to_vec()));
                        }
                    }
                    if packet.header.extensions.is_empty() {
                        match kind {
                            Kind::Audio => self.without_extensions.0 += 1,
                            Kind::Video => self.without_extensions.1 += 1,
                        }
                    }
                    self.received.push(Received::inspect(kind, now, &packet));
                    self.received_sections.push(section);
                }
                PeerEvent::KeyframeRequest { .. } => self.plis.push(now),
                PeerEvent::Sent(mut sent) => {
                    sent.payload = Bytes::new();
                    let layer = self
                        .peer
                        .simulcast()
                        .filter(|_| sent.kind == Kind::Video)
                        .and_then(|sc| sc.layer_of_source(sent.stamp.source_id));
                    match layer {
                        Some(l) => self.layer_sent[l].push(sent),
                        None => self.sent.push(sent),
                    }
                }
                PeerEvent::SendFailed { .. } => self.write_errors += 1,
                // Counted per layer in the layer's stats.
                PeerEvent::State(_) | PeerEvent::LayerKeyframeRequest { .. } => {}
            }
        }
        self.deadline = self.peer.poll_timeout();
    }
}

/// One client's link to the SFU.
#[derive(Debug, Clone, Default)]
pub struct Link {
    /// Probability that an SRTP/SRTCP datagram to the client is lost.
    pub down_loss: f64,
    /// Probability that an SRTP/SRTCP datagram from the client is lost.
    pub up_loss: f64,
    /// One-way delay, each direction.
    pub delay: Duration,
    /// The client reads nothing: the shell queues what the SFU sends it (up to
    /// [`STALL_QUEUE_BYTES`], dropping the rest) and reports the backlog to the SFU.
    pub stalled: bool,
    /// The link toward the client carries this many bits per second at most: what exceeds it
    /// waits in a queue (its delay grows, as a bottleneck router's does), and what would wait
    /// longer than [`RATE_QUEUE_LIMIT`] is dropped.
    pub down_rate_bps: Option<u64>,
    /// With `down_rate_bps`: the depth of the link's token bucket in bytes, as `tc tbf`'s
    /// `burst`: after a quiet spell this much passes at once, above the rate.
    pub down_burst_bytes: u64,
}

/// The longest a rate-limited link queues a datagram before it drops it.
pub const RATE_QUEUE_LIMIT: Duration = Duration::from_millis(300);

/// What the simulated shell queues for one stalled client at most.
pub const STALL_QUEUE_BYTES: usize = 4 * 1024 * 1024;

fn is_srtp(data: &[u8]) -> bool {
    data.first().is_some_and(|b| (128..192).contains(b))
}

/// A datagram on its way: to the SFU (from a client's address) or to a client.
#[derive(Debug)]
enum Flight {
    ToSfu(SocketAddr, BytesMut),
    ToClient(usize, BytesMut),
}

/// The world: one SFU, its clients, the clock and the wire between them.
pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    index: HashMap<PeerId, usize>,
    by_addr: HashMap<SocketAddr, usize>,
    next_port: u16,
    next_tag: u32,
    pub media: HashMap<StreamName, StreamMedia>,
    /// The clock publishers stamp their packets with.
    clock: Clock,
    to_sfu: VecDeque<(SocketAddr, BytesMut)>,
    /// (when, who) of every Output::Connected / Output::Failed.
    pub sfu_connected: HashMap<PeerId, Instant>,
    pub sfu_failed: Vec<(Instant, PeerId)>,
    /// SRTCP datagrams (by their plaintext header) clients sent to the SFU.
    pub rtcp_to_sfu: u64,
    /// Datagrams the SFU sent to an address no client has.
    pub transmits_to_nowhere: u64,
    /// ...kept here by destination, for the hand-driven viewers of [`raw`].
    stray: HashMap<SocketAddr, Vec<BytesMut>>,
    /// Datagrams the SFU sent, by destination client, after `remove` (tests look at these).
    pub removed: HashMap<PeerId, Instant>,
    /// Links that are not perfect, by client.
    pub links: HashMap<PeerId, Link>,
    /// Datagrams in flight on delayed links, by arrival time.
    in_flight: BTreeMap<(Instant, u64), Flight>,
    flight_seq: u64,
    /// What the shell holds for stalled clients, and how much it dropped.
    stalled_queue: HashMap<usize, (VecDeque<BytesMut>, usize)>,
    pub stall_dropped: u64,
    /// Datagrams the links lost, per direction.
    pub lost_down: u64,
    pub lost_up: u64,
    /// When each rate-limited link toward a client is free again.
    link_busy_until: HashMap<usize, Instant>,
    /// Every layer change the SFU reported, with when.
    pub layer_changes: Vec<(Instant, LayerChange)>,
    rng: StdRng,
}

pub fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("valid stream name")
}

impl Sim {
    pub fn new() -> Self {
        Self::with_options(MediaOptions::default())
    }

    pub fn with_options(mut options: MediaOptions) -> Self {
        // The whole suite runs on either viewer leg: GOLIVE_VIEWER_LEG=lean|rtc.
        if let Ok(leg) = std::env::var("GOLIVE_VIEWER_LEG") {
            options.viewer_leg = leg.parse().expect("GOLIVE_VIEWER_LEG is rtc or lean");
        }
        Self::with_exact_options(options)
    }

    /// Viewers on the lean leg, whatever GOLIVE_VIEWER_LEG says (tests of that leg itself).
    pub fn lean() -> Self {
        Self::with_exact_options(MediaOptions {
            viewer_leg: ViewerLeg::Lean,
            ..MediaOptions::default()
        })
    }

    /// Viewers on the lean leg, with bandwidth probing on or off.
    pub fn lean_probing(probing: bool) -> Self {
        Self::with_exact_options(MediaOptions {
            viewer_leg: ViewerLeg::Lean,
            probing,
            ..MediaOptions::default()
        })
    }

    fn with_exact_options(options: MediaOptions) -> Self {
        Self::with_srtp(options, SrtpPolicy::default())
    }

    /// Lean viewers, and an SFU that also accepts AES-CM SRTP (older clients).
    pub fn lean_with_legacy_srtp() -> Self {
        Self::with_srtp(
            MediaOptions {
                viewer_leg: ViewerLeg::Lean,
                ..MediaOptions::default()
            },
            SrtpPolicy {
                allow_legacy_cm: true,
            },
        )
    }

    fn with_srtp(options: MediaOptions, srtp: SrtpPolicy) -> Self {
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            sfu: Sfu::with_options(
                SfuConfig {
                    advertised_addr: SFU_ADDR,
                    srtp,
                    share_media: false,
                },
                options,
            ),
            clients: Vec::new(),
            index: HashMap::new(),
            by_addr: HashMap::new(),
            next_port: 10_000,
            next_tag: 1,
            media: HashMap::new(),
            clock: Clock::new(t0, 0),
            to_sfu: VecDeque::new(),
            sfu_connected: HashMap::new(),
            sfu_failed: Vec::new(),
            rtcp_to_sfu: 0,
            transmits_to_nowhere: 0,
            stray: HashMap::new(),
            removed: HashMap::new(),
            links: HashMap::new(),
            in_flight: BTreeMap::new(),
            flight_seq: 0,
            stalled_queue: HashMap::new(),
            stall_dropped: 0,
            lost_down: 0,
            lost_up: 0,
            link_busy_until: HashMap::new(),
            layer_changes: Vec::new(),
            rng: StdRng::seed_from_u64(0x5eed),
        }
    }

    pub fn set_link(&mut self, id: PeerId, link: Link) {
        let was_stalled = self.links.get(&id).is_some_and(|l| l.stalled);
        let i = self.index[&id];
        if was_stalled && !link.stalled {
            // The client reads again: the shell's queue drains to it.
            if let Some((q, _)) = self.stalled_queue.remove(&i) {
                let now = self.now;
                for data in q {
                    self.clients[i].read(now, data);
                }
                self.drain_client(i);
            }
            self.sfu.handle_send_backlog(self.now, id, 0);
        }
        self.links.insert(id, link);
        self.pump();
    }

    /// Forgets a client entirely (after `remove`), as a departed browser is gone.
    pub fn drop_client(&mut self, id: PeerId) {
        let Some(i) = self.index.remove(&id) else {
            return;
        };
        let addr = self.clients[i].addr;
        self.by_addr.remove(&addr);
        self.links.remove(&id);
        self.sfu_connected.remove(&id);
        self.removed.remove(&id);
        self.sfu_failed.retain(|(_, f)| *f != id);
        self.stalled_queue.remove(&i);
        // Keep indices stable: swap in an inert placeholder is not possible for an rtc pc, so
        // move the last client into the hole and fix its index.
        let last = self.clients.len() - 1;
        self.clients.swap_remove(i);
        if i != last {
            let moved = &self.clients[i];
            self.index.insert(moved.id, i);
            self.by_addr.insert(moved.addr, i);
            if let Some(q) = self.stalled_queue.remove(&last) {
                self.stalled_queue.insert(i, q);
            }
        }
        let stale: Vec<(Instant, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| matches!(f, Flight::ToClient(c, _) if *c == i || *c == last))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(Flight::ToClient(c, d)) = self.in_flight.remove(&k)
                && c == last
                && i != last
            {
                self.in_flight.insert(k, Flight::ToClient(i, d));
            }
        }
    }

    /// Forgets every sent and received record (long runs that check nothing).
    pub fn forget_history(&mut self) {
        self.index.shrink_to_fit();
        self.by_addr.shrink_to_fit();
        self.sfu_connected.shrink_to_fit();
        self.removed.shrink_to_fit();
        self.clients.shrink_to_fit();
        self.to_sfu.shrink_to_fit();
        self.sfu_failed.shrink_to_fit();
        for c in &mut self.clients {
            c.received = Vec::new();
            c.sent = Vec::new();
        }
    }

    /// A datagram from client `i` onto the wire towards the SFU.
    fn send_up(&mut self, i: usize, from: SocketAddr, data: BytesMut) {
        let link = self
            .links
            .get(&self.clients[i].id)
            .cloned()
            .unwrap_or_default();
        if is_srtp(&data) && link.up_loss > 0.0 && self.rng.random_bool(link.up_loss) {
            self.lost_up += 1;
            return;
        }
        if link.delay > Duration::ZERO {
            self.flight_seq += 1;
            self.in_flight.insert(
                (self.now + link.delay, self.flight_seq),
                Flight::ToSfu(from, data),
            );
        } else {
            self.deliver_to_sfu(from, data);
        }
    }

    fn deliver_to_sfu(&mut self, from: SocketAddr, data: BytesMut) {
        if data.len() >= 2 && (128..192).contains(&data[0]) && (200..=206).contains(&data[1]) {
            self.rtcp_to_sfu += 1;
        }
        self.sfu.handle_datagram(self.now, from, &data);
    }

    /// A datagram from the SFU onto the wire towards client `i`.
    fn send_down(&mut self, i: usize, peer: PeerId, data: BytesMut) {
        let link = self
            .links
            .get(&self.clients[i].id)
            .cloned()
            .unwrap_or_default();
        if link.stalled {
            let q = self.stalled_queue.entry(i).or_default();
            if q.1 + data.len() > STALL_QUEUE_BYTES {
                self.stall_dropped += 1;
            } else {
                q.1 += data.len();
                q.0.push_back(data);
            }
            let backlog = q.1;
            self.sfu.handle_send_backlog(self.now, peer, backlog);
            return;
        }
        if is_srtp(&data) && link.down_loss > 0.0 && self.rng.random_bool(link.down_loss) {
            self.lost_down += 1;
            return;
        }
        let mut delay = link.delay;
        if let Some(rate) = link.down_rate_bps.filter(|_| is_srtp(&data)) {
            // A token bucket: `link_busy_until` is when the link would be free with an empty
            // bucket; a full one lets `burst` of that time pass at once.
            let burst = Duration::from_secs_f64(link.down_burst_bytes as f64 * 8.0 / rate as f64);
            let free = self
                .link_busy_until
                .get(&i)
                .copied()
                .unwrap_or(self.now)
                .max(self.now);
            let serialize = Duration::from_secs_f64(data.len() as f64 * 8.0 / rate as f64);
            if (free - self.now).saturating_sub(burst) > RATE_QUEUE_LIMIT {
                self.lost_down += 1;
                return;
            }
            self.link_busy_until.insert(i, free + serialize);
            delay += (free + serialize - self.now).saturating_sub(burst);
        }
        if delay > Duration::ZERO {
            self.flight_seq += 1;
            self.in_flight.insert(
                (self.now + delay, self.flight_seq),
                Flight::ToClient(i, data),
            );
        } else {
            let now = self.now;
            self.clients[i].read(now, data);
            self.drain_client(i);
        }
    }

    /// Delivers what is due on delayed links.
    fn land(&mut self) {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            match entry.remove() {
                Flight::ToSfu(from, data) => self.deliver_to_sfu(from, data),
                Flight::ToClient(i, data) => {
                    let now = self.now;
                    self.clients[i].read(now, data);
                    self.drain_client(i);
                }
            }
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    pub fn client(&self, id: PeerId) -> &Client {
        &self.clients[self.index[&id]]
    }

    pub fn client_mut(&mut self, id: PeerId) -> &mut Client {
        let i = self.index[&id];
        &mut self.clients[i]
    }

    fn next_addr(&mut self) -> SocketAddr {
        let port = self.next_port;
        self.next_port = self.next_port.checked_add(1).expect("out of ports");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn register(&mut self, client: Client) {
        let i = self.clients.len();
        self.index.insert(client.id, i);
        self.by_addr.insert(client.addr, i);
        self.clients.push(client);
        self.drain_client(i);
    }

    fn drain_client(&mut self, i: usize) {
        let now = self.now;
        self.clients[i].drain(now, &mut self.to_sfu);
    }

    /// A publisher client of `stream`: offers, is answered by the SFU, and starts sending as
    /// soon as it is connected. Keyframes every `gop_frames` frames and on PLI.
    pub fn add_publisher(&mut self, id: PeerId, name: &str, gop_frames: u64) -> PeerId {
        self.add_publisher_with_plan(id, name, media_plan(gop_frames))
    }

    /// [`Sim::add_publisher`] with its own media plan (sizes, rate, keyframes).
    pub fn add_publisher_with_plan(&mut self, id: PeerId, name: &str, plan: MediaPlan) -> PeerId {
        let now = self.now;
        let addr = self.next_addr();
        let tag = self.next_tag;
        self.next_tag += 1;
        let numbering = Numbering {
            video_seq: 40_000 + tag as u16 * 1000, // crosses 65535 in a long run
            audio_seq: 7,
            video_ts: 0,
            audio_ts: 0,
        };
        let source = SyntheticSource::with_numbering(tag, plan, self.clock, numbering);
        let peer = publisher_peer(now, addr, tag, source);
        let client = self.answer_publisher(id, name, peer);
        self.register(client);
        self.pump();
        id
    }

    /// Publishes `peer`'s offer to the SFU as `id` on `name` and applies the answer.
    fn answer_publisher(&mut self, id: PeerId, name: &str, mut peer: ClientPeer) -> Client {
        let now = self.now;
        let offer = peer.offer_sdp().to_owned();
        let answer = self
            .sfu
            .add_publisher(now, id, stream(name), &offer)
            .unwrap_or_else(|e| panic!("add_publisher: {e}\n{offer}"));
        self.media.insert(stream(name), answer.media.clone());
        peer.accept_answer(now, &answer.sdp)
            .unwrap_or_else(|e| panic!("set answer: {e}\n{}", answer.sdp));
        new_client(id, stream(name), peer.local_addr(), &answer.sdp, peer)
    }

    /// A simulcast publisher of `stream` (golive-client's [`Simulcast`]): three layers with
    /// rids q, h, f, each its own SSRC, sequence numbers, timestamps and stamped payloads
    /// ([`SIMULCAST_PACKET_BYTES`] per packet), keyframes every `gop_frames` frames and when a
    /// keyframe request names the layer's SSRC. Sends once connected.
    pub fn add_simulcast_publisher(&mut self, id: PeerId, name: &str, gop_frames: u64) -> PeerId {
        self.add_temporal_simulcast_publisher(id, name, gop_frames, 1)
    }

    /// [`Sim::add_simulcast_publisher`] whose layers each carry `temporal_layers` VP8 temporal
    /// layers (2: L1T2, 3: L1T3; see golive-client's `MediaPlan::temporal_layers`).
    pub fn add_temporal_simulcast_publisher(
        &mut self,
        id: PeerId,
        name: &str,
        gop_frames: u64,
        temporal_layers: u8,
    ) -> PeerId {
        let now = self.now;
        let addr = self.next_addr();
        let tag = self.next_tag;
        self.next_tag += 4;
        let source = SyntheticSource::new(tag, media_plan(gop_frames), self.clock);
        let mut peer = publisher_peer(now, addr, tag, source);
        let plans = SIMULCAST_PACKET_BYTES.map(|bytes| {
            MediaPlan {
                keyframe_bytes: KEYFRAME_PACKETS * bytes,
                delta_frame_bytes: bytes,
                max_payload_bytes: bytes,
                ..media_plan(gop_frames)
            }
            .with_temporal_layers(temporal_layers)
        });
        let layers = Simulcast::with_plans(plans, self.clock, 0x3000_0000 + tag * 4, tag + 1);
        peer.set_simulcast(layers).expect("a simulcast offer");
        let mut client = self.answer_publisher(id, name, peer);
        client.layer_sent = vec![Vec::new(); SIMULCAST_RIDS.len()];
        self.register(client);
        self.pump();
        id
    }

    /// How many keyframe requests named each layer of simulcast publisher `id`, lowest first.
    pub fn layer_keyframe_requests(&self, id: PeerId) -> Vec<u64> {
        let sc = self
            .client(id)
            .peer
            .simulcast()
            .expect("a simulcast publisher");
        sc.layers()
            .iter()
            .map(|l| l.stats.keyframe_requests)
            .collect()
    }

    /// Stops or resumes one layer of a simulcast publisher, as a browser does: it resumes where
    /// its sequence numbers stopped, with a keyframe.
    pub fn set_layer_sending(&mut self, id: PeerId, layer: usize, on: bool) {
        let i = self.index[&id];
        let sc = self.clients[i]
            .peer
            .simulcast_mut()
            .expect("a simulcast publisher");
        assert!(sc.set_layer_sending(layer, on), "no layer {layer}");
        self.drain_client(i);
    }

    /// The offer a viewer client would make (for tests that mutate it).
    pub fn viewer_offer(&mut self) -> String {
        let addr = self.next_addr();
        let peer = ClientPeer::new(self.now, addr, &peer_config(false), PeerRole::Viewer)
            .expect("viewer peer");
        peer.offer_sdp().to_owned()
    }

    /// A viewer client of `stream` (whose publisher must have been added).
    pub fn add_viewer(&mut self, id: PeerId, name: &str) -> PeerId {
        self.add_viewer_with(id, name, peer_config(false))
    }

    /// A viewer with a browser's feedback: NACK, RTCP reports and transport-wide congestion
    /// control (it offers the `transport-cc` extension and sends TWCC feedback).
    pub fn add_browser_viewer(&mut self, id: PeerId, name: &str) -> PeerId {
        let config = PeerConfig {
            feedback: Feedback::Browser,
            ..peer_config(false)
        };
        self.add_viewer_with(id, name, config)
    }

    /// A browser viewer (see [`Sim::add_browser_viewer`]) that also offers RTX for its video,
    /// as Chromium does: repairs and probe padding come on its RTX stream.
    pub fn add_browser_viewer_with_rtx(&mut self, id: PeerId, name: &str) -> PeerId {
        let config = PeerConfig {
            feedback: Feedback::Browser,
            video_rtx_pt: Some(VIEWER_RTX_PT),
            ..peer_config(false)
        };
        self.add_viewer_with(id, name, config)
    }

    /// A browser viewer (see [`Sim::add_browser_viewer`]) whose offer the SFU gets through
    /// `edit` (header extensions added or taken away); the client keeps its own.
    pub fn add_browser_viewer_with_offer(
        &mut self,
        id: PeerId,
        name: &str,
        edit: impl FnOnce(&str) -> String,
    ) -> (PeerId, String) {
        let config = PeerConfig {
            feedback: Feedback::Browser,
            ..peer_config(false)
        };
        self.add_viewer_edited(id, name, config, edit)
    }

    /// A browser viewer (see [`Sim::add_browser_viewer`]) that offers only AES-CM SRTP, and RTX
    /// as browsers do.
    pub fn add_legacy_browser_viewer(&mut self, id: PeerId, name: &str) -> PeerId {
        let config = PeerConfig {
            feedback: Feedback::Browser,
            srtp: Some(golive_client::peer::SrtpOffer::Cm),
            video_rtx_pt: Some(VIEWER_RTX_PT),
            ..peer_config(false)
        };
        self.add_viewer_with(id, name, config)
    }

    fn add_viewer_with(&mut self, id: PeerId, name: &str, config: PeerConfig) -> PeerId {
        self.add_viewer_edited(id, name, config, str::to_owned).0
    }

    /// A viewer whose offer reaches the SFU through `edit`; returns it and the SFU's answer.
    fn add_viewer_edited(
        &mut self,
        id: PeerId,
        name: &str,
        config: PeerConfig,
        edit: impl FnOnce(&str) -> String,
    ) -> (PeerId, String) {
        let now = self.now;
        let addr = self.next_addr();
        let peer = ClientPeer::new(now, addr, &config, PeerRole::Viewer).expect("viewer peer");
        let offer = edit(peer.offer_sdp());
        let sdp = self.answer_watcher(id, name, addr, peer, &offer, false);
        (id, sdp)
    }

    /// Answers a viewer's or a relay's `offer` from `peer` at `addr` on stream `name`, applies
    /// the answer and registers the client; returns the answer.
    fn answer_watcher(
        &mut self,
        id: PeerId,
        name: &str,
        addr: SocketAddr,
        mut peer: ClientPeer,
        offer: &str,
        relay: bool,
    ) -> String {
        let now = self.now;
        let media = self
            .media
            .get(&stream(name))
            .expect("stream has a publisher")
            .clone();
        let answer = if relay {
            self.sfu.add_relay(now, id, stream(name), &media, offer)
        } else {
            self.sfu.add_viewer(now, id, stream(name), &media, offer)
        }
        .unwrap_or_else(|e| panic!("answering {id}: {e}\n{offer}"));
        peer.accept_answer(now, &answer.sdp)
            .unwrap_or_else(|e| panic!("set answer: {e}\n{}", answer.sdp));
        self.register(new_client(id, stream(name), addr, &answer.sdp, peer));
        self.pump();
        answer.sdp
    }

    /// A relay of `stream` (another node pulling it): a receive-only client with one video
    /// section per simulcast layer, answered by [`golive_sfu::Sfu::add_relay`].
    pub fn add_relay(&mut self, id: PeerId, name: &str, video_sections: usize) -> PeerId {
        let now = self.now;
        let addr = self.next_addr();
        let config = PeerConfig {
            feedback: Feedback::Browser,
            ..peer_config(false)
        };
        let peer = ClientPeer::new(now, addr, &config, PeerRole::Relay { video_sections })
            .expect("relay peer");
        let offer = peer.offer_sdp().to_owned();
        self.answer_watcher(id, name, addr, peer, &offer, true);
        id
    }

    /// `relay` asks for a keyframe of the video on its section `section` (a PLI naming that
    /// section's SSRC); false if that section has no video yet.
    pub fn send_pli_for(&mut self, relay: PeerId, section: usize) -> bool {
        let i = self.index[&relay];
        let now = self.now;
        let sent = self.clients[i].peer.send_pli_for(now, section).is_ok();
        self.drain_client(i);
        self.pump();
        sent
    }

    /// Removes a peer from the SFU; its client lives on (and keeps talking to the SFU), so a
    /// test can see that nothing more reaches it.
    pub fn remove(&mut self, id: PeerId) {
        self.sfu.remove_peer(id);
        self.removed.insert(id, self.now);
        self.pump();
    }

    /// `viewer` asks for a keyframe (a PLI through its rtc receiver); false if it has no video
    /// yet.
    pub fn send_pli(&mut self, viewer: PeerId) -> bool {
        let i = self.index[&viewer];
        let now = self.now;
        let sent = self.clients[i].peer.send_pli(now).is_ok();
        self.drain_client(i);
        self.pump();
        sent
    }

    /// Sends one RTP packet from client `id` through its own SRTP, bypassing the sender's
    /// checks (any payload type, SSRC, extensions, payload), as a hostile or broken peer would.
    pub fn send_rtp_raw(&mut self, id: PeerId, packet: rtc::rtp::Packet) {
        let i = self.index[&id];
        let now = self.now;
        let _ = self.clients[i].peer.send_raw_rtp(now, packet);
        self.drain_client(i);
        self.pump();
    }

    /// A datagram from anywhere, straight into the SFU.
    pub fn inject(&mut self, from: SocketAddr, data: &[u8]) {
        self.sfu.handle_datagram(self.now, from, data);
        self.pump();
    }

    /// Moves datagrams until nobody has anything left to send.
    pub fn pump(&mut self) {
        let now = self.now;
        loop {
            let mut moved = false;
            while let Some((from, data)) = self.to_sfu.pop_front() {
                moved = true;
                match self.by_addr.get(&from) {
                    Some(&i) => self.send_up(i, from, data),
                    None => self.deliver_to_sfu(from, data),
                }
            }
            while let Some(t) = self.sfu.poll_transmit() {
                moved = true;
                match self.by_addr.get(&t.to) {
                    Some(&i) => self.send_down(i, t.peer, t.data),
                    None => self.send_nowhere(t.to, t.data),
                }
            }
            // Lean viewers' media comes in batches (one GSO send each): split as the kernel would.
            let mut batched = Vec::new();
            while let Some(b) = self.sfu.poll_batch() {
                for d in b.data.chunks(b.segment_size) {
                    batched.push((b.to, b.peer, BytesMut::from(d)));
                }
            }
            for (to, peer, data) in batched {
                moved = true;
                match self.by_addr.get(&to) {
                    Some(&i) => self.send_down(i, peer, data),
                    None => self.send_nowhere(to, data),
                }
            }
            while let Some(o) = self.sfu.poll_output() {
                moved = true;
                match o {
                    Output::Connected(id) => {
                        self.sfu_connected.entry(id).or_insert(now);
                    }
                    Output::Failed(id) => self.sfu_failed.push((now, id)),
                    _ => {}
                }
            }
            while let Some(c) = self.sfu.poll_layer_change() {
                self.layer_changes.push((now, c));
            }
            if !moved {
                break;
            }
        }
    }

    fn send_nowhere(&mut self, to: SocketAddr, data: BytesMut) {
        self.transmits_to_nowhere += 1;
        if let Some(q) = self.stray.get_mut(&to) {
            q.push(data);
        }
    }

    /// Keeps what the SFU sends to `addr` (no client's) from now on, for [`Sim::take_stray`].
    pub fn catch_stray(&mut self, addr: SocketAddr) {
        self.stray.entry(addr).or_default();
    }

    /// What the SFU sent to `addr` since the last call (nothing unless [`Sim::catch_stray`]).
    pub fn take_stray(&mut self, addr: SocketAddr) -> Vec<BytesMut> {
        self.stray
            .get_mut(&addr)
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Stops keeping what the SFU sends to `addr`.
    pub fn forget_stray(&mut self, addr: SocketAddr) {
        self.stray.remove(&addr);
    }

    /// One tick of the clock: what is in flight lands, then every due client's timers (its
    /// media among them) and the SFU's fire.
    pub fn step(&mut self) {
        self.step_by(STEP);
    }

    /// One tick of `d` (coarser than [`STEP`] to cross long timeouts quickly).
    pub fn step_by(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        self.land();
        for i in 0..self.clients.len() {
            if self.clients[i].deadline.is_some_and(|t| t <= now) {
                let _ = self.clients[i].peer.handle_timeout(now);
                self.drain_client(i);
            }
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        self.pump();
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until the SFU reported every one of `ids` connected; panics after `limit`.
    /// Publishers among `ids` that have not sent yet hold their media until all are connected,
    /// so peers that connect together see the stream from its first packet whichever ICE
    /// timing each leg has (the simulated clients nominate on their 200 ms check tick).
    pub fn run_until_connected(&mut self, ids: &[PeerId], limit: Duration) {
        let end = self.now + limit;
        let held: Vec<PeerId> = ids
            .iter()
            .copied()
            .filter(|id| {
                let c = self.client(*id);
                c.sent.is_empty() && c.peer.source().is_some_and(|s| s.is_sending())
            })
            .collect();
        for id in &held {
            self.set_sending(*id, false);
        }
        while !ids.iter().all(|id| self.sfu_connected.contains_key(id)) {
            assert!(
                self.now < end,
                "{} of {} peers not connected after {limit:?}; failed: {:?}",
                ids.iter()
                    .filter(|id| !self.sfu_connected.contains_key(id))
                    .count(),
                ids.len(),
                self.sfu_failed
            );
            self.step();
        }
        for id in held {
            self.set_sending(id, true);
        }
    }

    /// Pauses or resumes a publisher's media.
    pub fn set_sending(&mut self, id: PeerId, on: bool) {
        let i = self.index[&id];
        self.clients[i].source_mut().set_sending(on);
        self.drain_client(i);
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

/// A publisher peer at `addr` with SSRCs made from `tag`.
fn publisher_peer(now: Instant, addr: SocketAddr, tag: u32, source: SyntheticSource) -> ClientPeer {
    let role = PeerRole::Publisher {
        video_ssrc: 0x1000_0000 + tag,
        audio_ssrc: 0x2000_0000 + tag,
        source,
    };
    ClientPeer::new(now, addr, &peer_config(true), role).expect("publisher peer")
}

fn new_client(
    id: PeerId,
    stream: StreamName,
    addr: SocketAddr,
    answer: &str,
    peer: ClientPeer,
) -> Client {
    let sfu_ufrag = answer
        .lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("the answer has an ICE ufrag")
        .to_owned();
    Client {
        id,
        stream,
        addr,
        sfu_ufrag,
        peer,
        connected_at: None,
        failed: false,
        deadline: None,
        received: Vec::new(),
        received_sections: Vec::new(),
        sent: Vec::new(),
        write_errors: 0,
        plis: Vec::new(),
        read_errors: 0,
        rtcp_datagrams: 0,
        extensions_seen: Default::default(),
        without_extensions: (0, 0),
        layer_sent: Vec::new(),
    }
}

/// Checks what `viewer` received of one kind against what `publisher` sent: from the viewer's
/// first packet on, every packet the publisher sent (up to `until`, if given), in order,
/// byte-for-byte, with gap-free sequence numbers, one SSRC, the viewer's payload type, the
/// source's timestamp spacing and marker bits. Returns the index in the publisher's sent list
/// of the viewer's first packet.
pub fn check_track(
    publisher: &Client,
    viewer: &Client,
    kind: Kind,
    sent_until: Option<Instant>,
) -> usize {
    let until = |at: Instant| sent_until.is_none_or(|t| at <= t);
    let sent: Vec<&Sent> = publisher
        .sent_of(kind)
        .into_iter()
        .filter(|s| until(s.at))
        .collect();
    let got: Vec<&Received> = viewer
        .received_of(kind)
        .into_iter()
        .filter(|r| until(r.at))
        .collect();
    let pt = match kind {
        Kind::Video => VIEWER_VP8_PT,
        Kind::Audio => VIEWER_OPUS_PT,
    };
    golive_client::check_track(&sent, &got, pt, true)
        .unwrap_or_else(|e| panic!("{} {kind:?}: {e}", viewer.id))
        .first_sent_index
}

/// Checks, for a lossy link, that `viewer` got every packet of `kind` that `publisher` sent
/// from the viewer's first packet up to `sent_until` (in any order, duplicates allowed), each
/// intact, all under one sequence-number mapping. Returns how many it got more than once.
pub fn check_complete(
    publisher: &Client,
    viewer: &Client,
    kind: Kind,
    sent_until: Instant,
) -> usize {
    let who = format!("{} {kind:?}", viewer.id);
    let got = viewer.received_of(kind);
    assert!(!got.is_empty(), "{who}: received nothing");
    let sent: Vec<&Sent> = publisher
        .sent_of(kind)
        .into_iter()
        .filter(|s| s.at <= sent_until)
        .collect();
    let by_stamp: HashMap<_, &Sent> = sent.iter().map(|s| (s.stamp, *s)).collect();
    let first = got[0].stamp.expect("a stamped payload");
    let k = sent
        .iter()
        .position(|s| s.stamp == first)
        .unwrap_or_else(|| panic!("{who}: first packet is not from this publisher"));
    let offset = got[0].seq.wrapping_sub(sent[k].seq);
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for r in &got {
        assert!(r.exact, "{who}: payload differs from what was sent: {r:?}");
        let stamp = r.stamp.expect("a stamped payload");
        let Some(s) = by_stamp.get(&stamp) else {
            continue; // sent after `sent_until`
        };
        assert_eq!(
            r.seq.wrapping_sub(s.seq),
            offset,
            "{who}: packet {} has a sequence number off the mapping",
            stamp.counter
        );
        if !seen.insert(stamp) {
            duplicates += 1;
        }
    }
    let missing: Vec<u64> = sent[k..]
        .iter()
        .filter(|s| !seen.contains(&s.stamp))
        .map(|s| s.stamp.counter)
        .collect();
    assert!(
        missing.is_empty(),
        "{who}: {} of {} packets never arrived (first missing: {:?})",
        missing.len(),
        sent.len() - k,
        missing.first()
    );
    duplicates
}

/// The process's peak resident set (VmHWM), in kB.
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
