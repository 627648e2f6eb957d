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
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_twcc_receiver_only, register_default_interceptors,
};
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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::media::{
    AUDIO_CLOCK_RATE, MediaKind, SyntheticPacket, SyntheticSource, VIDEO_CLOCK_RATE,
};
use crate::pacer::{Pacer, Pacing};
use crate::simulcast::{Simulcast, SimulcastError, simulcast_offer};

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
    #[error("simulcast: {0}")]
    Simulcast(#[from] SimulcastError),
    #[error("simulcast is for a publisher whose offer is not yet answered")]
    SimulcastTooLate,
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
    /// Transport-wide congestion control alone: the peer offers the `transport-cc` header
    /// extension and feedback, and `rtc`'s TWCC receiver interceptor answers what arrives with
    /// TransportLayerCC feedback (draft-holmer-rmcat-transport-wide-cc-extensions), so the
    /// sender's estimate sees this peer's link; no NACK, no reports.
    Twcc,
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
///
/// Either way the agent checks every [`NOMINATION_CHECK_INTERVAL`] while it connects: `rtc`'s
/// controlling agent nominates a pair (sends USE-CANDIDATE) only on its first check tick after
/// the pair's check succeeded, unless the remote sends it a check first. An ICE-lite server
/// sends none (RFC 8445, section 2.5), so against one the check interval is the nomination
/// delay, straight into time to first frame: 200 ms at `rtc`'s default, as long as a
/// browser's ~50 ms pacing (Ta) at the Patient setting it had before. Once connected the
/// agent ticks at its keepalive interval instead, so the short interval costs nothing then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceTiming {
    /// rtc's timeouts, and as many checks as rtc's default gives up after (7 at 200 ms).
    Default,
    /// For a loaded load tester: enough checks to ride out a busy server for 5 s, and a
    /// disconnect only after 15 s of silence (an ICE-lite server shows liveness only in answers
    /// to our checks).
    Patient,
}

/// The agent's check tick while it connects, and so its nomination delay against an ICE-lite
/// server. RFC 8445's floor for Ta is 5 ms; 10 ms keeps the checks an unanswered peer sends a
/// busy server at a hundred a second, and the nomination delay small beside a DTLS handshake.
pub const NOMINATION_CHECK_INTERVAL: Duration = Duration::from_millis(10);
/// rtc's default: 7 checks 200 ms apart, about 1.4 s before a pair fails.
const DEFAULT_ICE_CHECKING_TIME: Duration = Duration::from_millis(1_400);
const PATIENT_ICE_CHECKING_TIME: Duration = Duration::from_secs(5);
const PATIENT_ICE_DISCONNECTED: Duration = Duration::from_secs(15);
const PATIENT_ICE_FAILED: Duration = Duration::from_secs(30);

/// How many checks fill `checking` at [`NOMINATION_CHECK_INTERVAL`].
fn max_binding_requests(checking: Duration) -> u16 {
    let n = checking.as_millis() / NOMINATION_CHECK_INTERVAL.as_millis();
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The most video sections a [`Role::Relay`] offers.
pub const MAX_VIDEO_SECTIONS: usize = 8;

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
    /// How a publisher's video frames leave it.
    pub pacing: Pacing,
    /// A viewer offers RTX (RFC 4588) for its video under this payload type, as browsers do:
    /// the server then sends repairs and bandwidth-probe padding on the RTX stream.
    pub video_rtx_pt: Option<u8>,
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
            pacing: Pacing::Burst,
            video_rtx_pt: None,
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
            .field("pacing", &self.pacing)
            .finish()
    }
}

/// What a peer does.
#[derive(Debug)]
pub enum Role {
    /// Receives audio and video.
    Viewer,
    /// Receives audio and `video_sections` video tracks, each in a section of its own: a node
    /// that pulls a stream from another node, which sends simulcast layer n on the n-th video
    /// section. Its packets say which section they came on ([`PeerEvent::Rtp`]).
    Relay { video_sections: usize },
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
    /// An RTP packet arrived (decrypted) on a track of `kind`; `section` counts the video
    /// sections of the offer from 0 (0 for audio, and for a viewer's one video section).
    Rtp {
        kind: MediaKind,
        at: Instant,
        packet: rtc::rtp::Packet,
        section: usize,
    },
    /// The remote asked for a keyframe; a publisher's source has been told.
    KeyframeRequest {
        kind: KeyframeRequestKind,
        at: Instant,
    },
    /// A keyframe request (PLI or FIR) named the SSRC of a simulcast publisher's `layer`
    /// (lowest first); that layer's source has been told.
    LayerKeyframeRequest { layer: usize, at: Instant },
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
    /// Holds video back to a browser's pace; `None`: each frame leaves in one burst.
    pacer: Option<Pacer>,
    stats: PublisherStats,
    /// Simulcast layers that send the video instead of `source` (which then stays silent).
    simulcast: Option<Simulcast>,
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
    /// The video receivers, one per video section in the offer's order, and the SSRC each
    /// receives (once known), for the PLIs a viewer sends.
    video_receivers: Vec<(RTCRtpReceiverId, Option<u32>)>,
    /// Receiving track id -> its video section.
    track_sections: HashMap<String, usize>,
    /// The media SSRCs keyframe requests named, as the interceptor chain saw them.
    keyframe_request_ssrcs: RequestedSsrcs,
}

/// Keyframe requests remembered by SSRC for [`ClientPeer::take_keyframe_request_ssrcs`]; older
/// ones are forgotten, so a driver that never asks holds no more than this.
pub const MAX_KEYFRAME_REQUEST_SSRCS: usize = 256;

/// Shared between the peer and its interceptor, which sees every keyframe request, also those
/// naming an SSRC `rtc` knows no sender for (a simulcast layer sent raw) and so drops before
/// the application. Touched only per keyframe request.
type RequestedSsrcs = Arc<Mutex<VecDeque<u32>>>;

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

/// How often Chromium's NACK module asks for one lost packet before giving up on it.
const BROWSER_MAX_NACKS_PER_PACKET: u16 = 10;

fn interceptors(
    feedback: Feedback,
    publisher: bool,
    media_engine: &mut MediaEngine,
    requested: RequestedSsrcs,
) -> Result<Registry, PeerError> {
    let registry = Registry::new().with(
        Slot::from(KEYFRAME_REQUESTS_SLOT),
        KeyframeRequestsToApp {
            requested,
            ..Default::default()
        },
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
        Feedback::Twcc => configure_twcc_receiver_only(registry, media_engine)?,
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
        if let Some(rtx_pt) = config.video_rtx_pt.filter(|_| !publisher) {
            let apt = video(video_codec, pt).payload_type;
            media_engine.register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: "video/rtx".to_owned(),
                        clock_rate: VIDEO_CLOCK_RATE,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={apt}"),
                        rtcp_feedback: vec![],
                    },
                    payload_type: rtx_pt,
                },
                RtpCodecKind::Video,
            )?;
        }
        let keyframe_request_ssrcs = RequestedSsrcs::default();
        let registry = interceptors(
            config.feedback,
            publisher,
            &mut media_engine,
            keyframe_request_ssrcs.clone(),
        )?;
        // rtc's NACK generator sees RTX repairs on the RTX SSRC (they are unwrapped only after
        // the interceptors), so a packet repaired over RTX stays missing to it and is NACKed
        // every 100 ms without end. A browser gives up after 10 requests; so does this viewer.
        let registry = if config.video_rtx_pt.is_some() && config.feedback == Feedback::Browser {
            registry.with(
                Slot::NackGenerator,
                NackGeneratorBuilder::new()
                    .with_max_nacks_per_packet(BROWSER_MAX_NACKS_PER_PACKET)
                    .build(),
            )
        } else {
            registry
        };
        let mut settings = SettingEngineBuilder::new();
        if let Some(srtp) = config.srtp {
            settings = settings.with_srtp_protection_profiles(srtp.profiles());
        }
        let checking = match config.ice {
            IceTiming::Default => DEFAULT_ICE_CHECKING_TIME,
            IceTiming::Patient => {
                settings = settings.with_ice_timeouts(
                    Some(PATIENT_ICE_DISCONNECTED),
                    Some(PATIENT_ICE_FAILED),
                    None,
                );
                PATIENT_ICE_CHECKING_TIME
            }
        };
        settings = settings.with_ice_connection_attempts(
            Some(NOMINATION_CHECK_INTERVAL),
            Some(max_binding_requests(checking)),
        );
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

        let mut video_receivers = Vec::new();
        let video_sections = match role {
            Role::Relay { video_sections } => video_sections.clamp(1, MAX_VIDEO_SECTIONS),
            _ => 1,
        };
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
                let pacer = match config.pacing {
                    Pacing::Burst => None,
                    Pacing::Browser => Some(Pacer::new(source.plan().bitrate_bps())),
                };
                Some(Publishing {
                    video: add(MediaKind::Video, video_ssrc)?,
                    audio: add(MediaKind::Audio, audio_ssrc)?,
                    source,
                    pacer,
                    stats: PublisherStats::default(),
                    simulcast: None,
                    batch: Vec::new(),
                })
            }
            Role::Viewer | Role::Relay { .. } => {
                let kinds = std::iter::once(RtpCodecKind::Audio)
                    .chain(std::iter::repeat_n(RtpCodecKind::Video, video_sections));
                for kind in kinds {
                    let id = pc.add_transceiver_from_kind(
                        kind,
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Recvonly,
                            streams: vec![],
                            send_encodings: vec![],
                        }),
                    )?;
                    if kind == RtpCodecKind::Video {
                        video_receivers.push((RTCRtpReceiverId::from(id), None));
                    }
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
            video_receivers,
            track_sections: HashMap::new(),
            keyframe_request_ssrcs,
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

    /// A publisher's figures (zero for a viewer); a simulcast publisher's count every layer.
    pub fn publisher_stats(&self) -> PublisherStats {
        self.publishing
            .as_ref()
            .map(|p| PublisherStats {
                keyframes_sent: p
                    .simulcast
                    .as_ref()
                    .map_or(p.source.keyframes(), |s| s.keyframes()),
                ..p.stats
            })
            .unwrap_or_default()
    }

    /// Makes a publisher send `simulcast`'s layers instead of its one video stream (see
    /// [`crate::simulcast`]): its offer becomes a simulcast offer, its own source falls silent,
    /// the layers start when the peer connects, and keyframe requests reach the layer whose
    /// SSRC they name (told as [`PeerEvent::LayerKeyframeRequest`]; they no longer show in
    /// [`take_keyframe_request_ssrcs`](Self::take_keyframe_request_ssrcs)). Call it before the
    /// offer goes out.
    pub fn set_simulcast(&mut self, mut simulcast: Simulcast) -> Result<(), PeerError> {
        let answered = self.pc.remote_description().is_some();
        let Some(p) = &mut self.publishing else {
            return Err(PeerError::SimulcastTooLate);
        };
        if answered || p.simulcast.is_some() {
            return Err(PeerError::SimulcastTooLate);
        }
        let (offer, mid) = simulcast_offer(&self.offer_sdp, &simulcast.rids())?;
        simulcast.set_mid(mid);
        p.source.set_sending(false);
        if p.pacer.is_some() {
            p.pacer = Some(Pacer::new(simulcast.bitrate_bps()));
        }
        p.simulcast = Some(simulcast);
        self.offer_sdp = offer;
        Ok(())
    }

    /// A simulcast publisher's layers.
    pub fn simulcast(&self) -> Option<&Simulcast> {
        self.publishing.as_ref()?.simulcast.as_ref()
    }

    pub fn simulcast_mut(&mut self) -> Option<&mut Simulcast> {
        self.publishing.as_mut()?.simulcast.as_mut()
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
        self.route_layer_keyframe_requests(now);
        self.take_events(now);
        if !self.is_connected() {
            // rtc starts DTLS when ICE selects a pair (on the answer to our USE-CANDIDATE
            // check), but its DTLS endpoint keeps the ClientHello it made until the next
            // `handle_timeout`, which is the ICE agent's next check tick: without this the
            // handshake would start one tick late (10 ms; 50 ms at a browser's pacing).
            // Timers that are not due do nothing.
            let flushed = self.pc.handle_timeout(now);
            self.take_events(now);
            result?;
            return Ok(flushed?);
        }
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
        let media = self.publishing.as_ref().and_then(|p| {
            let paced = p.pacer.as_ref().and_then(Pacer::poll_timeout);
            let made = match &p.simulcast {
                Some(s) => s.poll_timeout(),
                None => p.source.poll_timeout(),
            };
            match (made, paced) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
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
                    let mut section = 0;
                    if kind == MediaKind::Video {
                        section = self.track_sections.get(&track_id).copied().unwrap_or(0);
                        if let Some((_, ssrc)) = self.video_receivers.get_mut(section) {
                            *ssrc = Some(packet.header.ssrc);
                        }
                    }
                    return Some(PeerEvent::Rtp {
                        kind,
                        at: now,
                        packet,
                        section,
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
        self.send_pli_for(now, 0)
    }

    /// Asks for a keyframe of the video received on video section `section` (RTCP PLI naming
    /// that section's SSRC): a relay asks for one simulcast layer.
    pub fn send_pli_for(&mut self, now: Instant, section: usize) -> Result<(), PeerError> {
        let (receiver_id, media_ssrc) = self
            .video_receivers
            .get(section)
            .and_then(|&(id, ssrc)| Some((id, ssrc?)))
            .ok_or(PeerError::NoVideo)?;
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

    /// The media SSRCs that keyframe requests (PLI, FIR) named since the last call, oldest
    /// first, whether or not `rtc` has a sender for them: a publisher that sends several
    /// streams (simulcast) tells by them which one to refresh.
    pub fn take_keyframe_request_ssrcs(&mut self) -> Vec<u32> {
        let mut q = self
            .keyframe_request_ssrcs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.drain(..).collect()
    }

    /// Hands keyframe requests naming a simulcast layer's SSRC (which `rtc` knows no sender
    /// for) to that layer.
    fn route_layer_keyframe_requests(&mut self, now: Instant) {
        let Some(p) = self.publishing.as_mut() else {
            return;
        };
        let Some(sc) = p.simulcast.as_mut() else {
            return;
        };
        let mut q = self
            .keyframe_request_ssrcs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ssrc in q.drain(..) {
            if let Some(layer) = sc.request_keyframe(ssrc) {
                p.stats.keyframe_requests += 1;
                self.events
                    .push_back(PeerEvent::LayerKeyframeRequest { layer, at: now });
            }
        }
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
                        if let Some(s) = &mut p.simulcast {
                            s.start(now);
                        }
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
                    if kind == MediaKind::Video
                        && let Some(section) = self
                            .video_receivers
                            .iter()
                            .position(|(id, _)| *id == init.receiver_id)
                    {
                        self.video_receivers[section].1 = Some(init.ssrc);
                        self.track_sections
                            .insert(init.track_id.to_string(), section);
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
        let mut batch = std::mem::take(&mut p.batch);
        if let Some(s) = &mut p.simulcast {
            s.produce(now, &mut batch);
        } else if p.source.poll_timeout().is_some_and(|t| t <= now) {
            p.source.produce(now, &mut batch);
        }
        if let Some(pacer) = &mut p.pacer {
            // Audio goes out at once, ahead of paced video, as a browser's pacer sends it.
            let mut i = 0;
            while i < batch.len() {
                if batch[i].kind == MediaKind::Video {
                    pacer.push(batch.remove(i));
                } else {
                    i += 1;
                }
            }
            while let Some(mut packet) = pacer.pop(now) {
                match &p.simulcast {
                    Some(s) => s.restamp(&mut packet, now),
                    None => p.source.restamp(&mut packet, now),
                }
                batch.push(packet);
            }
        }
        for packet in batch.drain(..) {
            Self::write_media(
                &mut self.pc,
                p,
                self.report_sent,
                &mut self.events,
                now,
                packet,
            );
        }
        p.batch = batch;
    }

    fn write_media(
        pc: &mut RTCPeerConnection,
        p: &mut Publishing,
        report_sent: bool,
        events: &mut VecDeque<PeerEvent>,
        now: Instant,
        packet: SyntheticPacket,
    ) {
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
        let written = match (&mut p.simulcast, packet.kind) {
            (Some(s), MediaKind::Video) => match s.video_rtp(&packet, out.payload_type) {
                Some(layer_rtp) => pc
                    .handle_write(TaggedRTCMessage {
                        now,
                        message: RTCMessage::RtpPacket(String::new(), layer_rtp),
                    })
                    .map_err(|e| e.to_string()),
                None => Err("a simulcast packet of no layer, or a mid or rid too long".to_owned()),
            },
            _ => match pc.rtp_sender(out.id) {
                Some(mut sender) => sender.write_rtp(now, rtp).map_err(|e| e.to_string()),
                None => Err("the sender is gone".to_owned()),
            },
        };
        match written {
            Ok(()) => {
                if let Some(s) = &mut p.simulcast {
                    s.count_sent(&packet);
                }
                p.stats.packets_sent += 1;
                p.stats.payload_bytes_sent += packet.payload.len() as u64;
                if report_sent {
                    events.push_back(PeerEvent::Sent(packet));
                }
            }
            Err(error) => {
                p.stats.write_errors += 1;
                events.push_back(PeerEvent::SendFailed {
                    kind: packet.kind,
                    error,
                });
            }
        }
    }
}

/// rtc 0.21 ends inbound RTCP at the chain's terminus unless an interceptor marks it for the
/// application: this one marks keyframe requests (PLI, FIR), so a publisher answers them as an
/// encoder does and a test can see them arrive.
#[derive(Default)]
struct KeyframeRequestsToApp {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
    requested: RequestedSsrcs,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestsToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let InterceptorPacket::Rtcp(packets) = &msg.message.packet {
            let mut named = Vec::new();
            for p in packets {
                let any = p.as_any();
                if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                    named.push(pli.media_ssrc);
                } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                    named.extend(fir.fir.iter().map(|e| e.ssrc));
                }
            }
            if !named.is_empty() {
                let mut q = self
                    .requested
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for ssrc in named {
                    if q.len() >= MAX_KEYFRAME_REQUEST_SSRCS {
                        q.pop_front();
                    }
                    q.push_back(ssrc);
                }
            }
        }
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
    fn a_relay_offers_audio_and_one_receive_only_video_section_per_layer() {
        let sdp = offer(&PeerConfig::default(), Role::Relay { video_sections: 3 });
        assert_eq!(sdp.matches("m=audio ").count(), 1, "{sdp}");
        assert_eq!(sdp.matches("m=video ").count(), 3, "{sdp}");
        assert_eq!(sdp.matches("a=recvonly").count(), 4, "{sdp}");
        // Bounded whatever it is asked.
        let many = offer(&PeerConfig::default(), Role::Relay { video_sections: 99 });
        assert_eq!(many.matches("m=video ").count(), MAX_VIDEO_SECTIONS);
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

    /// An ICE-lite server's answer: our offer's two m-lines, its one host candidate, no check
    /// of its own (the DTLS fingerprint is never used: the test stops before DTLS).
    fn ice_lite_answer(server: SocketAddr, ufrag: &str, pwd: &str) -> String {
        let fingerprint = vec!["AB"; 32].join(":");
        let mut sdp = String::from(
            "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
             a=group:BUNDLE 0 1\r\n",
        );
        for (mid, media) in [
            (
                "0",
                "audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2",
            ),
            ("1", "video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000"),
        ] {
            sdp += &format!(
                "m={media}\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\na=sendonly\r\na=rtcp-mux\r\n\
                 a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
                 a=fingerprint:sha-256 {fingerprint}\r\na=setup:passive\r\n\
                 a=candidate:1 1 udp 2130706431 {} {} typ host\r\na=end-of-candidates\r\n",
                server.ip(),
                server.port()
            );
        }
        sdp
    }

    /// A silent ICE-lite server's answer to a binding request: success, nothing else.
    fn binding_success(
        request: rtc::stun::message::Message,
        client: SocketAddr,
        pwd: &str,
    ) -> BytesMut {
        use rtc::stun::fingerprint::FINGERPRINT;
        use rtc::stun::integrity::MessageIntegrity;
        use rtc::stun::message::{BINDING_SUCCESS, Message, Setter};
        use rtc::stun::xoraddr::XorMappedAddress;
        let crypto = rtc::crypto::default_provider().unwrap();
        let mut response = Message::new();
        let setters: [Box<dyn Setter + '_>; 5] = [
            Box::new(request),
            Box::new(BINDING_SUCCESS),
            Box::new(XorMappedAddress {
                ip: client.ip(),
                port: client.port(),
            }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.to_owned(),
                crypto.crypto(),
            )),
            Box::new(FINGERPRINT),
        ];
        response.build(&setters).unwrap();
        BytesMut::from(&response.raw[..])
    }

    /// rtc's controlling agent nominates only on a check tick after its check succeeded (or at
    /// once when the remote sends it a check, which an ICE-lite server never does), so the
    /// check interval is how long a viewer of an ICE-lite server waits to nominate. And rtc's
    /// DTLS endpoint hands out the ClientHello it makes when the pair is selected only in a
    /// `handle_timeout`, which the peer calls at once.
    #[test]
    fn against_a_silent_ice_lite_server_a_viewer_nominates_within_a_check_interval_and_starts_dtls_at_once()
     {
        use rtc::stun::attributes::ATTR_USE_CANDIDATE;
        use rtc::stun::message::{BINDING_REQUEST, Message};

        let (ufrag, pwd) = ("srvufrag", "server-password-of-22-chars");
        let local = SocketAddr::from(([127, 0, 0, 1], 5_000));
        let server = SocketAddr::from(([127, 0, 0, 1], 6_000));
        let t0 = Instant::now();
        for ice in [IceTiming::Default, IceTiming::Patient] {
            let config = PeerConfig {
                ice,
                ..PeerConfig::default()
            };
            let mut peer = ClientPeer::new(t0, local, &config, Role::Viewer).unwrap();
            peer.accept_answer(t0, &ice_lite_answer(server, ufrag, pwd))
                .unwrap();
            let mut now = t0;
            let mut checked_at = None;
            let mut nominated_at = None;
            let mut dtls_at = None;
            for _ in 0..1_000 {
                let mut requests = Vec::new();
                while let Some(t) = peer.poll_transmit() {
                    let mut m = Message::new();
                    if m.unmarshal_binary(&t.data).is_ok() && m.typ == BINDING_REQUEST {
                        requests.push(m);
                    } else if (20..=63).contains(&t.data[0]) {
                        // RFC 7983: a DTLS record.
                        dtls_at.get_or_insert(now);
                    }
                }
                if dtls_at.is_some() {
                    break;
                }
                if !requests.is_empty() {
                    // The server answers every check 1 ms later, and sends nothing else.
                    now += Duration::from_millis(1);
                    for request in requests {
                        if request.contains(ATTR_USE_CANDIDATE) {
                            nominated_at.get_or_insert(now);
                        } else {
                            checked_at.get_or_insert(now);
                        }
                        peer.handle_datagram(now, server, binding_success(request, local, pwd))
                            .unwrap();
                    }
                    continue;
                }
                if let Some(t) = peer.poll_timeout() {
                    now = now.max(t);
                    peer.handle_timeout(now).unwrap();
                }
            }
            let checked_at = checked_at.expect("the viewer checks the server's candidate");
            let nominated_at = nominated_at.expect("the viewer nominates");
            assert!(
                nominated_at - checked_at <= NOMINATION_CHECK_INTERVAL + Duration::from_millis(1),
                "{ice:?}: nominated {:?} after the check succeeded",
                nominated_at - checked_at
            );
            assert_eq!(
                dtls_at,
                Some(nominated_at),
                "{ice:?}: the ClientHello leaves with the answer to the nomination"
            );
        }
    }
}
