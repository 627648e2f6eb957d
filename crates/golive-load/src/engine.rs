//! An engine: one OS thread that drives many sans-IO client peers ([`ClientPeer`], on `rtc`)
//! over their UDP sockets: the `mio` I/O loop around `golive-client`.
//!
//! Why one socket per peer, and one thread for hundreds of them: golive serves every peer of
//! a worker from one socket, so all our viewers on that worker see the same server address
//! and could only be told apart by their SRTP SSRCs, STUN ufrags and DTLS state. A socket per
//! viewer gives every viewer its own local address, the kernel demultiplexes for us, and `rtc`
//! gets the exact `local_addr` its ICE agent expects. What must not scale with the number of
//! viewers is threads and wake-ups: each engine registers all its sockets with one `mio`
//! (epoll) instance, edge-triggered, and one loop drains whichever sockets are ready, so a
//! burst the server sends to 400 viewers costs one `epoll_wait` and 400 `recvfrom`s, not
//! 400 task wake-ups. Timers are one scan over the peers when the earliest deadline is due.
//!
//! The control side (signalling, on tokio) talks to an engine through [`EngineHandle`]:
//! commands on a channel plus a `mio::Waker`; replies on oneshot channels. Live counters are
//! atomics the progress line reads; the full figures come back once, at [`EngineHandle::finish`].

use anyhow::{Context, Result, anyhow};
use bytes::BytesMut;
use golive_client::media::vp8_keyframe_start;
use golive_client::peer::{certificate, random_u32};
use golive_client::simulcast::LAYER_BITRATE_DIVISORS;
use golive_client::{
    ClientPeer, Clock, Feedback, IceTiming, MediaPlan, Pacing, PayloadTypes, PeerConfig, PeerEvent,
    PublisherStats, Role as PeerRole, Simulcast, SrtpOffer, Stamp, SyntheticSource, Vp8Temporal,
};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use rtc::peer_connection::state::RTCPeerConnectionState;
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::shaper::{TokenBucket, Verdict};
use crate::stats::{Histogram, SeqTracker};

/// The payload type a viewer offers RTX for its video under: the one Chromium pairs with VP8.
const VIEWER_RTX_PT: u8 = 97;

const WAKER: Token = Token(usize::MAX);
/// Large enough for any datagram on a 1500-byte MTU path and then some.
const DATAGRAM_BUFFER_BYTES: usize = 2048;
/// The loop wakes at least this often, to notice commands even if a wake-up were lost.
const IDLE_WAKE: Duration = Duration::from_millis(50);
const EVENTS_CAPACITY: usize = 1024;

/// Which peer, as the control side names it.
pub type PeerKey = u64;

/// What the control side asks an engine to do.
enum Command {
    /// Make a peer (socket, peer connection, offer) and reply with the offer.
    Offer {
        key: PeerKey,
        publisher: Option<PublisherMedia>,
        reply: oneshot::Sender<Result<OfferInfo>>,
    },
    /// Apply the server's answer; `watch_sent` is when the watch (or publish) went out.
    Answer {
        key: PeerKey,
        sdp: String,
        watch_sent: Instant,
        reply: oneshot::Sender<Result<()>>,
    },
    /// The session is over: close the peer and keep its figures.
    Remove { key: PeerKey },
    /// Stop the thread and hand back every figure.
    Finish {
        reply: oneshot::Sender<EngineReport>,
    },
}

/// What a publisher sends.
#[derive(Debug, Clone, Copy)]
pub enum PublisherMedia {
    /// One video stream of this plan.
    Single(MediaPlan),
    /// Three simulcast layers, the top one at `top_bps` (see [`Simulcast::three_layers`]);
    /// the layers' sources are numbered from `source_base`, so viewers can tell them apart.
    Simulcast {
        top_bps: u64,
        gop: Duration,
        source_base: u32,
        /// VP8 temporal layers of each layer's video.
        temporal_layers: u8,
    },
}

/// How the viewers of an engine receive.
#[derive(Debug, Clone, Default)]
pub struct ViewerOptions {
    /// Offer transport-cc and answer with TWCC feedback, as browsers do.
    pub twcc: bool,
    /// A token bucket of this many kbit/s in each viewer's receive path (see `shaper.rs`).
    pub kbps: Option<u64>,
    /// The publisher's simulcast layers' source ids, lowest first (empty: no simulcast).
    pub layer_sources: Vec<u32>,
}

#[derive(Debug, Clone)]
pub struct OfferInfo {
    pub sdp: String,
    pub local_addr: SocketAddr,
}

/// Live figures of one engine, read by the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub lost: AtomicU64,
    /// Of `lost`, the packets lost in a viewer's join burst (see [`ViewerReport::join_lost`]).
    pub join_lost: AtomicU64,
    pub connected: AtomicI64,
    pub ever_connected: AtomicU64,
    pub failed: AtomicU64,
    pub keyframes_complete: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub send_errors: AtomicU64,
    pub keyframe_requests: AtomicU64,
    /// Datagrams the viewers' token buckets dropped.
    pub shaper_dropped: AtomicU64,
}

/// The control side's end of an engine.
#[derive(Clone)]
pub struct EngineHandle {
    tx: std::sync::mpsc::Sender<Command>,
    waker: Arc<Waker>,
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

/// What one viewer saw, reported when it leaves (or when the run ends).
#[derive(Debug, Clone, Default)]
pub struct ViewerReport {
    pub key: PeerKey,
    pub connected: bool,
    /// The connection failed or closed on its own (ICE failure, DTLS close).
    pub failed: bool,
    pub watch_sent: Option<Instant>,
    pub connected_at: Option<Instant>,
    /// Watch sent until the first complete keyframe.
    pub ttff: Option<Duration>,
    pub video: SeqTracker,
    pub audio: SeqTracker,
    /// Packets found missing before (or by) a track's first live packet: lost from the burst
    /// the server sends a joining viewer (its keyframe cache), not from the live stream.
    pub join_lost: u64,
    pub rx_bytes: u64,
    pub first_rx: Option<Instant>,
    pub last_rx: Option<Instant>,
    /// Payloads with our stamp whose filler was damaged.
    pub corrupt: u64,
    /// Packets sent before this viewer connected: the server's keyframe cache replaying them.
    pub replayed: u64,
    /// Payloads without our stamp (someone else's broadcast, with --no-publish).
    pub foreign: u64,
    /// RTP with a payload type we did not offer.
    pub unknown_pt: u64,
    /// Video packets received of each simulcast layer (lowest first; empty without
    /// simulcast).
    pub layer_packets: Vec<u64>,
    /// The layer of the last video packet received.
    pub last_layer: Option<usize>,
    /// Times the received video moved from one layer to another.
    pub layer_moves: u64,
    /// Video packets received of each VP8 temporal layer (TID 0 to 3; packets without the
    /// extended descriptor count nowhere).
    pub tid_packets: [u64; 4],
    /// Datagrams its token bucket delayed, and dropped.
    pub shaper_delayed: u64,
    pub shaper_dropped: u64,
}

#[derive(Debug, Clone, Default)]
pub struct PublisherReport {
    pub connected: bool,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub write_errors: u64,
    /// A simulcast publisher's layers, lowest first.
    pub layers: Vec<LayerReport>,
}

#[derive(Debug, Clone, Default)]
pub struct LayerReport {
    pub rid: String,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub keyframe_requests: u64,
}

#[derive(Debug, Default)]
pub struct EngineReport {
    pub viewers: Vec<ViewerReport>,
    pub publisher: Option<PublisherReport>,
    /// One-way latency of every live packet any viewer of this engine received.
    pub latency: Histogram,
}

impl EngineHandle {
    /// Starts an engine thread.
    /// `recv_buffer`: the SO_RCVBUF each viewer socket asks for (`None`: the system default).
    pub fn spawn(
        name: String,
        clock: Clock,
        srtp: SrtpOffer,
        recv_buffer: Option<usize>,
        pacing: Pacing,
        viewers: ViewerOptions,
    ) -> Result<Self> {
        let poll = Poll::new().context("epoll")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("waker")?);
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = Arc::new(Counters::default());
        let config = PeerConfig {
            // No NACK generator, no receiver reports: a viewer measures the loss the server
            // and the network caused, not what retransmission hid, and spends its CPU on
            // receiving. TWCC feedback (the default) only tells the server what arrived when,
            // for its per-viewer estimate.
            feedback: if viewers.twcc {
                Feedback::Twcc
            } else {
                Feedback::None
            },
            srtp: Some(srtp),
            ice: IceTiming::Patient,
            certificate: Some(certificate("golive-load")?),
            pacing,
            // With feedback, RTX too, as browsers offer it: the server probes a viewer's link
            // with padding on the RTX stream before it moves the viewer up a layer (rtc counts
            // that padding and drops it, so it never reaches the checks here).
            video_rtx_pt: viewers.twcc.then_some(VIEWER_RTX_PT),
            ..PeerConfig::default()
        };
        let engine = Engine {
            poll,
            commands: rx,
            counters: Arc::clone(&counters),
            config,
            recv_buffer,
            clock,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            next_deadline: None,
            finished: Vec::new(),
            latency: Histogram::default(),
            publisher_report: None,
            viewers,
        };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || engine.run())
            .context("spawning an engine thread")?;
        Ok(Self {
            tx,
            waker,
            counters,
        })
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| anyhow!("the engine thread has stopped"))?;
        self.waker.wake().context("waking the engine")?;
        Ok(())
    }

    /// A new peer's offer: a viewer, or the publisher when `publisher` gives its frame plan.
    pub async fn offer(
        &self,
        key: PeerKey,
        publisher: Option<PublisherMedia>,
    ) -> Result<OfferInfo> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Offer {
            key,
            publisher,
            reply,
        })?;
        rx.await.context("the engine dropped the offer")?
    }

    pub async fn answer(&self, key: PeerKey, sdp: String, watch_sent: Instant) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Answer {
            key,
            sdp,
            watch_sent,
            reply,
        })?;
        rx.await.context("the engine dropped the answer")?
    }

    pub fn remove(&self, key: PeerKey) {
        let _ = self.send(Command::Remove { key });
    }

    pub async fn finish(&self) -> Result<EngineReport> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Finish { reply })?;
        rx.await.context("the engine stopped without a report")
    }
}

struct Viewer {
    report: ViewerReport,
    /// The keyframe being assembled: its RTP timestamp and the sequence number expected next.
    keyframe: Option<(u32, u16)>,
    /// Whether a live packet (sent after we connected) arrived, per track (video, audio).
    live: [bool; 2],
    /// The publisher's layers' source ids (shared by the engine's viewers).
    layer_sources: Arc<[u32]>,
    /// The capped link, and the datagrams it holds back (due instant, sender, bytes).
    shaper: Option<TokenBucket>,
    held: VecDeque<(Instant, SocketAddr, BytesMut)>,
}

enum Role {
    Viewer(Box<Viewer>),
    Publisher,
}

struct Slot {
    socket: UdpSocket,
    peer: ClientPeer,
    deadline: Option<Instant>,
    connected: bool,
    role: Role,
}

struct Engine {
    poll: Poll,
    commands: std::sync::mpsc::Receiver<Command>,
    counters: Arc<Counters>,
    /// What every peer of this engine shares (its DTLS certificate among it).
    config: PeerConfig,
    recv_buffer: Option<usize>,
    clock: Clock,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_key: HashMap<PeerKey, usize>,
    /// The earliest `rtc` deadline of any peer (a lower bound: peers only move theirs later
    /// by being drained, which updates this).
    next_deadline: Option<Instant>,
    finished: Vec<ViewerReport>,
    latency: Histogram,
    publisher_report: Option<PublisherReport>,
    viewers: ViewerOptions,
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// RTP rather than RTCP, STUN or DTLS (RFC 7983 and RFC 5761 demultiplexing).
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 2 && (128..192).contains(&d[0]) && !(192..=223).contains(&d[1])
}

impl Engine {
    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut buf = vec![0u8; DATAGRAM_BUFFER_BYTES];
        loop {
            let now = Instant::now();
            let timeout = self
                .next_deadline
                .map_or(IDLE_WAKE, |t| t.saturating_duration_since(now))
                .min(IDLE_WAKE);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != ErrorKind::Interrupted
            {
                eprintln!("golive-load: epoll failed: {e}");
                return;
            }
            let mut commands = false;
            for ev in events.iter() {
                match ev.token() {
                    WAKER => commands = true,
                    Token(i) => self.read_socket(i, &mut buf),
                }
            }
            if commands || events.is_empty() {
                while let Ok(cmd) = self.commands.try_recv() {
                    if let Command::Finish { reply } = cmd {
                        let _ = reply.send(self.report());
                        return;
                    }
                    self.handle_command(cmd);
                }
            }
            let now = Instant::now();
            if self.next_deadline.is_some_and(|t| t <= now) {
                self.fire_timers(now);
            }
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Offer {
                key,
                publisher,
                reply,
            } => {
                let _ = reply.send(self.add_peer(key, publisher));
            }
            Command::Answer {
                key,
                sdp,
                watch_sent,
                reply,
            } => {
                let _ = reply.send(self.apply_answer(key, sdp, watch_sent));
            }
            Command::Remove { key } => self.remove_peer(key),
            Command::Finish { .. } => unreachable!("handled by the loop"),
        }
    }

    fn add_peer(&mut self, key: PeerKey, publisher: Option<PublisherMedia>) -> Result<OfferInfo> {
        let mut socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("binding a UDP socket on 127.0.0.1")?;
        let local = socket.local_addr()?;
        if let Some(bytes) = self.recv_buffer {
            socket2::SockRef::from(&socket)
                .set_recv_buffer_size(bytes)
                .context("setting SO_RCVBUF")?;
        }
        let now = Instant::now();
        let (peer_role, role) = match publisher {
            Some(media) => {
                let plan = match media {
                    PublisherMedia::Single(plan) => plan,
                    PublisherMedia::Simulcast {
                        top_bps,
                        gop,
                        temporal_layers,
                        ..
                    } => MediaPlan::for_bitrate(top_bps, gop).with_temporal_layers(temporal_layers),
                };
                (
                    PeerRole::Publisher {
                        video_ssrc: random_u32(),
                        audio_ssrc: random_u32(),
                        source: SyntheticSource::new(random_u32(), plan, self.clock),
                    },
                    Role::Publisher,
                )
            }
            None => (
                PeerRole::Viewer,
                Role::Viewer(Box::new(Viewer {
                    report: ViewerReport {
                        key,
                        ..Default::default()
                    },
                    keyframe: None,
                    live: [false; 2],
                    layer_sources: self.viewers.layer_sources.clone().into(),
                    shaper: self.viewers.kbps.map(TokenBucket::new),
                    held: VecDeque::new(),
                })),
            ),
        };
        let mut peer = ClientPeer::new(now, local, &self.config, peer_role)?;
        if let Some(PublisherMedia::Simulcast {
            top_bps,
            gop,
            source_base,
            temporal_layers,
        }) = publisher
        {
            let plans = LAYER_BITRATE_DIVISORS.map(|div| {
                MediaPlan::for_bitrate(top_bps / div, gop).with_temporal_layers(temporal_layers)
            });
            let layers = Simulcast::with_plans(plans, self.clock, random_u32(), source_base);
            peer.set_simulcast(layers)?;
        }
        let sdp = peer.offer_sdp().to_owned();
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.poll
            .registry()
            .register(&mut socket, Token(i), Interest::READABLE)
            .context("registering the socket")?;
        self.slots[i] = Some(Slot {
            socket,
            peer,
            deadline: None,
            connected: false,
            role,
        });
        self.by_key.insert(key, i);
        self.drain(i, now);
        Ok(OfferInfo {
            sdp,
            local_addr: local,
        })
    }

    fn apply_answer(&mut self, key: PeerKey, sdp: String, watch_sent: Instant) -> Result<()> {
        let i = *self.by_key.get(&key).context("no such peer")?;
        let slot = self.slots[i].as_mut().context("no such peer")?;
        if let Role::Viewer(v) = &mut slot.role {
            v.report.watch_sent = Some(watch_sent);
        }
        let now = Instant::now();
        slot.peer
            .accept_answer(now, &sdp)
            .context("applying the answer")?;
        self.drain(i, now);
        Ok(())
    }

    fn remove_peer(&mut self, key: PeerKey) {
        let Some(i) = self.by_key.remove(&key) else {
            return;
        };
        let Some(mut slot) = self.slots[i].take() else {
            return;
        };
        self.free.push(i);
        let _ = self.poll.registry().deregister(&mut slot.socket);
        let _ = slot.peer.close();
        if slot.connected {
            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
        match slot.role {
            Role::Viewer(v) => self.finished.push(v.report),
            Role::Publisher => {
                self.publisher_report = Some(PublisherReport::new(
                    slot.connected,
                    slot.peer.publisher_stats(),
                    slot.peer.simulcast(),
                ))
            }
        }
    }

    fn report(&mut self) -> EngineReport {
        let keys: Vec<PeerKey> = self.by_key.keys().copied().collect();
        for key in keys {
            self.remove_peer(key);
        }
        EngineReport {
            viewers: std::mem::take(&mut self.finished),
            publisher: self.publisher_report.take(),
            latency: std::mem::take(&mut self.latency),
        }
    }

    /// Reads every datagram waiting on socket `i` (edge-triggered: until it would block).
    fn read_socket(&mut self, i: usize, buf: &mut [u8]) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut last = None;
        loop {
            let (n, from) = match slot.socket.recv_from(buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An ICMP error (port unreachable) surfaces once per socket; go on reading.
                Err(_) => continue,
            };
            let now = Instant::now();
            last = Some(now);
            let data = &buf[..n];
            if let Role::Viewer(v) = &mut slot.role
                && let Some(shaper) = &mut v.shaper
            {
                // Behind datagrams already held, a datagram waits its turn even if the bucket
                // would let it through: the link is one FIFO.
                match shaper.offer(now, n) {
                    Verdict::Pass if v.held.is_empty() => {}
                    Verdict::Pass => {
                        v.held.push_back((now, from, BytesMut::from(data)));
                        continue;
                    }
                    Verdict::Delay(at) => {
                        v.report.shaper_delayed += 1;
                        v.held.push_back((at, from, BytesMut::from(data)));
                        continue;
                    }
                    Verdict::Drop => {
                        v.report.shaper_dropped += 1;
                        self.counters.shaper_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
            Self::deliver(
                slot,
                now,
                from,
                BytesMut::from(data),
                &self.clock,
                &self.counters,
                &mut self.latency,
            );
        }
        if let Some(now) = last {
            self.drain(i, now);
        }
    }

    /// Hands a datagram to the peer (past the viewer's link, if it has one).
    fn deliver(
        slot: &mut Slot,
        now: Instant,
        from: SocketAddr,
        data: BytesMut,
        clock: &Clock,
        counters: &Counters,
        latency: &mut Histogram,
    ) {
        let n = data.len();
        if is_rtp(&data) {
            counters.rx_packets.fetch_add(1, Ordering::Relaxed);
            counters.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
            if let Role::Viewer(v) = &mut slot.role {
                v.report.rx_bytes += n as u64;
            }
        }
        let _ = slot.peer.handle_datagram(now, from, data);
        Self::take_events(slot, now, clock, counters, latency);
    }

    /// Delivers the datagrams a viewer's link held that are due by `now`.
    fn release_held(
        slot: &mut Slot,
        now: Instant,
        clock: &Clock,
        counters: &Counters,
        latency: &mut Histogram,
    ) {
        loop {
            let Role::Viewer(v) = &mut slot.role else {
                return;
            };
            if v.held.front().is_none_or(|(at, ..)| *at > now) {
                return;
            }
            let Some((_, from, data)) = v.held.pop_front() else {
                return;
            };
            Self::deliver(slot, now, from, data, clock, counters, latency);
        }
    }

    fn take_events(
        slot: &mut Slot,
        now: Instant,
        clock: &Clock,
        counters: &Counters,
        latency: &mut Histogram,
    ) {
        while let Some(ev) = slot.peer.poll_event() {
            match (ev, &mut slot.role) {
                (PeerEvent::Rtp { packet, .. }, Role::Viewer(v)) => {
                    v.on_rtp(now, clock, &packet, counters, latency)
                }
                (PeerEvent::KeyframeRequest { .. }, Role::Publisher) => {
                    counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                }
                (PeerEvent::State(RTCPeerConnectionState::Connected), role) if !slot.connected => {
                    slot.connected = true;
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    counters.ever_connected.fetch_add(1, Ordering::Relaxed);
                    if let Role::Viewer(v) = role {
                        v.report.connected = true;
                        v.report.connected_at = Some(now);
                    }
                }
                (
                    PeerEvent::State(
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                    ),
                    role,
                ) => {
                    if slot.connected {
                        slot.connected = false;
                        counters.connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if let Role::Viewer(v) = role {
                        v.report.failed = true;
                    }
                }
                _ => {}
            }
        }
    }

    /// Sends what peer `i` wants sent, takes its events and its next deadline.
    fn drain(&mut self, i: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        while let Some(t) = slot.peer.poll_transmit() {
            match slot.socket.send_to(&t.data, t.to) {
                Ok(n) => {
                    if let Role::Publisher = slot.role {
                        self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .tx_bytes
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Self::take_events(slot, now, &self.clock, &self.counters, &mut self.latency);
        slot.deadline = slot.peer.poll_timeout();
        if let Role::Viewer(v) = &slot.role {
            slot.deadline = min_opt(slot.deadline, v.held.front().map(|(at, ..)| *at));
        }
        self.next_deadline = min_opt(self.next_deadline, slot.deadline);
    }

    fn fire_timers(&mut self, now: Instant) {
        self.next_deadline = None;
        for i in 0..self.slots.len() {
            let due = self.slots[i]
                .as_ref()
                .is_some_and(|s| s.deadline.is_some_and(|t| t <= now));
            if due {
                if let Some(slot) = self.slots[i].as_mut() {
                    Self::release_held(slot, now, &self.clock, &self.counters, &mut self.latency);
                    let _ = slot.peer.handle_timeout(now);
                }
                self.drain(i, now);
            } else if let Some(slot) = self.slots[i].as_ref() {
                self.next_deadline = min_opt(self.next_deadline, slot.deadline);
            }
        }
    }
}

impl PublisherReport {
    fn new(connected: bool, stats: PublisherStats, simulcast: Option<&Simulcast>) -> Self {
        Self {
            layers: simulcast
                .map(|s| {
                    s.layers()
                        .iter()
                        .map(|l| LayerReport {
                            rid: l.rid.clone(),
                            packets_sent: l.stats.packets_sent,
                            bytes_sent: l.stats.payload_bytes_sent,
                            keyframe_requests: l.stats.keyframe_requests,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            connected,
            packets_sent: stats.packets_sent,
            bytes_sent: stats.payload_bytes_sent,
            keyframes_sent: stats.keyframes_sent,
            keyframe_requests: stats.keyframe_requests,
            write_errors: stats.write_errors,
        }
    }
}

/// The payload types every peer offers (the server keeps them in its answer).
const PAYLOAD_TYPES: PayloadTypes = PayloadTypes {
    vp8: 96,
    h264: 102,
    opus: 111,
};

impl Viewer {
    fn on_rtp(
        &mut self,
        now: Instant,
        clock: &Clock,
        packet: &rtc::rtp::Packet,
        counters: &Counters,
        latency: &mut Histogram,
    ) {
        let r = &mut self.report;
        r.first_rx.get_or_insert(now);
        r.last_rx = Some(now);
        let h = &packet.header;
        let stamp = Stamp::read(&packet.payload);
        let sent = stamp.and_then(|s| clock.instant_of(s.sent_ns));
        // Packets sent before we were connected waited in the server (its keyframe cache gives
        // a new viewer the current picture at once); their age is not forwarding latency.
        let live = sent.is_some_and(|t| r.connected_at.is_some_and(|c| t >= c));
        let (missing, track) = match h.payload_type {
            pt if pt == PAYLOAD_TYPES.vp8 => {
                if r.ttff.is_none() {
                    self.keyframe = next_keyframe_state(
                        self.keyframe,
                        h.sequence_number,
                        h.timestamp,
                        &packet.payload,
                    );
                    let complete = h.marker
                        && self.keyframe.is_some_and(|(ts, next)| {
                            ts == h.timestamp && next == h.sequence_number.wrapping_add(1)
                        });
                    if complete && let Some(sent) = r.watch_sent {
                        r.ttff = Some(now.saturating_duration_since(sent));
                        counters.keyframes_complete.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(layer) =
                    stamp.and_then(|s| self.layer_sources.iter().position(|id| *id == s.source_id))
                {
                    if r.layer_packets.len() < self.layer_sources.len() {
                        r.layer_packets.resize(self.layer_sources.len(), 0);
                    }
                    r.layer_packets[layer] += 1;
                    if r.last_layer.is_some_and(|l| l != layer) {
                        r.layer_moves += 1;
                    }
                    r.last_layer = Some(layer);
                }
                if let Some(v) = Vp8Temporal::read(&packet.payload) {
                    r.tid_packets[usize::from(v.tid)] += 1;
                }
                (r.video.record(h.sequence_number), Some(0))
            }
            pt if pt == PAYLOAD_TYPES.opus => (r.audio.record(h.sequence_number), Some(1)),
            _ => {
                r.unknown_pt += 1;
                (0, None)
            }
        };
        if missing > 0 {
            counters.lost.fetch_add(missing, Ordering::Relaxed);
            // Foreign payloads carry no send time: every gap counts as live loss then.
            if let Some(t) = track
                && !self.live[t]
                && stamp.is_some()
            {
                r.join_lost += missing;
                counters.join_lost.fetch_add(missing, Ordering::Relaxed);
            }
        }
        if let Some(t) = track
            && live
        {
            self.live[t] = true;
        }
        match (stamp, sent) {
            (Some(stamp), Some(sent)) => {
                if !stamp.matches_quickly(&packet.payload) {
                    r.corrupt += 1;
                }
                if live {
                    latency.record(now.saturating_duration_since(sent));
                } else {
                    r.replayed += 1;
                }
            }
            // Ours, but from before this process's clock can tell: old.
            (Some(_), None) => r.replayed += 1,
            (None, _) => r.foreign += 1,
        }
    }
}

/// Follows a keyframe as it arrives: `Some((timestamp, next sequence number))` while every
/// packet since the keyframe's first has come in order.
fn next_keyframe_state(
    state: Option<(u32, u16)>,
    seq: u16,
    ts: u32,
    payload: &bytes::Bytes,
) -> Option<(u32, u16)> {
    if vp8_keyframe_start(payload) {
        return Some((ts, seq.wrapping_add(1)));
    }
    match state {
        Some((kts, next)) if kts == ts && next == seq => Some((ts, seq.wrapping_add(1))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golive_client::media::{PayloadKind, payload};

    #[test]
    fn a_keyframe_completes_only_when_every_packet_came_in_order() {
        let of = |kind| {
            let stamp = Stamp {
                source_id: 1,
                kind,
                temporal: None,
                counter: 0,
                sent_ns: 0,
            };
            payload(50, stamp)
        };
        let key = of(PayloadKind::VideoFrameStart { keyframe: true });
        let delta = of(PayloadKind::VideoFrameStart { keyframe: false });
        let cont = of(PayloadKind::VideoContinuation);
        let st = next_keyframe_state(None, 65_535, 9, &key);
        assert_eq!(st, Some((9, 0)));
        let st = next_keyframe_state(st, 0, 9, &cont);
        assert_eq!(st, Some((9, 1)));
        // A gap ends the attempt.
        assert_eq!(next_keyframe_state(st, 2, 9, &cont), None);
        // A delta frame never starts one.
        assert_eq!(next_keyframe_state(None, 5, 10, &delta), None);
        assert_eq!(next_keyframe_state(None, 5, 10, &cont), None);
    }
}
