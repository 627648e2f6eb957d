//! A WebRTC test peer on the sans-IO `rtc` crate: always the offerer (a full, controlling ICE
//! agent, which is what a browser is to golive's ICE-lite server), one UDP socket on
//! 127.0.0.1, its event loop on a tokio task.
//!
//! Life cycle: [`TestPeer::publisher`] or [`TestPeer::viewer`] gives an [`OfferedPeer`] whose
//! [`sdp`](OfferedPeer::sdp) goes into a `publish` or `watch`; [`OfferedPeer::connect`] takes the
//! server's answer and starts the event loop. What the peer sees is recorded in a [`Record`]
//! that the test reads while the peer runs.

use crate::media::{
    AUDIO_CLOCK_RATE, AUDIO_PACKET_DURATION, MediaKind, SyntheticPacket, SyntheticSource,
    VIDEO_CLOCK_RATE, VIDEO_FRAME_INTERVAL,
};
use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::{Bytes, BytesMut};
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Payload types this peer offers. The server must keep the offerer's numbers in its answer.
pub const VP8_PAYLOAD_TYPE: u8 = 96;
pub const H264_PAYLOAD_TYPE: u8 = 102;
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// H.264 constrained baseline 3.1, packetization mode 1: what browsers offer first.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Largest datagram we expect (DTLS and RTP stay under the 1500-byte MTU).
const UDP_BUFFER_BYTES: usize = 2048;
/// How long the event loop sleeps when `rtc` has no deadline.
const IDLE_WAKEUP: Duration = Duration::from_secs(1);

/// The video codec a viewer is able to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    /// Only H.264, to provoke `codec_unsupported` against a VP8 broadcaster.
    H264,
}

/// What a peer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends synthetic VP8 + Opus (sendonly).
    Publisher,
    /// Receives audio + video (recvonly), able to decode `VideoCodec`.
    Viewer(VideoCodec),
}

/// A packet the publisher handed to `rtc` for sending.
#[derive(Debug, Clone)]
pub struct SentPacket {
    pub kind: MediaKind,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub keyframe_start: bool,
    pub payload: Bytes,
    pub at: Instant,
}

/// An RTP packet a viewer received.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    pub kind: MediaKind,
    pub track_id: String,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub payload: Bytes,
    pub arrival: Instant,
}

/// A keyframe request (RTCP PLI or FIR) the publisher received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequestKind {
    Pli,
    Fir,
}

#[derive(Debug, Clone, Copy)]
pub struct KeyframeRequest {
    pub kind: KeyframeRequestKind,
    pub at: Instant,
}

/// Everything a peer observed, shared between its event loop and the test.
#[derive(Debug, Default, Clone)]
pub struct Record {
    pub sent: Vec<SentPacket>,
    pub received: Vec<ReceivedPacket>,
    pub keyframe_requests: Vec<KeyframeRequest>,
    pub states: Vec<(Instant, RTCPeerConnectionState)>,
    /// Problems inside the peer (a failed `write_rtp`, an undecodable datagram...). The tests
    /// assert this stays empty where it matters; the peer itself never panics on them.
    pub errors: Vec<String>,
}

impl Record {
    pub fn sent_payloads(&self, kind: MediaKind) -> Vec<Bytes> {
        self.sent
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.payload.clone())
            .collect()
    }

    pub fn received_of(&self, kind: MediaKind) -> Vec<&ReceivedPacket> {
        self.received.iter().filter(|p| p.kind == kind).collect()
    }

    pub fn received_payloads(&self, kind: MediaKind) -> Vec<Bytes> {
        self.received_of(kind)
            .into_iter()
            .map(|p| p.payload.clone())
            .collect()
    }
}

/// A peer with its offer made, waiting for the server's answer.
pub struct OfferedPeer {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local_addr: SocketAddr,
    role: Role,
    senders: Vec<(MediaKind, RTCRtpSenderId, u32)>,
    offer_sdp: String,
}

impl std::fmt::Debug for OfferedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedPeer")
            .field("role", &self.role)
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// A connected (or connecting) peer whose event loop runs on a tokio task.
pub struct TestPeer {
    role: Role,
    record: Arc<Mutex<Record>>,
    state_rx: watch::Receiver<RTCPeerConnectionState>,
    stop_tx: Option<oneshot::Sender<()>>,
    command_tx: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPeer")
            .field("role", &self.role)
            .field("state", &*self.state_rx.borrow())
            .finish()
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    })
    .collect()
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: AUDIO_CLOCK_RATE,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PAYLOAD_TYPE,
    }
}

fn video_codec(codec: VideoCodec) -> RTCRtpCodecParameters {
    let (mime, fmtp, pt) = match codec {
        VideoCodec::Vp8 => (MIME_TYPE_VP8, "", VP8_PAYLOAD_TYPE),
        VideoCodec::H264 => (MIME_TYPE_H264, H264_FMTP, H264_PAYLOAD_TYPE),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: VIDEO_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: video_feedback(),
        },
        payload_type: pt,
    }
}

/// A random-enough 32-bit value without a `rand` dependency (SSRCs and source ids only need
/// to differ between the peers of one test run).
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u32 | 1
}

impl TestPeer {
    /// A publisher: sendonly VP8 and Opus tracks.
    pub async fn publisher() -> Result<OfferedPeer> {
        OfferedPeer::new(Role::Publisher).await
    }

    /// A viewer: recvonly audio and video, able to receive `codec` video.
    pub async fn viewer(codec: VideoCodec) -> Result<OfferedPeer> {
        OfferedPeer::new(Role::Viewer(codec)).await
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// A copy of everything observed so far.
    pub fn snapshot(&self) -> Record {
        self.lock().clone()
    }

    /// Runs `f` on the record without copying it.
    pub fn with_record<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.lock())
    }

    /// Makes a viewer send an RTCP PLI for its video track, as a decoder that lost a picture
    /// would. Fails if the peer is not a viewer or its event loop has ended.
    pub fn send_pli(&self) -> Result<()> {
        ensure!(
            matches!(self.role, Role::Viewer(_)),
            "only a viewer sends PLI"
        );
        self.command_tx
            .send(Command::SendPli)
            .map_err(|_| anyhow!("the peer's event loop has ended"))
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state_rx.borrow()
    }

    /// Waits until the peer connection is `connected`; `failed` or `closed` first is an error.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.state_rx.clone();
        let wait = rx.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        });
        let state = *tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| {
                anyhow!(
                    "not connected within {timeout:?}; states: {:?}",
                    self.state_history()
                )
            })?
            .context("peer event loop ended")?;
        if state != RTCPeerConnectionState::Connected {
            bail!(
                "peer connection went {state} before connecting; errors: {:?}",
                self.lock().errors
            );
        }
        Ok(())
    }

    /// Waits until at least `count` packets of `kind` were received (viewer) or sent
    /// (publisher).
    pub async fn wait_packets(
        &self,
        kind: MediaKind,
        count: usize,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.with_record(|r| match self.role {
                Role::Publisher => r.sent.iter().filter(|p| p.kind == kind).count(),
                Role::Viewer(_) => r.received.iter().filter(|p| p.kind == kind).count(),
            });
            if have >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {have} of {count} {kind:?} packets within {timeout:?} (state {}, errors {:?})",
                    self.state(),
                    self.lock().errors
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a keyframe request (PLI or FIR) that reached this publisher at or after
    /// `since`, and returns it.
    pub async fn wait_keyframe_request_since(
        &self,
        since: Instant,
        timeout: Duration,
    ) -> Result<KeyframeRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let found =
                self.with_record(|r| r.keyframe_requests.iter().find(|k| k.at >= since).copied());
            if let Some(request) = found {
                return Ok(request);
            }
            if Instant::now() >= deadline {
                // Describe every request by when it came relative to `since`.
                let seen: Vec<String> = self.with_record(|r| {
                    r.keyframe_requests
                        .iter()
                        .map(|k| match since.checked_duration_since(k.at) {
                            Some(before) => format!("{:?} {before:?} before", k.kind),
                            None => format!("{:?} {:?} after", k.kind, k.at - since),
                        })
                        .collect()
                });
                bail!("no PLI/FIR within {timeout:?}; requests seen: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the event loop, closing the peer connection.
    pub async fn close(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
    }

    fn state_history(&self) -> Vec<RTCPeerConnectionState> {
        self.lock().states.iter().map(|(_, s)| *s).collect()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl OfferedPeer {
    async fn new(role: Role) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("binding the peer's UDP socket")?;
        let local_addr = socket.local_addr()?;

        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(opus_codec(), RtpCodecKind::Audio)?;
        let video = match role {
            Role::Publisher => VideoCodec::Vp8,
            Role::Viewer(codec) => codec,
        };
        media_engine.register_codec(video_codec(video), RtpCodecKind::Video)?;
        let registry = Registry::new().with(
            DELIVER_KEYFRAME_REQUESTS_SLOT,
            DeliverKeyframeRequests::default(),
        );
        let registry = register_default_interceptors(registry, &mut media_engine)?;

        // No ICE servers: every candidate is our one loopback host candidate.
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(Instant::now())?;

        let mut senders = Vec::new();
        match role {
            Role::Publisher => {
                for (kind, codec_kind, codec) in [
                    (
                        MediaKind::Video,
                        RtpCodecKind::Video,
                        video_codec(VideoCodec::Vp8),
                    ),
                    (MediaKind::Audio, RtpCodecKind::Audio, opus_codec()),
                ] {
                    let ssrc = random_u32();
                    let name = match kind {
                        MediaKind::Video => "video",
                        MediaKind::Audio => "audio",
                    };
                    let track = MediaStreamTrack::new(
                        "golive-e2e".to_owned(),
                        format!("e2e-{name}"),
                        format!("synthetic {name}"),
                        codec_kind,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters {
                                ssrc: Some(ssrc),
                                ..Default::default()
                            },
                            codec: codec.rtp_codec.clone(),
                            ..Default::default()
                        }],
                    );
                    let id = pc.add_transceiver_from_track(
                        track,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Sendonly,
                            streams: vec![],
                            send_encodings: vec![],
                        }),
                    )?;
                    senders.push((kind, RTCRtpSenderId::from(id), ssrc));
                }
            }
            Role::Viewer(_) => {
                for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                    pc.add_transceiver_from_kind(
                        kind,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            ..Default::default()
                        }),
                    )?;
                }
            }
        }

        // Gather: our one host candidate, then end-of-candidates, so the offer is complete.
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local_addr.ip().to_string(),
                port: local_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        pc.add_local_candidate(RTCIceCandidateInit::default())?;

        let offer = pc.create_offer(None)?;
        pc.set_local_description(Instant::now(), offer)?;
        let offer_sdp = pc
            .local_description()
            .ok_or_else(|| anyhow!("no local description after set_local_description"))?
            .sdp;

        Ok(Self {
            pc,
            socket,
            local_addr,
            role,
            senders,
            offer_sdp,
        })
    }

    /// The offer to send in `publish` / `watch`.
    pub fn sdp(&self) -> &str {
        &self.offer_sdp
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies the server's answer and starts the event loop.
    pub fn connect(mut self, answer_sdp: &str) -> Result<TestPeer> {
        let answer = RTCSessionDescription::answer(answer_sdp.to_owned())
            .context("parsing the server's answer")?;
        self.pc
            .set_remote_description(Instant::now(), answer)
            .context("applying the server's answer")?;

        // The payload type each sender must stamp is the one negotiated for it.
        let mut outputs = Vec::new();
        for (kind, id, ssrc) in &self.senders {
            let mut sender = self
                .pc
                .rtp_sender(*id)
                .ok_or_else(|| anyhow!("{kind:?} sender vanished"))?;
            let payload_type = sender
                .get_parameters()
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .ok_or_else(|| anyhow!("no codec negotiated for the {kind:?} sender"))?;
            outputs.push(Output {
                kind: *kind,
                id: *id,
                ssrc: *ssrc,
                payload_type,
            });
        }

        let record = Arc::new(Mutex::new(Record::default()));
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let role = self.role;
        let event_loop = EventLoop {
            pc: self.pc,
            socket: self.socket,
            local_addr: self.local_addr,
            role,
            outputs,
            record: Arc::clone(&record),
            state_tx,
            track_kinds: HashMap::new(),
            video_receiver: None,
            source: SyntheticSource::new(random_u32()),
            media_started: None,
        };
        let task = tokio::spawn(event_loop.run(stop_rx, command_rx));
        Ok(TestPeer {
            role,
            record,
            state_rx,
            stop_tx: Some(stop_tx),
            command_tx,
            task: Some(task),
        })
    }
}

/// Application-most custom slot, after every built-in interceptor (as in rtc's
/// `rtcp-processing` example).
const DELIVER_KEYFRAME_REQUESTS_SLOT: Slot = Slot::Custom(14_000);

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.downcast_ref::<PictureLossIndication>().is_some()
        || any.downcast_ref::<FullIntraRequest>().is_some()
}

/// In rtc 0.21 inbound RTCP stops at the end of the interceptor chain unless an interceptor marks
/// it for the application; this one marks PLI and FIR, which the publisher must see.
#[derive(Default)]
struct DeliverKeyframeRequests {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverKeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| is_keyframe_request(p.as_ref()))
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for DeliverKeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// What a test can ask of a running peer's event loop.
#[derive(Debug)]
enum Command {
    SendPli,
}

/// One outgoing track of a publisher.
#[derive(Debug, Clone, Copy)]
struct Output {
    kind: MediaKind,
    id: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
}

struct EventLoop {
    pc: RTCPeerConnection,
    socket: UdpSocket,
    local_addr: SocketAddr,
    role: Role,
    outputs: Vec<Output>,
    record: Arc<Mutex<Record>>,
    state_tx: watch::Sender<RTCPeerConnectionState>,
    /// Receiving track id -> kind, learnt from `OnTrack` events.
    track_kinds: HashMap<String, MediaKind>,
    /// A viewer's video receiver and the SSRC it receives, for the PLIs it sends.
    video_receiver: Option<(RTCRtpReceiverId, u32)>,
    source: SyntheticSource,
    /// When the publisher started sending (it starts once connected).
    media_started: Option<Instant>,
}

impl EventLoop {
    async fn run(
        mut self,
        mut stop_rx: oneshot::Receiver<()>,
        mut command_rx: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut buf = vec![0u8; UDP_BUFFER_BYTES];
        let mut video_tick = tokio::time::interval(VIDEO_FRAME_INTERVAL);
        video_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut audio_tick = tokio::time::interval(AUDIO_PACKET_DURATION);
        audio_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            self.flush_writes().await;
            self.drain_events();
            self.drain_reads();
            self.flush_writes().await;

            let now = Instant::now();
            let deadline = self.pc.poll_timeout().unwrap_or(now + IDLE_WAKEUP);
            let delay = deadline.saturating_duration_since(now);
            if delay.is_zero() {
                self.handle_timeout();
                continue;
            }
            let sending = self.role == Role::Publisher && self.media_started.is_some();

            tokio::select! {
                biased;
                _ = &mut stop_rx => break,
                Some(command) = command_rx.recv() => self.handle_command(command),
                _ = tokio::time::sleep(delay) => self.handle_timeout(),
                res = self.socket.recv_from(&mut buf) => match res {
                    Ok((n, peer_addr)) => self.handle_datagram(&buf[..n], peer_addr),
                    Err(e) => self.note_error(format!("UDP receive: {e}")),
                },
                _ = video_tick.tick(), if sending => self.send_video_frame(),
                _ = audio_tick.tick(), if sending => self.send_audio_packet(),
            }
        }

        if let Err(e) = self.pc.close() {
            self.note_error(format!("close: {e}"));
        }
        self.flush_writes().await;
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::SendPli => {
                let Some((receiver_id, media_ssrc)) = self.video_receiver else {
                    self.note_error("PLI asked for before any video arrived".to_owned());
                    return;
                };
                let pli = PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                };
                let result = match self.pc.rtp_receiver(receiver_id) {
                    Some(mut receiver) => receiver
                        .write_rtcp(Instant::now(), vec![Box::new(pli)])
                        .map_err(|e| e.to_string()),
                    None => Err("video receiver not found".to_owned()),
                };
                if let Err(e) = result {
                    self.note_error(format!("sending PLI: {e}"));
                }
            }
        }
    }

    fn handle_timeout(&mut self) {
        if let Err(e) = self.pc.handle_timeout(Instant::now()) {
            self.note_error(format!("handle_timeout: {e}"));
        }
    }

    fn handle_datagram(&mut self, data: &[u8], peer_addr: SocketAddr) {
        let result = self.pc.handle_read(TaggedBytesMut {
            now: Instant::now(),
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        });
        if let Err(e) = result {
            self.note_error(format!("handle_read from {peer_addr}: {e}"));
        }
    }

    async fn flush_writes(&mut self) {
        while let Some(out) = self.pc.poll_write() {
            if let Err(e) = self
                .socket
                .send_to(&out.message, out.transport.peer_addr)
                .await
            {
                self.note_error(format!("UDP send to {}: {e}", out.transport.peer_addr));
            }
        }
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.lock().states.push((Instant::now(), state));
                    let _ = self.state_tx.send(state);
                    if state == RTCPeerConnectionState::Connected && self.media_started.is_none() {
                        self.media_started = Some(Instant::now());
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let receiver_id: RTCRtpReceiverId = init.receiver_id;
                    if let Some(receiver) = self.pc.rtp_receiver(receiver_id) {
                        let kind = match receiver.track().kind() {
                            RtpCodecKind::Audio => MediaKind::Audio,
                            _ => MediaKind::Video,
                        };
                        self.track_kinds.insert(init.track_id.to_string(), kind);
                        if kind == MediaKind::Video {
                            self.video_receiver = Some((receiver_id, init.ssrc));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn drain_reads(&mut self) {
        while let Some(TaggedRTCMessage { now, message }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let track_id = track_id.to_string();
                    let kind = match self.track_kinds.get(&track_id) {
                        Some(kind) => *kind,
                        // Before OnTrack was seen (should not happen): go by payload type.
                        None if packet.header.payload_type == OPUS_PAYLOAD_TYPE => MediaKind::Audio,
                        None => MediaKind::Video,
                    };
                    if self.role == Role::Publisher {
                        self.note_error(format!("the publisher received RTP on track {track_id}"));
                        continue;
                    }
                    self.lock().received.push(ReceivedPacket {
                        kind,
                        track_id,
                        sequence_number: packet.header.sequence_number,
                        timestamp: packet.header.timestamp,
                        ssrc: packet.header.ssrc,
                        payload_type: packet.header.payload_type,
                        marker: packet.header.marker,
                        payload: packet.payload,
                        arrival: now,
                    });
                }
                RTCMessage::RtcpPacket(_track_id, packets) => {
                    for packet in &packets {
                        let any = packet.as_any();
                        let kind = if any.downcast_ref::<PictureLossIndication>().is_some() {
                            KeyframeRequestKind::Pli
                        } else if any.downcast_ref::<FullIntraRequest>().is_some() {
                            KeyframeRequestKind::Fir
                        } else {
                            continue;
                        };
                        self.lock()
                            .keyframe_requests
                            .push(KeyframeRequest { kind, at: now });
                        self.source.request_keyframe();
                    }
                }
                _ => {}
            }
        }
    }

    fn send_video_frame(&mut self) {
        let elapsed = self.media_started.map(|t| t.elapsed()).unwrap_or_default();
        for packet in self.source.next_video_frame(elapsed) {
            self.send(packet);
        }
    }

    fn send_audio_packet(&mut self) {
        let elapsed = self.media_started.map(|t| t.elapsed()).unwrap_or_default();
        let packet = self.source.next_audio_packet(elapsed);
        self.send(packet);
    }

    fn send(&mut self, packet: SyntheticPacket) {
        let Some(output) = self.outputs.iter().find(|o| o.kind == packet.kind).copied() else {
            self.note_error(format!("no {:?} sender", packet.kind));
            return;
        };
        let rtp_packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                marker: packet.marker,
                payload_type: output.payload_type,
                sequence_number: packet.sequence_number,
                timestamp: packet.timestamp,
                ssrc: output.ssrc,
                ..Default::default()
            },
            payload: packet.payload.clone(),
        };
        let now = Instant::now();
        let result = match self.pc.rtp_sender(output.id) {
            Some(mut sender) => sender.write_rtp(now, rtp_packet).map_err(|e| e.to_string()),
            None => Err("sender not found".to_owned()),
        };
        match result {
            Ok(()) => self.lock().sent.push(SentPacket {
                kind: packet.kind,
                sequence_number: packet.sequence_number,
                timestamp: packet.timestamp,
                marker: packet.marker,
                keyframe_start: packet.keyframe_start,
                payload: packet.payload,
                at: now,
            }),
            Err(e) => self.note_error(format!("write_rtp {:?}: {e}", packet.kind)),
        }
    }

    fn note_error(&self, error: String) {
        let mut record = self.lock();
        // Bounded: a peer that fails on every packet must not eat the memory.
        if record.errors.len() < 1000 {
            record.errors.push(error);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}
