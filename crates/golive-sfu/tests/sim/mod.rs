//! A simulated network for driving the sans-IO SFU core with in-process WebRTC clients.
//!
//! Every client is a full (not lite) `rtc` peer connection that makes the offer, with its own
//! made-up address `127.0.0.1:<port>`; no socket is ever opened. The test loop advances a
//! simulated clock by a fixed step and, at each step, fires whichever deadlines are due
//! (the SFU's and every client's), lets publishers emit the media that is due, and moves every
//! datagram between the SFU and the clients in memory, with no latency and no loss, until
//! nobody has anything left to send.
//!
//! Each client's link can be made lossy (per direction, SRTP only: the handshake is left alone),
//! delayed, or stalled (the "shell" then queues what the SFU sends that client, bounded, and
//! reports the backlog to the SFU as a real shell would); see [`Link`].
//!
//! Publishers send synthetic VP8 (RFC 7741 descriptor and frame tag) and Opus; every payload
//! carries a unique counter at bytes 4..12, and the simulation keeps every payload it sent, so a
//! viewer checks each packet it receives byte for byte without keeping the bytes itself.
#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use golive_proto::StreamName;
use golive_sfu::{MediaOptions, Output, PeerId, Sfu, SfuConfig, SrtpPolicy, StreamMedia};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder,
    Packet as InterceptorPacket, Registry, Slot, StreamInfo, TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
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
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const SFU_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4000);
/// The simulated clock's tick.
pub const STEP: Duration = Duration::from_millis(1);

pub const VIDEO_CLOCK: u32 = 90_000;
pub const AUDIO_CLOCK: u32 = 48_000;
/// The publisher's payload types, and the (different) ones every viewer offers: the SFU must
/// rewrite them.
pub const PUB_VP8_PT: u8 = 96;
pub const PUB_OPUS_PT: u8 = 111;
pub const VIEWER_VP8_PT: u8 = 120;
pub const VIEWER_OPUS_PT: u8 = 109;

pub const VIDEO_FPS: u64 = 30;
pub const AUDIO_PACKETS_PER_S: u64 = 50;
/// A keyframe is this many packets; a delta frame one.
pub const KEYFRAME_PACKETS: usize = 3;
const VIDEO_PACKET_BYTES: usize = 900;
const AUDIO_PACKET_BYTES: usize = 120;
/// How often a viewer client NACKs one lost packet (browsers go on for longer).
const VIEWER_MAX_NACKS: u16 = 10;
/// Where a payload's unique counter sits.
const COUNTER_AT: usize = 4;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

/// A packet a publisher sent.
#[derive(Debug, Clone)]
pub struct Sent {
    pub kind: Kind,
    pub at: Instant,
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub counter: u64,
    pub keyframe_start: bool,
}

/// A packet a viewer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub kind: Kind,
    pub at: Instant,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub pt: u8,
    pub marker: bool,
    /// The payload's counter, or `None` when the payload was not one any publisher sent.
    pub counter: Option<u64>,
    /// The payload equals, byte for byte, what the publisher sent under that counter.
    pub exact: bool,
    /// VP8 descriptor S bit set and frame tag says keyframe.
    pub keyframe_start: bool,
}

/// What a publisher is sending.
#[derive(Debug)]
pub struct MediaPlan {
    pub video_sender: RTCRtpSenderId,
    pub audio_sender: RTCRtpSenderId,
    pub video_ssrc: u32,
    pub audio_ssrc: u32,
    /// Stream tag written into every payload, so a viewer of another stream is caught.
    pub tag: u32,
    pub sending: bool,
    pub started_at: Option<Instant>,
    pub frames: u64,
    pub audio_packets: u64,
    pub video_seq: u16,
    pub audio_seq: u16,
    /// A natural keyframe every this many frames (the first frame is always one).
    pub gop_frames: u64,
    pub answer_pli: bool,
    pub keyframe_requested: bool,
    pub sent: Vec<Sent>,
    pub write_errors: u64,
}

#[derive(Debug)]
pub enum Role {
    Publisher(Box<MediaPlan>),
    Viewer,
}

pub struct Client {
    pub id: PeerId,
    pub stream: StreamName,
    pub addr: SocketAddr,
    /// The ICE ufrag the SFU chose for this peer (from its answer).
    pub sfu_ufrag: String,
    pub pc: RTCPeerConnection,
    pub role: Role,
    pub connected_at: Option<Instant>,
    pub failed: bool,
    pub deadline: Option<Instant>,
    pub received: Vec<Received>,
    pub rtcp_packets: u64,
    /// Instants the client received a PLI or FIR (publishers care).
    pub plis: Vec<Instant>,
    pub read_errors: u64,
    /// SRTCP datagrams that reached the client (by their plaintext header), decryptable or not.
    pub rtcp_datagrams: u64,
    /// Receiver track id → kind (viewers).
    track_kinds: HashMap<String, Kind>,
}

impl Client {
    pub fn is_publisher(&self) -> bool {
        matches!(self.role, Role::Publisher(_))
    }

    pub fn plan(&self) -> &MediaPlan {
        match &self.role {
            Role::Publisher(p) => p,
            Role::Viewer => panic!("{} is not a publisher", self.id),
        }
    }

    pub fn plan_mut(&mut self) -> &mut MediaPlan {
        match &mut self.role {
            Role::Publisher(p) => p,
            Role::Viewer => panic!("{} is not a publisher", self.id),
        }
    }

    pub fn received_of(&self, kind: Kind) -> Vec<&Received> {
        self.received.iter().filter(|r| r.kind == kind).collect()
    }

    /// Sends a PLI for the video it receives (the SFU's SSRC) through its rtc receiver.
    pub fn send_pli(&mut self, now: Instant) -> bool {
        let Some(media_ssrc) = self.received_of(Kind::Video).first().map(|r| r.ssrc) else {
            return false;
        };
        let receivers: Vec<RTCRtpReceiverId> = self.pc.get_receivers().collect();
        for rid in receivers {
            let Some(mut r) = self.pc.rtp_receiver(rid) else {
                continue;
            };
            if r.track().kind() != RtpCodecKind::Video {
                continue;
            }
            let pli = PictureLossIndication {
                sender_ssrc: 0x7777,
                media_ssrc,
            };
            r.write_rtcp(now, vec![Box::new(pli)]).expect("write_rtcp");
            return true;
        }
        false
    }

    fn read(&mut self, now: Instant, data: BytesMut) {
        if data.len() >= 2 && (128..192).contains(&data[0]) && (200..=206).contains(&data[1]) {
            self.rtcp_datagrams += 1;
        }
        let r = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.addr,
                peer_addr: SFU_ADDR,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        });
        if r.is_err() {
            self.read_errors += 1;
        }
    }

    /// Drains everything the client produced after an input.
    fn drain(
        &mut self,
        now: Instant,
        payloads: &HashMap<u64, Bytes>,
        out: &mut VecDeque<(SocketAddr, BytesMut)>,
    ) {
        while let Some(m) = self.pc.poll_write() {
            if m.transport.peer_addr == SFU_ADDR {
                out.push_back((self.addr, m.message));
            }
        }
        while let Some(ev) = self.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                match s {
                    RTCPeerConnectionState::Connected if self.connected_at.is_none() => {
                        self.connected_at = Some(now);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        self.failed = true;
                    }
                    _ => {}
                }
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let kind = self.kind_of_track(&track_id);
                    let p = &packet.payload;
                    let counter = p
                        .get(COUNTER_AT..COUNTER_AT + 8)
                        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
                    let exact = counter
                        .and_then(|c| payloads.get(&c))
                        .is_some_and(|sent| sent == p);
                    self.received.push(Received {
                        kind,
                        at: now,
                        seq: packet.header.sequence_number,
                        ts: packet.header.timestamp,
                        ssrc: packet.header.ssrc,
                        pt: packet.header.payload_type,
                        marker: packet.header.marker,
                        counter: counter.filter(|c| payloads.contains_key(c)),
                        exact,
                        keyframe_start: is_vp8_keyframe_start(p),
                    });
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    self.rtcp_packets += packets.len() as u64;
                    let wants_keyframe = packets.iter().any(|p| {
                        let any = p.as_any();
                        any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                    });
                    if wants_keyframe {
                        self.plis.push(now);
                        if let Role::Publisher(plan) = &mut self.role
                            && plan.answer_pli
                        {
                            plan.keyframe_requested = true;
                        }
                    }
                }
                _ => {}
            }
        }
        self.deadline = self.pc.poll_timeout();
    }

    fn kind_of_track(&mut self, track_id: &str) -> Kind {
        if let Some(k) = self.track_kinds.get(track_id) {
            return *k;
        }
        let receivers: Vec<RTCRtpReceiverId> = self.pc.get_receivers().collect();
        for rid in receivers {
            if let Some(r) = self.pc.rtp_receiver(rid) {
                let kind = match r.track().kind() {
                    RtpCodecKind::Video => Kind::Video,
                    _ => Kind::Audio,
                };
                self.track_kinds
                    .insert(r.track().track_id().to_string(), kind);
            }
        }
        *self
            .track_kinds
            .get(track_id)
            .unwrap_or_else(|| panic!("RTP on unknown track {track_id}"))
    }

    /// Emits the media that is due by `now`; returns the payloads it sent, by counter.
    fn produce(
        &mut self,
        now: Instant,
        counter: &mut u64,
        payloads: &mut HashMap<u64, Bytes>,
        keep: bool,
    ) {
        let Role::Publisher(plan) = &mut self.role else {
            return;
        };
        if !plan.sending || self.connected_at.is_none() {
            return;
        }
        let start = *plan.started_at.get_or_insert(now);
        let mut packets: Vec<(RTCRtpSenderId, rtc::rtp::Packet)> = Vec::new();
        // Audio first for each instant; the order between the tracks does not matter.
        while start + Duration::from_micros(plan.audio_packets * 1_000_000 / AUDIO_PACKETS_PER_S)
            <= now
        {
            *counter += 1;
            let payload = payload(*counter, plan.tag, None, AUDIO_PACKET_BYTES);
            let ts = (plan.audio_packets * u64::from(AUDIO_CLOCK) / AUDIO_PACKETS_PER_S) as u32;
            let seq = plan.audio_seq;
            plan.audio_seq = plan.audio_seq.wrapping_add(1);
            plan.audio_packets += 1;
            plan.sent.push(Sent {
                kind: Kind::Audio,
                at: now,
                seq,
                ts,
                marker: false,
                counter: *counter,
                keyframe_start: false,
            });
            if keep {
                payloads.insert(*counter, payload.clone());
            }
            packets.push((
                plan.audio_sender,
                rtp(PUB_OPUS_PT, plan.audio_ssrc, seq, ts, false, payload),
            ));
        }
        while start + Duration::from_micros(plan.frames * 1_000_000 / VIDEO_FPS) <= now {
            let keyframe = plan.frames % plan.gop_frames == 0 || plan.keyframe_requested;
            plan.keyframe_requested = false;
            let ts = (plan.frames * u64::from(VIDEO_CLOCK) / VIDEO_FPS) as u32;
            plan.frames += 1;
            let n = if keyframe { KEYFRAME_PACKETS } else { 1 };
            for i in 0..n {
                *counter += 1;
                let vp8 = if i == 0 { Some(keyframe) } else { None };
                let payload = payload(*counter, plan.tag, Some(vp8), VIDEO_PACKET_BYTES);
                let seq = plan.video_seq;
                plan.video_seq = plan.video_seq.wrapping_add(1);
                let marker = i + 1 == n;
                plan.sent.push(Sent {
                    kind: Kind::Video,
                    at: now,
                    seq,
                    ts,
                    marker,
                    counter: *counter,
                    keyframe_start: i == 0 && keyframe,
                });
                if keep {
                    payloads.insert(*counter, payload.clone());
                }
                packets.push((
                    plan.video_sender,
                    rtp(PUB_VP8_PT, plan.video_ssrc, seq, ts, marker, payload),
                ));
            }
        }
        for (sender, packet) in packets {
            let mut s = self.pc.rtp_sender(sender).expect("publisher sender");
            if s.write_rtp(now, packet).is_err() {
                plan.write_errors += 1;
            }
        }
    }
}

fn rtp(pt: u8, ssrc: u32, seq: u16, ts: u32, marker: bool, payload: Bytes) -> rtc::rtp::Packet {
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

/// A synthetic payload. `vp8`: `None` for audio; `Some(None)` a VP8 continuation packet;
/// `Some(Some(keyframe))` the first packet of a VP8 frame (descriptor S bit, then a frame tag
/// whose bit 0 is 0 for a keyframe). Bytes 4..12 are the unique counter.
pub fn payload(counter: u64, tag: u32, vp8: Option<Option<bool>>, len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(len);
    match vp8 {
        None => b.put_slice(&[0xfc, 0xff, 0xfe, 0x00]), // an Opus TOC byte and filler
        Some(None) => b.put_slice(&[0x00, 0x00, 0x00, 0x00]),
        // Frame tag: bit 0 inverse keyframe flag, bit 4 show_frame; then 2 bytes of size.
        Some(Some(true)) => b.put_slice(&[0x10, 0x10, 0x02, 0x00]),
        Some(Some(false)) => b.put_slice(&[0x10, 0x11, 0x02, 0x00]),
    }
    b.put_u64(counter);
    b.put_u32(tag);
    let mut x = counter as u32 ^ tag;
    while b.len() < len {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        b.put_u8((x >> 24) as u8);
    }
    b.freeze()
}

pub fn is_vp8_keyframe_start(p: &[u8]) -> bool {
    p.len() >= 2 && p[0] & 0x10 != 0 && p[0] & 0x07 == 0 && p[0] & 0x80 == 0 && p[1] & 0x01 == 0
}

/// rtc 0.21 ends inbound RTCP at the chain's terminus unless an interceptor marks it for the
/// application: this one marks keyframe requests, so a publisher client sees the PLIs it gets.
#[derive(Default)]
struct KeyframeRequestsToApp {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestsToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            })
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for KeyframeRequestsToApp {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

fn codec(kind: Kind, pt: u8) -> RTCRtpCodecParameters {
    match kind {
        Kind::Video => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "video/VP8".to_owned(),
                clock_rate: VIDEO_CLOCK,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![
                    RTCPFeedback {
                        typ: "nack".to_owned(),
                        parameter: String::new(),
                    },
                    RTCPFeedback {
                        typ: "nack".to_owned(),
                        parameter: "pli".to_owned(),
                    },
                ],
            },
            payload_type: pt,
        },
        Kind::Audio => RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: "audio/opus".to_owned(),
                clock_rate: AUDIO_CLOCK,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: pt,
        },
    }
}

fn rtc_kind(kind: Kind) -> RtpCodecKind {
    match kind {
        Kind::Audio => RtpCodecKind::Audio,
        Kind::Video => RtpCodecKind::Video,
    }
}

/// A full-ICE offerer with one host candidate at `addr`; `publisher` gives the SSRCs of its
/// sendonly tracks, otherwise it has recvonly audio and video.
fn new_pc(
    now: Instant,
    addr: SocketAddr,
    publisher: Option<(u32, u32)>,
) -> (RTCPeerConnection, Option<(RTCRtpSenderId, RTCRtpSenderId)>) {
    let (vpt, apt) = if publisher.is_some() {
        (PUB_VP8_PT, PUB_OPUS_PT)
    } else {
        (VIEWER_VP8_PT, VIEWER_OPUS_PT)
    };
    let mut me = MediaEngine::default();
    me.register_codec(codec(Kind::Audio, apt), RtpCodecKind::Audio)
        .expect("opus");
    me.register_codec(codec(Kind::Video, vpt), RtpCodecKind::Video)
        .expect("vp8");
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(SettingEngineBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(if publisher.is_some() {
            // Answers the SFU's NACKs for the broadcaster's lost packets.
            Registry::new()
                .with(Slot::JitterBuffer, KeyframeRequestsToApp::default())
                .with(Slot::NackResponder, NackResponderBuilder::new().build())
        } else {
            // NACKs what the viewer lost, as a browser does.
            Registry::new()
                .with(Slot::JitterBuffer, KeyframeRequestsToApp::default())
                .with(
                    Slot::NackGenerator,
                    NackGeneratorBuilder::new()
                        .with_max_nacks_per_packet(VIEWER_MAX_NACKS)
                        .build(),
                )
        })
        .build(now)
        .expect("client peer connection");
    let senders = match publisher {
        Some((video_ssrc, audio_ssrc)) => {
            let mut ids = Vec::new();
            for (kind, ssrc, pt) in [
                (Kind::Video, video_ssrc, vpt),
                (Kind::Audio, audio_ssrc, apt),
            ] {
                let track = MediaStreamTrack::new(
                    "sim".to_owned(),
                    format!("sim-{kind:?}"),
                    format!("sim-{kind:?}"),
                    rtc_kind(kind),
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            ..Default::default()
                        },
                        codec: codec(kind, pt).rtp_codec,
                        ..Default::default()
                    }],
                );
                let t = pc
                    .add_transceiver_from_track(
                        track,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Sendonly,
                            streams: vec![],
                            send_encodings: vec![],
                        }),
                    )
                    .expect("sendonly transceiver");
                ids.push(RTCRtpSenderId::from(t));
            }
            Some((ids[0], ids[1]))
        }
        None => {
            for kind in [Kind::Audio, Kind::Video] {
                pc.add_transceiver_from_kind(
                    rtc_kind(kind),
                    Some(RTCRtpTransceiverInit {
                        direction: RTCRtpTransceiverDirection::Recvonly,
                        streams: vec![],
                        send_encodings: vec![],
                    }),
                )
                .expect("recvonly transceiver");
            }
            None
        }
    };
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("host candidate");
    pc.add_local_candidate(
        RTCIceCandidate::from(&candidate)
            .to_json()
            .expect("candidate json"),
    )
    .expect("local candidate");
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .expect("end of candidates");
    (pc, senders)
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
}

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
    /// Every payload any publisher sent, by counter.
    pub payloads: HashMap<u64, Bytes>,
    counter: u64,
    to_sfu: VecDeque<(SocketAddr, BytesMut)>,
    /// (when, who) of every Output::Connected / Output::Failed.
    pub sfu_connected: HashMap<PeerId, Instant>,
    pub sfu_failed: Vec<(Instant, PeerId)>,
    /// SRTCP datagrams (by their plaintext header) clients sent to the SFU.
    pub rtcp_to_sfu: u64,
    /// Datagrams the SFU sent to an address no client has.
    pub transmits_to_nowhere: u64,
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
    rng: StdRng,
    /// Keep every payload (for byte-for-byte checks); off for long runs.
    pub keep_payloads: bool,
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
        let t0 = Instant::now();
        Self {
            t0,
            now: t0,
            sfu: Sfu::with_options(
                SfuConfig {
                    advertised_addr: SFU_ADDR,
                    srtp: SrtpPolicy::default(),
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
            payloads: HashMap::new(),
            counter: 0,
            to_sfu: VecDeque::new(),
            sfu_connected: HashMap::new(),
            sfu_failed: Vec::new(),
            rtcp_to_sfu: 0,
            transmits_to_nowhere: 0,
            removed: HashMap::new(),
            links: HashMap::new(),
            in_flight: BTreeMap::new(),
            flight_seq: 0,
            stalled_queue: HashMap::new(),
            stall_dropped: 0,
            lost_down: 0,
            lost_up: 0,
            rng: StdRng::seed_from_u64(0x5eed),
            keep_payloads: true,
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

    /// Forgets every payload and sent record (long runs that check no bytes).
    pub fn forget_history(&mut self) {
        self.payloads = HashMap::new();
        self.index.shrink_to_fit();
        self.by_addr.shrink_to_fit();
        self.sfu_connected.shrink_to_fit();
        self.removed.shrink_to_fit();
        self.clients.shrink_to_fit();
        self.to_sfu.shrink_to_fit();
        self.sfu_failed.shrink_to_fit();
        for c in &mut self.clients {
            c.received = Vec::new();
            if let Role::Publisher(p) = &mut c.role {
                p.sent = Vec::new();
            }
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
        if link.delay > Duration::ZERO {
            self.flight_seq += 1;
            self.in_flight.insert(
                (self.now + link.delay, self.flight_seq),
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
        self.clients[i].drain(now, &self.payloads, &mut self.to_sfu);
    }

    /// A publisher client of `stream`: offers, is answered by the SFU, and starts sending as
    /// soon as it is connected. Keyframes every `gop_frames` frames and on PLI.
    pub fn add_publisher(&mut self, id: PeerId, name: &str, gop_frames: u64) -> PeerId {
        let now = self.now;
        let addr = self.next_addr();
        let tag = self.next_tag;
        self.next_tag += 1;
        let (video_ssrc, audio_ssrc) = (0x1000_0000 + tag, 0x2000_0000 + tag);
        let (mut pc, senders) = new_pc(now, addr, Some((video_ssrc, audio_ssrc)));
        let (video_sender, audio_sender) = senders.expect("publisher senders");
        let offer = pc.create_offer(None).expect("offer");
        pc.set_local_description(now, offer).expect("set offer");
        let offer = pc.local_description().expect("local description").sdp;
        let answer = self
            .sfu
            .add_publisher(now, id, stream(name), &offer)
            .unwrap_or_else(|e| panic!("add_publisher: {e}\n{offer}"));
        self.media.insert(stream(name), answer.media.clone());
        let answer_sdp = answer.sdp.clone();
        pc.set_remote_description(
            now,
            RTCSessionDescription::answer(answer.sdp).expect("answer"),
        )
        .expect("set answer");
        let plan = MediaPlan {
            video_sender,
            audio_sender,
            video_ssrc,
            audio_ssrc,
            tag,
            sending: true,
            started_at: None,
            frames: 0,
            audio_packets: 0,
            video_seq: 40_000 + tag as u16 * 1000, // crosses 65535 in a long run
            audio_seq: 7,
            gop_frames,
            answer_pli: true,
            keyframe_requested: false,
            sent: Vec::new(),
            write_errors: 0,
        };
        self.register(new_client(
            id,
            stream(name),
            addr,
            &answer_sdp,
            pc,
            Role::Publisher(Box::new(plan)),
        ));
        self.pump();
        id
    }

    /// The offer a viewer client would make (for tests that mutate it).
    pub fn viewer_offer(&mut self) -> String {
        let addr = self.next_addr();
        let (mut pc, _) = new_pc(self.now, addr, None);
        let offer = pc.create_offer(None).expect("offer");
        pc.set_local_description(self.now, offer)
            .expect("set offer");
        pc.local_description().expect("local description").sdp
    }

    /// A viewer client of `stream` (whose publisher must have been added).
    pub fn add_viewer(&mut self, id: PeerId, name: &str) -> PeerId {
        let now = self.now;
        let addr = self.next_addr();
        let (mut pc, _) = new_pc(now, addr, None);
        let offer = pc.create_offer(None).expect("offer");
        pc.set_local_description(now, offer).expect("set offer");
        let offer = pc.local_description().expect("local description").sdp;
        let media = self
            .media
            .get(&stream(name))
            .expect("stream has a publisher")
            .clone();
        let answer = self
            .sfu
            .add_viewer(now, id, stream(name), &media, &offer)
            .unwrap_or_else(|e| panic!("add_viewer: {e}\n{offer}"));
        let answer_sdp = answer.sdp.clone();
        pc.set_remote_description(
            now,
            RTCSessionDescription::answer(answer.sdp).expect("answer"),
        )
        .expect("set answer");
        self.register(new_client(
            id,
            stream(name),
            addr,
            &answer_sdp,
            pc,
            Role::Viewer,
        ));
        self.pump();
        id
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
        let sent = self.clients[i].send_pli(now);
        self.drain_client(i);
        self.pump();
        sent
    }

    /// Sends one RTP packet from client `id` through its own SRTP, bypassing the sender's
    /// checks (any payload type, SSRC, extensions, payload), as a hostile or broken peer would.
    pub fn send_rtp_raw(&mut self, id: PeerId, packet: rtc::rtp::Packet) {
        let i = self.index[&id];
        let now = self.now;
        let _ = self.clients[i].pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(String::new(), packet),
        });
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
                    None => self.transmits_to_nowhere += 1,
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
                    None => self.transmits_to_nowhere += 1,
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
            if !moved {
                break;
            }
        }
    }

    /// One tick of the clock.
    pub fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        self.land();
        for i in 0..self.clients.len() {
            if self.clients[i].is_publisher() {
                let keep = self.keep_payloads;
                self.clients[i].produce(now, &mut self.counter, &mut self.payloads, keep);
                self.drain_client(i);
            }
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        for i in 0..self.clients.len() {
            if self.clients[i].deadline.is_some_and(|t| t <= now) {
                let _ = self.clients[i].pc.handle_timeout(now);
                self.drain_client(i);
            }
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
                matches!(&c.role, Role::Publisher(plan) if plan.sending && plan.sent.is_empty())
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

    pub fn set_sending(&mut self, id: PeerId, on: bool) {
        self.client_mut(id).plan_mut().sending = on;
    }
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

fn new_client(
    id: PeerId,
    stream: StreamName,
    addr: SocketAddr,
    answer: &str,
    pc: RTCPeerConnection,
    role: Role,
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
        pc,
        role,
        connected_at: None,
        failed: false,
        deadline: None,
        received: Vec::new(),
        rtcp_packets: 0,
        plis: Vec::new(),
        read_errors: 0,
        rtcp_datagrams: 0,
        track_kinds: HashMap::new(),
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
    let who = format!("{} {kind:?}", viewer.id);
    let sent: Vec<&Sent> = publisher
        .plan()
        .sent
        .iter()
        .filter(|s| s.kind == kind && sent_until.is_none_or(|t| s.at <= t))
        .collect();
    let got: Vec<&Received> = viewer
        .received_of(kind)
        .into_iter()
        .filter(|r| sent_until.is_none_or(|t| r.at <= t))
        .collect();
    assert!(!got.is_empty(), "{who}: received nothing");
    for r in &got {
        assert!(r.exact, "{who}: payload differs from what was sent: {r:?}");
    }
    let first = got[0].counter.expect("known payload");
    let k = sent
        .iter()
        .position(|s| s.counter == first)
        .unwrap_or_else(|| panic!("{who}: first packet {first} is not from this publisher"));
    let want: Vec<u64> = sent[k..].iter().map(|s| s.counter).collect();
    let have: Vec<u64> = got.iter().map(|r| r.counter.expect("known")).collect();
    if want != have {
        let missing = want.iter().filter(|c| !have.contains(c)).count();
        panic!(
            "{who}: got {} packets, expected {} from index {k}; {missing} missing; first difference at {:?}",
            have.len(),
            want.len(),
            want.iter().zip(&have).position(|(a, b)| a != b)
        );
    }
    let ssrc = got[0].ssrc;
    let pt = match kind {
        Kind::Video => VIEWER_VP8_PT,
        Kind::Audio => VIEWER_OPUS_PT,
    };
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.ssrc, ssrc, "{who}: SSRC changed at packet {i}");
        assert_eq!(r.pt, pt, "{who}: payload type at packet {i}");
        assert_eq!(r.marker, sent[k + i].marker, "{who}: marker at packet {i}");
        if i > 0 {
            let prev = got[i - 1];
            assert_eq!(
                r.seq,
                prev.seq.wrapping_add(1),
                "{who}: sequence gap at packet {i}"
            );
            assert_eq!(
                r.ts.wrapping_sub(prev.ts),
                sent[k + i].ts.wrapping_sub(sent[k + i - 1].ts),
                "{who}: timestamp spacing at packet {i}"
            );
        }
    }
    k
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
        .plan()
        .sent
        .iter()
        .filter(|s| s.kind == kind && s.at <= sent_until)
        .collect();
    let by_counter: HashMap<u64, &Sent> = sent.iter().map(|s| (s.counter, *s)).collect();
    let first = got[0].counter.expect("known payload");
    let k = sent
        .iter()
        .position(|s| s.counter == first)
        .unwrap_or_else(|| panic!("{who}: first packet is not from this publisher"));
    let offset = got[0].seq.wrapping_sub(sent[k].seq);
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for r in &got {
        assert!(r.exact, "{who}: payload differs from what was sent: {r:?}");
        let c = r.counter.expect("known");
        let Some(s) = by_counter.get(&c) else {
            continue; // sent after `sent_until`
        };
        assert_eq!(
            r.seq.wrapping_sub(s.seq),
            offset,
            "{who}: packet {c} has a sequence number off the mapping"
        );
        if !seen.insert(c) {
            duplicates += 1;
        }
    }
    let missing: Vec<u64> = sent[k..]
        .iter()
        .map(|s| s.counter)
        .filter(|c| !seen.contains(c))
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
