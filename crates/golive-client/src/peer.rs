//! The client peer: a sans-IO `rtc` peer connection that makes the offer, as a browser does to
//! golive's ICE-lite server: a full, controlling ICE agent with one host candidate (the
//! driver's socket, or a made-up address in a simulation), a viewer (recvonly audio and video)
//! or a publisher (sendonly synthetic VP8 and Opus from a [`SyntheticSource`]).
//!
//! Call order, as with any sans-IO connection: after every input ([`ClientPeer::accept_answer`],
//! [`ClientPeer::handle_datagram`], [`ClientPeer::handle_timeout`], [`ClientPeer::send_pli`])
//! drain [`ClientPeer::poll_transmit`] onto the wire and [`ClientPeer::poll_event`] into the
//! application, then sleep until [`ClientPeer::poll_timeout`] or the next datagram. The peer
//! never touches a socket, a thread or the clock: every call that needs the time takes it.

use bytes::BytesMut;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    Attribute, Interceptor, NackGeneratorBuilder, NackResponderBuilder,
    Packet as InterceptorPacket, Registry, Slot, StreamInfo, TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
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
use std::time::{Duration, Instant};

use crate::media::{
    AUDIO_CLOCK_RATE, MediaKind, SyntheticPacket, SyntheticSource, VIDEO_CLOCK_RATE,
};

/// H.264 constrained baseline 3.1, packetization mode 1: what browsers offer first.
pub const H264_FMTP: &str =
    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

/// Where the interceptor that hands keyframe requests to the application sits: application-most,
/// past every built-in slot. rtc's `Slot::JitterBuffer` (13_000) looks like the last stop, but
/// it is a real interceptor's slot and a slot holds one interceptor, so a client that registers
/// a jitter buffer would silently lose this one (or the other way round). This interceptor only
/// marks packets and emits nothing, so nothing pins it lower; a custom slot above 13_000 keeps
/// both, and lets it see inbound RTCP after every built-in interceptor has read it.
const KEYFRAME_REQUESTS_SLOT: usize = 14_000;

/// What an `rtc` call or the peer's own bookkeeping refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Rtc(#[from] rtc::shared::error::Error),
    #[error("DTLS certificate: {0}")]
    Certificate(String),
    #[error("no local description after set_local_description")]
    NoOffer,
    #[error("the {0:?} sender is gone")]
    NoSender(MediaKind),
    #[error("no video track to ask a keyframe of")]
    NoVideo,
}

/// The video codec a peer offers (a publisher always sends VP8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    /// Only H.264: a viewer that cannot decode a VP8 broadcast.
    H264,
}

/// The payload types a peer offers. The server keeps the offerer's numbers in its answer, so a
/// viewer that offers other numbers than its publisher checks the server's rewriting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTypes {
    pub vp8: u8,
    pub h264: u8,
    pub opus: u8,
}

impl Default for PayloadTypes {
    /// Chromium's numbers.
    fn default() -> Self {
        Self {
            vp8: 96,
            h264: 102,
            opus: 111,
        }
    }
}

/// Which RTCP feedback the peer runs besides handing keyframe requests to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// No NACK and no reports: a load-test viewer measures the loss the server and the network
    /// caused, not what retransmission hid, and spends its CPU on receiving.
    None,
    /// A viewer NACKs what it lost (giving up on a packet after `max_nacks_per_packet`), a
    /// publisher answers NACKs: the loss-recovery loop alone.
    Nack { max_nacks_per_packet: u16 },
    /// rtc's defaults, as a browser runs them: NACK both ways, receiver and sender reports,
    /// TWCC receiver.
    Browser,
}

/// Which SRTP profiles a peer offers in its DTLS ClientHello (the server, as DTLS server,
/// follows the client's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpOffer {
    /// AEAD_AES_128_GCM only (what golive prefers).
    Gcm,
    /// AES_CM_128_HMAC_SHA1_80 only (needs the server's `--srtp-legacy`).
    Cm,
    /// Both, CM first, in Chromium's order.
    Chromium,
}

impl SrtpOffer {
    fn profiles(self) -> Vec<SrtpProtectionProfile> {
        match self {
            SrtpOffer::Gcm => vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm],
            SrtpOffer::Cm => vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80],
            SrtpOffer::Chromium => vec![
                SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
                SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            ],
        }
    }
}

/// How the ICE agent paces its checks and when it gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceTiming {
    /// rtc's defaults.
    Default,
    /// For a loaded load tester: checks at RFC 8445's Ta of 50 ms, as browsers pace them (rtc's
    /// 200 ms would make time to first frame measure our ICE timer, not the server), enough of
    /// them to ride out a busy server for 5 s, and a disconnect only after 15 s of silence
    /// (an ICE-lite server shows liveness only in answers to our checks).
    Patient,
}

const PATIENT_ICE_DISCONNECTED: Duration = Duration::from_secs(15);
const PATIENT_ICE_FAILED: Duration = Duration::from_secs(30);
const PATIENT_ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
const PATIENT_ICE_MAX_BINDING_REQUESTS: u16 = 100;

/// What every peer of a driver has in common.
#[derive(Clone)]
pub struct PeerConfig {
    pub video_codec: VideoCodec,
    pub payload_types: PayloadTypes,
    pub feedback: Feedback,
    /// `None`: rtc's default profiles.
    pub srtp: Option<SrtpOffer>,
    pub ice: IceTiming,
    /// The DTLS certificate; `None` makes one per peer. Drivers with many peers share one:
    /// generating a key per viewer would make a ramp measure key generation.
    pub certificate: Option<RTCCertificate>,
    /// A publisher reports every packet it sends ([`PeerEvent::Sent`]) for checking against
    /// what viewers got.
    pub report_sent: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            video_codec: VideoCodec::Vp8,
            payload_types: PayloadTypes::default(),
            feedback: Feedback::Browser,
            srtp: None,
            ice: IceTiming::Default,
            certificate: None,
            report_sent: false,
        }
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("video_codec", &self.video_codec)
            .field("payload_types", &self.payload_types)
            .field("feedback", &self.feedback)
            .field("srtp", &self.srtp)
            .field("ice", &self.ice)
            .field("shared_certificate", &self.certificate.is_some())
            .field("report_sent", &self.report_sent)
            .finish()
    }
}

/// What a peer does.
#[derive(Debug)]
pub enum Role {
    /// Receives audio and video.
    Viewer,
    /// Sends `source`'s media under these SSRCs once connected.
    Publisher {
        video_ssrc: u32,
        audio_ssrc: u32,
        source: SyntheticSource,
    },
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    pub data: BytesMut,
}

/// A keyframe request (RTCP PLI or FIR) the peer received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequestKind {
    Pli,
    Fir,
}

/// What the peer tells its driver.
#[derive(Debug)]
pub enum PeerEvent {
    /// The peer connection's state changed.
    State(RTCPeerConnectionState),
    /// An RTP packet arrived (decrypted) on a track of `kind`.
    Rtp {
        kind: MediaKind,
        at: Instant,
        packet: rtc::rtp::Packet,
    },
    /// The remote asked for a keyframe; a publisher's source has been told.
    KeyframeRequest {
        kind: KeyframeRequestKind,
        at: Instant,
    },
    /// A publisher handed this packet to its sender (with [`PeerConfig::report_sent`]).
    Sent(SyntheticPacket),
    /// A publisher's packet could not be sent.
    SendFailed { kind: MediaKind, error: String },
}

/// A publisher's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    pub packets_sent: u64,
    pub payload_bytes_sent: u64,
    pub keyframes_sent: u64,
    pub keyframe_requests: u64,
    pub write_errors: u64,
}

/// One outgoing track of a publisher.
#[derive(Debug, Clone, Copy)]
struct Output {
    id: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
}

struct Publishing {
    video: Output,
    audio: Output,
    source: SyntheticSource,
    stats: PublisherStats,
    /// Reused between batches.
    batch: Vec<SyntheticPacket>,
}

/// One client peer connection. See the module docs for the call order.
pub struct ClientPeer {
    pc: RTCPeerConnection,
    local: SocketAddr,
    offer_sdp: String,
    payload_types: PayloadTypes,
    video_codec: VideoCodec,
    report_sent: bool,
    state: RTCPeerConnectionState,
    publishing: Option<Publishing>,
    events: VecDeque<PeerEvent>,
    /// Receiving track id -> kind, from `OnTrack` (for payload types we did not offer).
    track_kinds: HashMap<String, MediaKind>,
    /// The video receiver and the SSRC it receives, for the PLIs a viewer sends.
    video_receiver: Option<(RTCRtpReceiverId, u32)>,
}

impl std::fmt::Debug for ClientPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPeer")
            .field("local", &self.local)
            .field("state", &self.state)
            .field("publisher", &self.publishing.is_some())
            .finish_non_exhaustive()
    }
}

/// A DTLS certificate (ECDSA P-256) to share between peers.
pub fn certificate(name: &str) -> Result<RTCCertificate, PeerError> {
    let cert_error = |e: &dyn std::fmt::Display| PeerError::Certificate(e.to_string());
    let provider = rtc::crypto::default_provider().map_err(|e| cert_error(&e))?;
    let params = CertificateParams::new(vec![name.to_owned()]).map_err(|e| cert_error(&e))?;
    RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        params,
    )
    .map_err(|e| cert_error(&e))
}

/// A random-enough 32-bit value without a `rand` dependency or a clock (SSRCs and source ids
/// only need to differ between the peers of a run): std's per-map random hash keys.
pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u32 | 1
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect()
}

fn opus(pt: &PayloadTypes) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: AUDIO_CLOCK_RATE,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt.opus,
    }
}

fn video(codec: VideoCodec, pt: &PayloadTypes) -> RTCRtpCodecParameters {
    let (mime, fmtp, payload_type) = match codec {
        VideoCodec::Vp8 => (MIME_TYPE_VP8, "", pt.vp8),
        VideoCodec::H264 => (MIME_TYPE_H264, H264_FMTP, pt.h264),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: VIDEO_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: video_feedback(),
        },
        payload_type,
    }
}

fn interceptors(
    feedback: Feedback,
    publisher: bool,
    media_engine: &mut MediaEngine,
) -> Result<Registry, PeerError> {
    let registry = Registry::new().with(
        Slot::from(KEYFRAME_REQUESTS_SLOT),
        KeyframeRequestsToApp::default(),
    );
    Ok(match feedback {
        Feedback::None => registry,
        Feedback::Nack { .. } if publisher => {
            registry.with(Slot::NackResponder, NackResponderBuilder::new().build())
        }
        Feedback::Nack {
            max_nacks_per_packet,
        } => registry.with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(max_nacks_per_packet)
                .build(),
        ),
        Feedback::Browser => register_default_interceptors(registry, media_engine)?,
    })
}

impl ClientPeer {
    /// A peer with its offer made (its one host candidate at `local`), waiting for the answer.
    pub fn new(
        now: Instant,
        local: SocketAddr,
        config: &PeerConfig,
        role: Role,
    ) -> Result<Self, PeerError> {
        let publisher = matches!(role, Role::Publisher { .. });
        let video_codec = if publisher {
            VideoCodec::Vp8
        } else {
            config.video_codec
        };
        let pt = &config.payload_types;
        let mut media_engine = MediaEngine::default();
        media_engine.register_codec(opus(pt), RtpCodecKind::Audio)?;
        media_engine.register_codec(video(video_codec, pt), RtpCodecKind::Video)?;
        let registry = interceptors(config.feedback, publisher, &mut media_engine)?;
        let mut settings = SettingEngineBuilder::new();
        if let Some(srtp) = config.srtp {
            settings = settings.with_srtp_protection_profiles(srtp.profiles());
        }
        if config.ice == IceTiming::Patient {
            settings = settings
                .with_ice_timeouts(
                    Some(PATIENT_ICE_DISCONNECTED),
                    Some(PATIENT_ICE_FAILED),
                    None,
                )
                .with_ice_connection_attempts(
                    Some(PATIENT_ICE_CHECK_INTERVAL),
                    Some(PATIENT_ICE_MAX_BINDING_REQUESTS),
                );
        }
        let mut configuration = RTCConfigurationBuilder::new();
        if let Some(cert) = &config.certificate {
            configuration = configuration.with_certificates(vec![cert.clone()]);
        }
        // No ICE servers: every candidate is our one host candidate.
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(configuration.build())
            .with_setting_engine(settings.build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .build(now)?;

        let publishing = match role {
            Role::Publisher {
                video_ssrc,
                audio_ssrc,
                source,
            } => {
                let mut add = |kind: MediaKind, ssrc: u32| -> Result<Output, PeerError> {
                    let (codec_kind, codec, name) = match kind {
                        MediaKind::Video => {
                            (RtpCodecKind::Video, video(VideoCodec::Vp8, pt), "video")
                        }
                        MediaKind::Audio => (RtpCodecKind::Audio, opus(pt), "audio"),
                    };
                    let payload_type = codec.payload_type;
                    let track = MediaStreamTrack::new(
                        "golive-client".to_owned(),
                        format!("golive-{name}"),
                        format!("synthetic {name}"),
                        codec_kind,
                        vec![RTCRtpEncodingParameters {
                            rtp_coding_parameters: RTCRtpCodingParameters {
                                ssrc: Some(ssrc),
                                ..Default::default()
                            },
                            codec: codec.rtp_codec,
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
                    Ok(Output {
                        id: RTCRtpSenderId::from(id),
                        ssrc,
                        payload_type,
                    })
                };
                Some(Publishing {
                    video: add(MediaKind::Video, video_ssrc)?,
                    audio: add(MediaKind::Audio, audio_ssrc)?,
                    source,
                    stats: PublisherStats::default(),
                    batch: Vec::new(),
                })
            }
            Role::Viewer => {
                for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
                    pc.add_transceiver_from_kind(
                        kind,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            streams: vec![],
                            send_encodings: vec![],
                        }),
                    )?;
                }
                None
            }
        };

        // Gather: our one host candidate, then end-of-candidates, so the offer is complete.
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
        pc.add_local_candidate(RTCIceCandidateInit::default())?;
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer)?;
        let offer_sdp = pc.local_description().ok_or(PeerError::NoOffer)?.sdp;

        Ok(Self {
            pc,
            local,
            offer_sdp,
            payload_types: *pt,
            video_codec,
            report_sent: config.report_sent,
            state: RTCPeerConnectionState::New,
            publishing,
            events: VecDeque::new(),
            track_kinds: HashMap::new(),
            video_receiver: None,
        })
    }

    /// The offer, for a `publish`, a `watch`, or a WHIP/WHEP POST.
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn is_publisher(&self) -> bool {
        self.publishing.is_some()
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        self.state
    }

    pub fn is_connected(&self) -> bool {
        self.state == RTCPeerConnectionState::Connected
    }

    /// The connection failed or was closed: it will carry nothing more.
    pub fn is_over(&self) -> bool {
        matches!(
            self.state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        )
    }

    /// A publisher's media source (to pause it, or to stop it answering keyframe requests).
    pub fn source_mut(&mut self) -> Option<&mut SyntheticSource> {
        self.publishing.as_mut().map(|p| &mut p.source)
    }

    pub fn source(&self) -> Option<&SyntheticSource> {
        self.publishing.as_ref().map(|p| &p.source)
    }

    /// A publisher's SSRCs (video, audio).
    pub fn ssrcs(&self) -> Option<(u32, u32)> {
        self.publishing
            .as_ref()
            .map(|p| (p.video.ssrc, p.audio.ssrc))
    }

    /// A publisher's figures (zero for a viewer).
    pub fn publisher_stats(&self) -> PublisherStats {
        self.publishing
            .as_ref()
            .map(|p| PublisherStats {
                keyframes_sent: p.source.keyframes(),
                ..p.stats
            })
            .unwrap_or_default()
    }

    /// Applies the server's answer. A publisher sends under the payload types it negotiated.
    pub fn accept_answer(&mut self, now: Instant, sdp: &str) -> Result<(), PeerError> {
        let answer = RTCSessionDescription::answer(sdp.to_owned())?;
        self.pc.set_remote_description(now, answer)?;
        if let Some(p) = &mut self.publishing {
            for (kind, out) in [
                (MediaKind::Video, &mut p.video),
                (MediaKind::Audio, &mut p.audio),
            ] {
                let mut sender = self
                    .pc
                    .rtp_sender(out.id)
                    .ok_or(PeerError::NoSender(kind))?;
                if let Some(c) = sender.get_parameters().rtp_parameters.codecs.first() {
                    out.payload_type = c.payload_type;
                }
            }
        }
        self.take_events(now);
        Ok(())
    }

    /// A datagram from `from` arrived at our address.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: BytesMut,
    ) -> Result<(), PeerError> {
        let result = self.pc.handle_read(TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: data,
        });
        self.take_events(now);
        Ok(result?)
    }

    /// Time passed: `rtc`'s timers, and a publisher's media that is due.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        self.send_due_media(now);
        let result = self.pc.handle_timeout(now);
        self.take_events(now);
        Ok(result?)
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to be called next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let rtc = self.pc.poll_timeout();
        let media = self
            .publishing
            .as_ref()
            .and_then(|p| p.source.poll_timeout());
        match (rtc, media) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pc.poll_write().map(|m| Transmit {
            to: m.transport.peer_addr,
            data: m.message,
        })
    }

    /// The next event. Received RTP is read straight from `rtc` here, not queued.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        while let Some(TaggedRTCMessage { now, message }) = self.pc.poll_read() {
            match message {
                RTCMessage::RtpPacket(track_id, packet) => {
                    let kind = self.kind_of(packet.header.payload_type, &track_id);
                    if kind == MediaKind::Video
                        && let Some((_, ssrc)) = &mut self.video_receiver
                    {
                        *ssrc = packet.header.ssrc;
                    }
                    return Some(PeerEvent::Rtp {
                        kind,
                        at: now,
                        packet,
                    });
                }
                RTCMessage::RtcpPacket(_, packets) => {
                    for p in &packets {
                        let any = p.as_any();
                        let kind = if any.is::<PictureLossIndication>() {
                            KeyframeRequestKind::Pli
                        } else if any.is::<FullIntraRequest>() {
                            KeyframeRequestKind::Fir
                        } else {
                            continue;
                        };
                        if let Some(p) = &mut self.publishing {
                            p.stats.keyframe_requests += 1;
                            p.source.request_keyframe();
                        }
                        self.events
                            .push_back(PeerEvent::KeyframeRequest { kind, at: now });
                    }
                    if let Some(e) = self.events.pop_front() {
                        return Some(e);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// A viewer asks for a keyframe of the video it receives (RTCP PLI), as a decoder that
    /// lost a picture does.
    pub fn send_pli(&mut self, now: Instant) -> Result<(), PeerError> {
        let (receiver_id, media_ssrc) = self.video_receiver.ok_or(PeerError::NoVideo)?;
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        let mut receiver = self
            .pc
            .rtp_receiver(receiver_id)
            .ok_or(PeerError::NoVideo)?;
        receiver.write_rtcp(now, vec![Box::new(pli)])?;
        Ok(())
    }

    /// Sends one RTP packet through our SRTP, bypassing the sender's checks (any payload type,
    /// SSRC, header extension or payload), as a hostile or broken peer would.
    pub fn send_raw_rtp(
        &mut self,
        now: Instant,
        packet: rtc::rtp::Packet,
    ) -> Result<(), PeerError> {
        self.pc.handle_write(TaggedRTCMessage {
            now,
            message: RTCMessage::RtpPacket(String::new(), packet),
        })?;
        Ok(())
    }

    /// Closes the peer connection; what it says on the way out is in
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn close(&mut self) -> Result<(), PeerError> {
        Ok(self.pc.close()?)
    }

    fn kind_of(&self, payload_type: u8, track_id: &str) -> MediaKind {
        let pt = &self.payload_types;
        let video_pt = match self.video_codec {
            VideoCodec::Vp8 => pt.vp8,
            VideoCodec::H264 => pt.h264,
        };
        if payload_type == pt.opus {
            MediaKind::Audio
        } else if payload_type == video_pt {
            MediaKind::Video
        } else {
            self.track_kinds
                .get(track_id)
                .copied()
                .unwrap_or(MediaKind::Video)
        }
    }

    /// Takes `rtc`'s events while the time is known: the state (a publisher starts its media
    /// when connected) and the tracks it opened.
    fn take_events(&mut self, now: Instant) {
        while let Some(event) = self.pc.poll_event() {
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    self.state = state;
                    if state == RTCPeerConnectionState::Connected
                        && let Some(p) = &mut self.publishing
                    {
                        p.source.start(now);
                    }
                    self.events.push_back(PeerEvent::State(state));
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let Some(receiver) = self.pc.rtp_receiver(init.receiver_id) else {
                        continue;
                    };
                    let kind = match receiver.track().kind() {
                        RtpCodecKind::Audio => MediaKind::Audio,
                        _ => MediaKind::Video,
                    };
                    self.track_kinds.insert(init.track_id.to_string(), kind);
                    if kind == MediaKind::Video {
                        self.video_receiver = Some((init.receiver_id, init.ssrc));
                    }
                }
                _ => {}
            }
        }
    }

    fn send_due_media(&mut self, now: Instant) {
        let Some(p) = &mut self.publishing else {
            return;
        };
        if p.source.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        let mut batch = std::mem::take(&mut p.batch);
        p.source.produce(now, &mut batch);
        for packet in batch.drain(..) {
            let out = match packet.kind {
                MediaKind::Video => p.video,
                MediaKind::Audio => p.audio,
            };
            let rtp = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    marker: packet.marker,
                    payload_type: out.payload_type,
                    sequence_number: packet.seq,
                    timestamp: packet.ts,
                    ssrc: out.ssrc,
                    ..Default::default()
                },
                payload: packet.payload.clone(),
            };
            let written = match self.pc.rtp_sender(out.id) {
                Some(mut sender) => sender.write_rtp(now, rtp).map_err(|e| e.to_string()),
                None => Err("the sender is gone".to_owned()),
            };
            match written {
                Ok(()) => {
                    p.stats.packets_sent += 1;
                    p.stats.payload_bytes_sent += packet.payload.len() as u64;
                    if self.report_sent {
                        self.events.push_back(PeerEvent::Sent(packet));
                    }
                }
                Err(error) => {
                    p.stats.write_errors += 1;
                    self.events.push_back(PeerEvent::SendFailed {
                        kind: packet.kind,
                        error,
                    });
                }
            }
        }
        p.batch = batch;
    }
}

/// rtc 0.21 ends inbound RTCP at the chain's terminus unless an interceptor marks it for the
/// application: this one marks keyframe requests (PLI, FIR), so a publisher answers them as an
/// encoder does and a test can see them arrive.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{Clock, MediaPlan};

    fn offer(config: &PeerConfig, role: Role) -> String {
        let local = SocketAddr::from(([127, 0, 0, 1], 5_000));
        let peer = ClientPeer::new(Instant::now(), local, config, role).unwrap();
        peer.offer_sdp().to_owned()
    }

    #[test]
    fn an_offer_is_complete_with_our_one_host_candidate() {
        let sdp = offer(&PeerConfig::default(), Role::Viewer);
        let candidates: Vec<&str> = sdp
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect();
        assert!(!candidates.is_empty(), "{sdp}");
        assert!(
            candidates
                .iter()
                .all(|c| c.contains("127.0.0.1 5000 typ host")),
            "{candidates:?}"
        );
        assert!(sdp.contains("a=end-of-candidates"), "{sdp}");
        assert_eq!(sdp.matches("a=recvonly").count(), 2, "{sdp}");
        assert!(sdp.contains("a=rtpmap:96 VP8/90000") && sdp.contains("a=rtpmap:111 opus/48000/2"));
    }

    #[test]
    fn a_viewer_offers_its_own_payload_types_and_codec() {
        let config = PeerConfig {
            video_codec: VideoCodec::H264,
            payload_types: PayloadTypes {
                vp8: 120,
                h264: 121,
                opus: 109,
            },
            ..PeerConfig::default()
        };
        let sdp = offer(&config, Role::Viewer);
        assert!(sdp.contains("a=rtpmap:121 H264/90000"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:109 opus/48000/2"), "{sdp}");
        assert!(!sdp.contains("VP8"), "{sdp}");
    }

    #[test]
    fn a_publisher_offers_sendonly_vp8_and_opus_under_its_ssrcs() {
        let t0 = Instant::now();
        let source = SyntheticSource::new(
            1,
            MediaPlan::for_bitrate(500_000, Duration::from_secs(1)),
            Clock::new(t0, 0),
        );
        let config = PeerConfig {
            video_codec: VideoCodec::H264,
            ..PeerConfig::default()
        };
        let sdp = offer(
            &config,
            Role::Publisher {
                video_ssrc: 0x1111,
                audio_ssrc: 0x2222,
                source,
            },
        );
        assert_eq!(sdp.matches("a=sendonly").count(), 2, "{sdp}");
        assert!(sdp.contains("VP8/90000") && !sdp.contains("H264"), "{sdp}");
        for ssrc in [0x1111, 0x2222] {
            assert!(sdp.contains(&format!("a=ssrc:{ssrc} ")), "{sdp}");
        }
    }
}
