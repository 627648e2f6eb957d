//! An engine: one OS thread that drives many sans-IO `rtc` peers over their UDP sockets.
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
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

use crate::media::{
    AUDIO_CLOCK_RATE, AUDIO_PACKET_INTERVAL, AUDIO_PAYLOAD_BYTES, Clock, PayloadKind, Stamp,
    VIDEO_CLOCK_RATE, VIDEO_FPS, VideoPlan, filler_intact, payload, vp8_keyframe_start,
};
use crate::peer::{
    OPUS_PAYLOAD_TYPE, Senders, SrtpOffer, VP8_PAYLOAD_TYPE, is_keyframe_request, offer,
};
use crate::stats::{Histogram, SeqTracker};

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
        publisher: Option<VideoPlan>,
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
}

#[derive(Debug, Clone, Default)]
pub struct PublisherReport {
    pub connected: bool,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub write_errors: u64,
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
    ) -> Result<Self> {
        let poll = Poll::new().context("epoll")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("waker")?);
        let (tx, rx) = std::sync::mpsc::channel();
        let counters = Arc::new(Counters::default());
        let cert = crate::peer::certificate()?;
        let engine = Engine {
            poll,
            commands: rx,
            counters: Arc::clone(&counters),
            cert,
            srtp,
            recv_buffer,
            clock,
            slots: Vec::new(),
            free: Vec::new(),
            by_key: HashMap::new(),
            next_deadline: None,
            finished: Vec::new(),
            latency: Histogram::default(),
            publisher_report: None,
            publisher: None,
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
    pub async fn offer(&self, key: PeerKey, publisher: Option<VideoPlan>) -> Result<OfferInfo> {
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
}

struct Publisher {
    senders: Senders,
    plan: VideoPlan,
    started: Option<Instant>,
    frames: u64,
    audio_packets: u64,
    video_seq: u16,
    audio_seq: u16,
    video_index: u32,
    audio_index: u32,
    keyframe_requested: bool,
    report: PublisherReport,
}

enum Role {
    Viewer(Box<Viewer>),
    Publisher(Box<Publisher>),
}

struct Slot {
    socket: UdpSocket,
    local: SocketAddr,
    pc: RTCPeerConnection,
    deadline: Option<Instant>,
    connected: bool,
    role: Role,
}

struct Engine {
    poll: Poll,
    commands: std::sync::mpsc::Receiver<Command>,
    counters: Arc<Counters>,
    cert: RTCCertificate,
    srtp: SrtpOffer,
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
    /// The publisher's slot, if this engine has it.
    publisher: Option<usize>,
}

/// A random-enough SSRC without a `rand` dependency.
pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32 | 1
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
            let wake = min_opt(self.next_deadline, self.publisher_due(now));
            let timeout = wake
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
            if self.publisher_due(now).is_some_and(|t| t <= now) {
                self.produce(now);
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

    fn add_peer(&mut self, key: PeerKey, publisher: Option<VideoPlan>) -> Result<OfferInfo> {
        let mut socket = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .context("binding a UDP socket on 127.0.0.1")?;
        let local = socket.local_addr()?;
        if let Some(bytes) = self.recv_buffer {
            socket2::SockRef::from(&socket)
                .set_recv_buffer_size(bytes)
                .context("setting SO_RCVBUF")?;
        }
        let now = Instant::now();
        let ssrcs = publisher.map(|_| (random_u32(), random_u32()));
        let offered = offer(now, local, &self.cert, self.srtp, ssrcs)?;
        let i = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.poll
            .registry()
            .register(&mut socket, Token(i), Interest::READABLE)
            .context("registering the socket")?;
        let role = match (publisher, offered.senders) {
            (Some(plan), Some(senders)) => Role::Publisher(Box::new(Publisher {
                senders,
                plan,
                started: None,
                frames: 0,
                audio_packets: 0,
                video_seq: random_u32() as u16,
                audio_seq: random_u32() as u16,
                video_index: 0,
                audio_index: 0,
                keyframe_requested: false,
                report: PublisherReport::default(),
            })),
            _ => Role::Viewer(Box::new(Viewer {
                report: ViewerReport {
                    key,
                    ..Default::default()
                },
                keyframe: None,
                live: [false; 2],
            })),
        };
        self.slots[i] = Some(Slot {
            socket,
            local,
            pc: offered.pc,
            deadline: None,
            connected: false,
            role,
        });
        if publisher.is_some() {
            self.publisher = Some(i);
        }
        self.by_key.insert(key, i);
        self.drain(i, now);
        Ok(OfferInfo {
            sdp: offered.offer_sdp,
            local_addr: local,
        })
    }

    fn apply_answer(&mut self, key: PeerKey, sdp: String, watch_sent: Instant) -> Result<()> {
        let i = *self.by_key.get(&key).context("no such peer")?;
        let slot = self.slots[i].as_mut().context("no such peer")?;
        if let Role::Viewer(v) = &mut slot.role {
            v.report.watch_sent = Some(watch_sent);
        }
        let answer = RTCSessionDescription::answer(sdp).context("parsing the answer")?;
        let now = Instant::now();
        slot.pc
            .set_remote_description(now, answer)
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
        if self.publisher == Some(i) {
            self.publisher = None;
        }
        let _ = self.poll.registry().deregister(&mut slot.socket);
        let _ = slot.pc.close();
        if slot.connected {
            self.counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
        match slot.role {
            Role::Viewer(v) => self.finished.push(v.report),
            Role::Publisher(p) => self.publisher_report = Some(p.report),
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
            if is_rtp(data) {
                self.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .rx_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
                if let Role::Viewer(v) = &mut slot.role {
                    v.report.rx_bytes += n as u64;
                }
            }
            let _ = slot.pc.handle_read(TaggedBytesMut {
                now,
                transport: TransportContext {
                    local_addr: slot.local,
                    peer_addr: from,
                    ecn: None,
                    transport_protocol: TransportProtocol::UDP,
                },
                message: BytesMut::from(data),
            });
            Self::take_events(slot, now, &self.counters);
            while let Some(TaggedRTCMessage { message, .. }) = slot.pc.poll_read() {
                match (&mut slot.role, message) {
                    (Role::Viewer(v), RTCMessage::RtpPacket(_, packet)) => {
                        v.on_rtp(now, &self.clock, &packet, &self.counters, &mut self.latency)
                    }
                    (Role::Publisher(p), RTCMessage::RtcpPacket(_, packets))
                        if packets.iter().any(|p| is_keyframe_request(p.as_any())) =>
                    {
                        p.keyframe_requested = true;
                        p.report.keyframe_requests += 1;
                        self.counters
                            .keyframe_requests
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }
        if let Some(now) = last {
            self.drain(i, now);
        }
    }

    fn take_events(slot: &mut Slot, now: Instant, counters: &Counters) {
        while let Some(ev) = slot.pc.poll_event() {
            let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = ev else {
                continue;
            };
            match state {
                RTCPeerConnectionState::Connected if !slot.connected => {
                    slot.connected = true;
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                    counters.ever_connected.fetch_add(1, Ordering::Relaxed);
                    match &mut slot.role {
                        Role::Viewer(v) => {
                            v.report.connected = true;
                            v.report.connected_at = Some(now);
                        }
                        Role::Publisher(p) => p.report.connected = true,
                    }
                }
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    if slot.connected {
                        slot.connected = false;
                        counters.connected.fetch_sub(1, Ordering::Relaxed);
                    }
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if let Role::Viewer(v) = &mut slot.role {
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
        while let Some(m) = slot.pc.poll_write() {
            match slot.socket.send_to(&m.message, m.transport.peer_addr) {
                Ok(n) => {
                    if let Role::Publisher(_) = slot.role {
                        self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .tx_bytes
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    if let Role::Publisher(p) = &mut slot.role {
                        p.report.write_errors += 1;
                    }
                }
            }
        }
        Self::take_events(slot, now, &self.counters);
        slot.deadline = slot.pc.poll_timeout();
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
                    let _ = slot.pc.handle_timeout(now);
                }
                self.drain(i, now);
            } else if let Some(slot) = self.slots[i].as_ref() {
                self.next_deadline = min_opt(self.next_deadline, slot.deadline);
            }
        }
    }

    fn publisher_slot(&self) -> Option<usize> {
        self.publisher.filter(|&i| self.slots[i].is_some())
    }

    /// When the publisher's next packet is due.
    fn publisher_due(&self, now: Instant) -> Option<Instant> {
        let i = self.publisher_slot()?;
        let slot = self.slots[i].as_ref()?;
        let Role::Publisher(p) = &slot.role else {
            return None;
        };
        if !slot.connected {
            return None;
        }
        let Some(start) = p.started else {
            return Some(now);
        };
        Some(p.next_audio(start).min(p.next_frame(start)))
    }

    fn produce(&mut self, now: Instant) {
        let Some(i) = self.publisher_slot() else {
            return;
        };
        let clock = self.clock;
        let Some(slot) = self.slots[i].as_mut() else {
            return;
        };
        let Role::Publisher(p) = &mut slot.role else {
            return;
        };
        let start = *p.started.get_or_insert(now);
        let sent_ns = clock.stamp_ns(now);
        let mut packets = Vec::new();
        while p.next_audio(start) <= now {
            let ts = (p.audio_packets * u64::from(AUDIO_CLOCK_RATE)
                / u64::from(crate::media::AUDIO_PACKETS_PER_S)) as u32;
            let stamp = Stamp {
                sent_ns,
                index: p.audio_index,
            };
            p.audio_index = p.audio_index.wrapping_add(1);
            let body = payload(PayloadKind::Audio, AUDIO_PAYLOAD_BYTES, stamp);
            packets.push((
                p.senders.audio,
                rtp(
                    OPUS_PAYLOAD_TYPE,
                    p.senders.audio_ssrc,
                    p.audio_seq,
                    ts,
                    false,
                    body,
                ),
            ));
            p.audio_seq = p.audio_seq.wrapping_add(1);
            p.audio_packets += 1;
        }
        while p.next_frame(start) <= now {
            let keyframe = p.frames % p.plan.gop_frames == 0 || p.keyframe_requested;
            if keyframe {
                p.keyframe_requested = false;
                p.report.keyframes_sent += 1;
            }
            let ts = (p.frames * u64::from(VIDEO_CLOCK_RATE) / u64::from(VIDEO_FPS)) as u32;
            p.frames += 1;
            let bytes = if keyframe {
                p.plan.keyframe_bytes
            } else {
                p.plan.delta_frame_bytes
            };
            let sizes: Vec<usize> = VideoPlan::packet_sizes(bytes).collect();
            let n = sizes.len();
            for (k, size) in sizes.into_iter().enumerate() {
                let kind = if k == 0 {
                    PayloadKind::VideoFrameStart { keyframe }
                } else {
                    PayloadKind::VideoContinuation
                };
                let stamp = Stamp {
                    sent_ns,
                    index: p.video_index,
                };
                p.video_index = p.video_index.wrapping_add(1);
                packets.push((
                    p.senders.video,
                    rtp(
                        VP8_PAYLOAD_TYPE,
                        p.senders.video_ssrc,
                        p.video_seq,
                        ts,
                        k + 1 == n,
                        payload(kind, size, stamp),
                    ),
                ));
                p.video_seq = p.video_seq.wrapping_add(1);
            }
        }
        for (sender, packet) in packets {
            p.report.packets_sent += 1;
            p.report.bytes_sent += packet.payload.len() as u64;
            let written = slot
                .pc
                .rtp_sender(sender)
                .map(|mut s| s.write_rtp(now, packet).is_ok());
            if written != Some(true) {
                p.report.write_errors += 1;
            }
        }
        self.drain(i, now);
    }
}

impl Publisher {
    fn next_audio(&self, start: Instant) -> Instant {
        start + AUDIO_PACKET_INTERVAL * self.audio_packets as u32
    }

    fn next_frame(&self, start: Instant) -> Instant {
        start + Duration::from_nanos(self.frames * 1_000_000_000 / u64::from(VIDEO_FPS))
    }
}

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
            VP8_PAYLOAD_TYPE => {
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
                (r.video.record(h.sequence_number), Some(0))
            }
            OPUS_PAYLOAD_TYPE => (r.audio.record(h.sequence_number), Some(1)),
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
                if !filler_intact(&packet.payload, stamp) {
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
    payload: &[u8],
) -> Option<(u32, u16)> {
    if vp8_keyframe_start(payload) {
        return Some((ts, seq.wrapping_add(1)));
    }
    match state {
        Some((kts, next)) if kts == ts && next == seq => Some((ts, seq.wrapping_add(1))),
        _ => None,
    }
}

fn rtp(
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: bytes::Bytes,
) -> rtc::rtp::Packet {
    rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframe_completes_only_when_every_packet_came_in_order() {
        let s = Stamp {
            sent_ns: 0,
            index: 0,
        };
        let key = payload(PayloadKind::VideoFrameStart { keyframe: true }, 50, s);
        let delta = payload(PayloadKind::VideoFrameStart { keyframe: false }, 50, s);
        let cont = payload(PayloadKind::VideoContinuation, 50, s);
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
