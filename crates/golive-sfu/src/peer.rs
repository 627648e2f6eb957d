//! The one module that speaks `rtc`: a WebRTC peer connection as the SFU needs it.
//!
//! Everything `rtc`-specific (settings that make it an ICE-lite SFU leg, the interceptor
//! chain, codec registration, and the fixes that running it against Chromium, aiortc and werift
//! called for, each explained where it is made) lives here, so the rest of the core speaks in
//! streams, tracks and packets.

use bytes::{Bytes, BytesMut};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    NackGeneratorBuilder, ReceiverReportBuilder, Registry, SenderReportBuilder, Slot,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::SfuError;
use crate::codec::{Codec, MediaKind, StreamMedia};
use crate::simulcast::Layer;

/// An ICE-lite agent counts only incoming STUN as liveness, not media. With `rtc`'s default
/// 5 s, aiortc and werift peers flapped between connected and disconnected (werift: 139 flaps
/// over 50 viewers in 40 s; Chromium did not); these generous timeouts keep them steady, and a
/// peer silent this long is gone.
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(15);
pub(crate) const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(30);
/// `rtc`'s default NACK generator asks for every lost packet again every 100 ms with no cap,
/// and a packet recovered through RTX is not marked received on its primary SSRC: at 3 % loss
/// Chromium sent about twice its traffic again as retransmissions. Two asks per packet repair
/// the loss (63 NACKs, 0 lost at the viewer in the same run).
const MAX_NACKS_PER_PACKET: u16 = 2;
/// The SSRC our own RTCP feedback (PLI) is sent from.
const FEEDBACK_SSRC: u32 = 1;
/// `rtc`'s SRTP context makes a state for every SSRC it is shown, before it checks the
/// authentication tag: unauthenticated datagrams with ever new SSRCs would grow it without
/// bound. A peer may use this many distinct SSRCs (browsers use 2 to 6); datagrams naming more are
/// dropped before `rtc` sees them.
pub(crate) const MAX_SSRCS_PER_PEER: usize = 16;
/// A hostile NACK can name thousands of packets; more than this in one feedback is not loss a
/// retransmission repairs.
pub(crate) const MAX_NACKED_PER_FEEDBACK: usize = 256;
/// Large enough for any RTP packet a browser sends.
const RECEIVE_MTU: usize = 1500;

/// How a peer's SRTP is negotiated.
#[derive(Debug, Clone, Copy, Default)]
pub struct SrtpPolicy {
    /// Also accept AES_CM_128_HMAC_SHA1_80 (older clients). Off by default: as DTLS server
    /// `rtc` follows the client's order, and Chromium lists it first, so it would be picked
    /// over AES-GCM, which costs a quarter as much per packet.
    pub allow_legacy_cm: bool,
}

/// What a peer tells the SFU.
#[derive(Debug)]
pub(crate) enum PeerEvent {
    Connected,
    /// ICE failed or the connection closed: the peer is gone.
    Failed,
}

/// The SSRC a keyframe request (PLI or FIR) names: `None` when the packet is no keyframe
/// request, `Some(None)` for a FIR without an entry.
pub(crate) fn keyframe_request_ssrc(any: &dyn std::any::Any) -> Option<Option<u32>> {
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        Some(Some(pli.media_ssrc))
    } else {
        any.downcast_ref::<FullIntraRequest>()
            .map(|fir| fir.fir.first().map(|e| e.ssrc))
    }
}

/// Media and feedback a peer received.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A broadcaster's packet, with the simulcast layer its SSRC was bound to by its rid
    /// (`None`: no rid named this SSRC).
    Rtp {
        packet: rtc::rtp::Packet,
        layer: Option<Layer>,
    },
    /// The remote asked for a keyframe (PLI or FIR) of the stream it names (`None`: a FIR
    /// without an entry).
    KeyframeRequest { media_ssrc: Option<u32> },
    /// A viewer's transport-wide congestion control feedback (lean leg, where negotiated).
    Twcc(Box<rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc>),
    /// A viewer's receiver-estimated maximum bitrate (lean leg, where negotiated).
    Remb { bitrate_bps: f64 },
    /// The remote lost these packets of the stream we send from `media_ssrc`.
    Nack { media_ssrc: u32, seqs: Vec<u16> },
}

/// How one datagram from a peer's bound address fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatagramVerdict {
    /// Well-formed as far as the stack could tell.
    Accepted,
    /// Not a WebRTC protocol at all (RFC 7983 first byte), or SRTP/SRTCP that did not decrypt
    /// and parse once the session was up.
    Garbage,
}

/// RFC 7983 §7: the first byte tells STUN, DTLS and (S)RTP/(S)RTCP apart.
fn is_stun_byte(b: u8) -> bool {
    b <= 3
}
fn is_dtls_byte(b: u8) -> bool {
    (20..=63).contains(&b)
}
fn is_rtp_byte(b: u8) -> bool {
    (128..=191).contains(&b)
}

pub(crate) struct Peer {
    pc: RTCPeerConnection,
    local_addr: SocketAddr,
    pub(crate) ufrag: String,
    pub(crate) remote_addrs: Vec<SocketAddr>,
    /// The SSRCs we send from, per kind (viewers only).
    pub(crate) send_ssrc: [Option<u32>; 2],
    /// The RTX SSRC and payload type per kind, where the viewer negotiated RTX.
    pub(crate) rtx: [Option<(u32, u8)>; 2],
    /// RTP and RTCP packets that came through SRTP intact (counted by [`FeedbackToApp`]).
    decrypted: Arc<AtomicU64>,
    /// The SSRCs this peer's SRTP/SRTCP named so far (bounded, see [`MAX_SSRCS_PER_PEER`]).
    ssrcs: Vec<u32>,
    /// Feedback read from one compound RTCP packet, not yet handed out.
    pending: std::collections::VecDeque<Inbound>,
    /// Connection events taken from `rtc` ahead of the application asking (see
    /// [`Peer::take_events`]).
    events: std::collections::VecDeque<PeerEvent>,
    /// A broadcaster's simulcast rids, lowest layer first (empty without simulcast).
    rids: Vec<String>,
    /// Which layer each simulcast SSRC carries, as `rtc` bound them by their rid.
    layers: Vec<(u32, Layer)>,
    connected: bool,
    failed: bool,
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

fn rtc_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

fn fb(typ: &str, parameter: &str) -> RTCPFeedback {
    RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    }
}

fn rtc_codec(c: &Codec) -> RTCRtpCodec {
    let rtcp_feedback = match c.kind {
        MediaKind::Video => vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
        MediaKind::Audio => vec![],
    };
    RTCRtpCodec {
        mime_type: c.mime_type(),
        clock_rate: c.clock_rate,
        channels: c.channels,
        sdp_fmtp_line: c.fmtp.clone(),
        rtcp_feedback,
    }
}

fn media_engine(media: &StreamMedia) -> Result<MediaEngine, SfuError> {
    let mut me = MediaEngine::default();
    for c in [&media.audio, &media.video].into_iter().flatten() {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: rtc_codec(c),
                payload_type: c.payload_type,
            },
            rtc_kind(c.kind),
        )
        .map_err(internal)?;
    }
    Ok(me)
}

fn internal(e: impl std::fmt::Display) -> SfuError {
    SfuError::Internal(e.to_string())
}

/// `rtc` reports a malformed offer from deep inside; anything it refuses at
/// set_remote_description is the offer's fault.
fn bad_sdp(e: impl std::fmt::Display) -> SfuError {
    SfuError::BadSdp(e.to_string())
}

/// Random ICE credentials: the ufrag names the peer in the demultiplexer.
fn ice_credentials() -> (String, String) {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let mut rng = rand::rng();
    let mut word = |n: usize| -> String {
        (&mut rng)
            .sample_iter(Alphanumeric)
            .take(n)
            .map(char::from)
            .collect()
    };
    (word(16), word(32))
}

/// `rtc` 0.21 ends inbound RTCP at the interceptor chain's terminus unless an interceptor marks
/// a packet `DeliverToApplication` (by design: see rtc-interceptor's `noop.rs`). Without this, a
/// viewer's PLI/FIR/NACK never reached the SFU. It marks only those; reports stay with the
/// interceptors that act on them. NACKs come to the SFU because it answers them from one history
/// per source instead of `rtc`'s NackResponder, which keeps a send buffer per viewer. `rtc` has no
/// slot for application interceptors, so it takes the one nearest the application
/// (`JitterBuffer`), which the SFU never uses. It also counts every packet that came through
/// SRTP intact, so the peer can tell garbage from media.
#[derive(Default)]
struct FeedbackToApp {
    reads: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    writes: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    decrypted: Arc<AtomicU64>,
}

impl Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()>
    for FeedbackToApp
{
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;
    fn handle_read(&mut self, mut msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        self.decrypted.fetch_add(1, Ordering::Relaxed);
        if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>()
                    || any.is::<FullIntraRequest>()
                    || any.is::<TransportLayerNack>()
            })
        {
            msg.message
                .add(rtc::interceptor::Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.writes.pop_front()
    }
    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl rtc::interceptor::Interceptor for FeedbackToApp {
    fn bind_local_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
}

/// The roles a peer plays.
pub(crate) enum Role<'a> {
    /// Receives the broadcaster's media: the stream's codecs, with the offer's payload types,
    /// and its simulcast rids, lowest layer first (empty without simulcast).
    Publisher {
        media: &'a StreamMedia,
        rids: &'a [String],
    },
    /// Sends the stream to a viewer: the viewer's own codecs (payload types), our SSRCs, and
    /// the viewer's RTX payload type for video, if it offered RTX.
    Viewer {
        codecs: &'a StreamMedia,
        video_rtx_pt: Option<u8>,
    },
}

impl Peer {
    /// Answers `offer`; returns the peer and the answer SDP, which holds our candidate in every
    /// m-section.
    pub(crate) fn new(
        now: Instant,
        local_addr: SocketAddr,
        srtp: SrtpPolicy,
        offer: &str,
        role: Role<'_>,
    ) -> Result<(Self, String), SfuError> {
        let (ufrag, pwd) = ice_credentials();
        let mut profiles = vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm];
        if srtp.allow_legacy_cm {
            profiles.push(SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80);
        }
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_answering_dtls_role(RTCDtlsRole::Server)
            .with_ice_credentials(ufrag.clone(), pwd)
            .with_ice_timeouts(
                Some(ICE_DISCONNECTED_TIMEOUT),
                Some(ICE_FAILED_TIMEOUT),
                None,
            )
            .with_srtp_protection_profiles(profiles)
            .with_receive_mtu(RECEIVE_MTU)
            .build();

        let media = match &role {
            Role::Publisher { media, .. } => *media,
            Role::Viewer { codecs, .. } => *codecs,
        };
        let mut me = media_engine(media)?;
        let rtx_pt = match &role {
            Role::Viewer {
                codecs,
                video_rtx_pt: Some(pt),
            } => codecs.video.as_ref().map(|v| (v.payload_type, *pt)),
            _ => None,
        };
        if let Some((apt, pt)) = rtx_pt {
            me.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: "video/rtx".to_owned(),
                        clock_rate: 90_000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={apt}"),
                        rtcp_feedback: vec![],
                    },
                    payload_type: pt,
                },
                RtpCodecKind::Video,
            )
            .map_err(internal)?;
        }
        let decrypted = Arc::new(AtomicU64::new(0));
        let feedback = FeedbackToApp {
            decrypted: decrypted.clone(),
            ..Default::default()
        };
        let registry = match role {
            Role::Publisher { .. } => {
                // The broadcaster's encoder adapts to TWCC feedback; MID lets `rtc` map SSRCs
                // that the offer does not list.
                configure_simulcast_extension_headers(&mut me).map_err(internal)?;
                // Accepted where offered, so the capture time can be passed on to viewers.
                for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                    me.register_header_extension(
                        RTCRtpHeaderExtensionCapability {
                            uri: crate::codec::ABS_CAPTURE_TIME_URI.to_owned(),
                        },
                        kind,
                        None,
                    )
                    .map_err(internal)?;
                }
                let r = Registry::new()
                    .with(
                        Slot::NackGenerator,
                        NackGeneratorBuilder::new()
                            .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                            .build(),
                    )
                    .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
                    .with(Slot::JitterBuffer, feedback);
                configure_twcc_receiver_only(r, &mut me).map_err(internal)?
            }
            // No NackResponder: the SFU answers NACKs from its per-source history.
            Role::Viewer { .. } => Registry::new()
                .with(Slot::JitterBuffer, feedback)
                .with(Slot::SenderReport, SenderReportBuilder::new().build()),
        };

        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)
            .map_err(internal)?;

        let rids = match &role {
            Role::Publisher { rids, .. } => rids.to_vec(),
            Role::Viewer { .. } => Vec::new(),
        };
        let mut send_ssrc = [None, None];
        let mut rtx = [None, None];
        if let Role::Viewer { codecs, .. } = role {
            for c in [&codecs.audio, &codecs.video].into_iter().flatten() {
                let ssrc = loop {
                    let s: u32 = rand::random();
                    if s > FEEDBACK_SSRC && Some(s) != send_ssrc[0] {
                        break s;
                    }
                };
                send_ssrc[kind_index(c.kind)] = Some(ssrc);
                let rtx_params = match (c.kind, rtx_pt) {
                    (MediaKind::Video, Some((_, pt))) => {
                        let rtx_ssrc = ssrc.wrapping_add(1).max(FEEDBACK_SSRC + 1);
                        rtx[kind_index(c.kind)] = Some((rtx_ssrc, pt));
                        Some(RTCRtpRtxParameters { ssrc: rtx_ssrc })
                    }
                    _ => None,
                };
                let track = MediaStreamTrack::new(
                    "golive".to_owned(),
                    format!("golive-{}", c.kind),
                    format!("golive-{}", c.kind),
                    rtc_kind(c.kind),
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(ssrc),
                            rtx: rtx_params,
                            ..Default::default()
                        },
                        codec: rtc_codec(c),
                        ..Default::default()
                    }],
                );
                pc.add_track(track).map_err(internal)?;
            }
        }

        let offer = RTCSessionDescription::offer(offer.to_owned()).map_err(bad_sdp)?;
        pc.set_remote_description(now, offer).map_err(bad_sdp)?;

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
        .new_candidate_host()
        .map_err(internal)?;
        let init = RTCIceCandidate::from(&candidate)
            .to_json()
            .map_err(internal)?;
        pc.add_local_candidate(init).map_err(internal)?;
        pc.add_local_candidate(RTCIceCandidateInit::default())
            .map_err(internal)?;
        let answer = pc.create_answer(None).map_err(bad_sdp)?;
        pc.set_local_description(now, answer).map_err(internal)?;
        let answer = pc
            .local_description()
            .ok_or_else(|| internal("no local description after set_local_description"))?;
        let sdp = candidates_in_every_section(&answer.sdp);

        Ok((
            Self {
                pc,
                local_addr,
                ufrag,
                remote_addrs: Vec::new(),
                send_ssrc,
                rtx,
                decrypted,
                ssrcs: Vec::new(),
                pending: std::collections::VecDeque::new(),
                events: std::collections::VecDeque::new(),
                rids,
                layers: Vec::new(),
                connected: false,
                failed: false,
            },
            sdp,
        ))
    }

    pub(crate) fn add_remote_candidate(
        &mut self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> Result<(), SfuError> {
        self.pc
            .add_remote_candidate(RTCIceCandidateInit {
                candidate,
                sdp_mid,
                sdp_mline_index,
                ..Default::default()
            })
            .map_err(|e| SfuError::BadCandidate(e.to_string()))
    }

    /// Feeds one datagram to the stack and tells whether it was garbage. `rtc` only logs what it
    /// refuses, so garbage is told by the first byte (RFC 7983) and, for SRTP once the session is
    /// up, by whether a packet came out of decryption.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> DatagramVerdict {
        let Some(&first) = data.first() else {
            return DatagramVerdict::Garbage;
        };
        if !(is_stun_byte(first) || is_dtls_byte(first) || is_rtp_byte(first)) {
            return DatagramVerdict::Garbage;
        }
        let srtp = is_rtp_byte(first);
        if srtp && !self.connected {
            // Media before the session is up cannot be decrypted; `rtc` would only log it.
            return DatagramVerdict::Garbage;
        }
        if srtp {
            // RTP carries its SSRC at 8..12, RTCP (payload types 192..=223) at 4..8.
            let rtcp = data.get(1).is_some_and(|pt| (192..=223).contains(pt));
            let at = if rtcp { 4 } else { 8 };
            let Some(b) = data.get(at..at + 4) else {
                return DatagramVerdict::Garbage;
            };
            let ssrc = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            if !self.ssrcs.contains(&ssrc) {
                if self.ssrcs.len() >= MAX_SSRCS_PER_PEER {
                    return DatagramVerdict::Garbage;
                }
                self.ssrcs.push(ssrc);
            }
        }
        let before = self.decrypted.load(Ordering::Relaxed);
        let r = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        });
        if let Err(e) = r {
            tracing::debug!(ufrag = %self.ufrag, "datagram refused: {e}");
            return DatagramVerdict::Garbage;
        }
        if srtp && self.decrypted.load(Ordering::Relaxed) == before {
            return DatagramVerdict::Garbage;
        }
        DatagramVerdict::Accepted
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Err(e) = self.pc.handle_timeout(now) {
            tracing::debug!(ufrag = %self.ufrag, "timeout handling failed: {e}");
        }
    }

    pub(crate) fn poll_timeout(&mut self) -> Option<Instant> {
        self.pc.poll_timeout()
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.pc
            .poll_write()
            .map(|m| (m.transport.peer_addr, m.message))
    }

    pub(crate) fn poll_event(&mut self) -> Option<PeerEvent> {
        self.take_events();
        self.events.pop_front()
    }

    /// Takes `rtc`'s events as they come: connection state changes become [`PeerEvent`]s, and
    /// a simulcast stream's opening tells which SSRC carries which rid. `rtc` queues that
    /// opening when the stream's first packet is read, in a queue apart from the packets, so
    /// this runs before every packet is handed out: the packet's layer is known by then.
    fn take_events(&mut self) {
        while let Some(ev) = self.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected if !self.connected => {
                        self.connected = true;
                        self.events.push_back(PeerEvent::Connected);
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                        if !self.failed =>
                    {
                        self.failed = true;
                        self.events.push_back(PeerEvent::Failed);
                    }
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let layer = init
                        .rid
                        .as_ref()
                        .and_then(|rid| self.rids.iter().position(|r| r == rid));
                    if let Some(layer) = layer {
                        // A rid names one SSRC at a time (an encoder restarted with a new one):
                        // packets of the SSRC it named before no longer have a layer.
                        let layer = Layer(layer as u8);
                        self.layers
                            .retain(|(ssrc, l)| *ssrc != init.ssrc && *l != layer);
                        self.layers.push((init.ssrc, layer));
                    }
                }
                _ => {}
            }
        }
    }

    /// The layer a broadcaster's SSRC carries: the lowest for a broadcaster without simulcast,
    /// the one its rid names otherwise.
    fn layer_of(&self, ssrc: u32) -> Option<Layer> {
        if self.rids.is_empty() {
            return Some(Layer::LOWEST);
        }
        self.layers
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map(|(_, layer)| *layer)
    }

    pub(crate) fn poll_inbound(&mut self) -> Option<Inbound> {
        if let Some(i) = self.pending.pop_front() {
            return Some(i);
        }
        loop {
            let TaggedRTCMessage { message, .. } = self.pc.poll_read()?;
            match message {
                RTCMessage::RtpPacket(_, packet) => {
                    self.take_events();
                    let layer = self.layer_of(packet.header.ssrc);
                    return Some(Inbound::Rtp { packet, layer });
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    // One compound packet may carry a PLI and NACKs together.
                    for p in &packets {
                        let any = p.as_any();
                        if let Some(media_ssrc) = keyframe_request_ssrc(any) {
                            self.pending
                                .push_back(Inbound::KeyframeRequest { media_ssrc });
                        } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                            let seqs = nack
                                .nacks
                                .iter()
                                .flat_map(|pair| pair.packet_list())
                                .take(MAX_NACKED_PER_FEEDBACK)
                                .collect();
                            self.pending.push_back(Inbound::Nack {
                                media_ssrc: nack.media_ssrc,
                                seqs,
                            });
                        }
                    }
                    if let Some(i) = self.pending.pop_front() {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Sends one RTP packet. The caller guarantees the SSRC and payload type are this peer's
    /// negotiated ones and that the packet carries no header extension; that is why this goes
    /// straight to the pipeline instead of through `RTCRtpSender::write_rtp`, which re-checks
    /// all three and allocates per packet.
    pub(crate) fn send_rtp(&mut self, now: Instant, header: rtc::rtp::Header, payload: Bytes) {
        let r = self.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(String::new(), rtc::rtp::Packet { header, payload }),
        });
        if let Err(e) = r {
            tracing::trace!(ufrag = %self.ufrag, "RTP not sent: {e}");
        }
    }

    /// Asks this peer (a broadcaster) for a keyframe of `media_ssrc`.
    pub(crate) fn send_pli(&mut self, now: Instant, media_ssrc: u32) {
        let pli = PictureLossIndication {
            sender_ssrc: FEEDBACK_SSRC,
            media_ssrc,
        };
        let r = self.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtcpPacket(String::new(), vec![Box::new(pli)]),
        });
        if let Err(e) = r {
            tracing::debug!(ufrag = %self.ufrag, "PLI not sent: {e}");
        }
    }

    pub(crate) fn close(&mut self) {
        if let Err(e) = self.pc.close() {
            tracing::debug!(ufrag = %self.ufrag, "close: {e}");
        }
    }
}

/// `rtc` puts the candidates only in the first m-section; aiortc (max-bundle with several
/// m-lines) then never sends a packet. Copy them into every accepted section.
pub(crate) fn candidates_in_every_section(sdp: &str) -> String {
    let lines: Vec<&str> = sdp.lines().collect();
    let candidate_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=candidate:") || *l == "a=end-of-candidates")
        .collect();
    // Split into the session part and the m-sections.
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for l in &lines {
        if l.starts_with("m=") {
            sections.push(Vec::new());
        }
        sections.last_mut().expect("never empty").push(l);
    }
    let mut out = String::with_capacity(sdp.len() + 256);
    for (i, section) in sections.iter().enumerate() {
        for l in section {
            out.push_str(l);
            out.push_str("\r\n");
        }
        let rejected = section
            .first()
            .and_then(|m| m.split_whitespace().nth(1))
            .is_some_and(|port| port == "0");
        let has_candidates = section.iter().any(|l| l.starts_with("a=candidate:"));
        if i > 0 && !rejected && !has_candidates {
            for l in &candidate_lines {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_copied_into_sections_that_lack_them() {
        let sdp = "v=0\r\ns=-\r\nm=audio 9 UDP 111\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\na=end-of-candidates\r\nm=video 9 UDP 96\r\na=mid:1\r\nm=video 0 UDP 96\r\na=mid:2\r\n";
        let out = candidates_in_every_section(sdp);
        let sections: Vec<&str> = out.split("m=").collect();
        assert_eq!(sections.len(), 4);
        assert_eq!(sections[1].matches("a=candidate:").count(), 1);
        assert_eq!(sections[2].matches("a=candidate:").count(), 1);
        assert!(sections[2].contains("a=end-of-candidates"));
        assert_eq!(
            sections[3].matches("a=candidate:").count(),
            0,
            "rejected section stays bare"
        );
    }
}
