//! Building the `rtc` peer connections: a viewer (recvonly audio and video) or the publisher
//! (sendonly synthetic VP8 and Opus). Both are full ICE agents that make the offer, as a
//! browser is to golive's ICE-lite server, with one host candidate: their own UDP socket.

use anyhow::{Context, Result};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::interceptor::{
    Attribute, Interceptor, Packet as InterceptorPacket, Registry, Slot, StreamInfo, TaggedPacket,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
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
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::{AUDIO_CLOCK_RATE, VIDEO_CLOCK_RATE};

/// Our payload types; the server keeps the offerer's numbers in its answer.
pub const VP8_PAYLOAD_TYPE: u8 = 96;
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// ICE-lite servers see liveness only in our STUN checks; rtc's defaults are fine for a
/// full agent on loopback, but a loaded load tester must not give up on a slow server early.
const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(15);
const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(30);
/// rtc paces connectivity checks at 200 ms, so a connection waits a whole interval for its
/// nomination; browsers pace at RFC 8445's Ta of 50 ms. Time to first frame should measure
/// the server, not our ICE timer. Enough attempts to ride out a busy server for 5 s.
const ICE_CHECK_INTERVAL: Duration = Duration::from_millis(50);
const ICE_MAX_BINDING_REQUESTS: u16 = 100;

/// Which SRTP profiles a peer offers in its DTLS ClientHello (the server, as DTLS server,
/// follows the client's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

/// One DTLS certificate shared by every peer of a thread: generating a key per viewer would
/// make the ramp measure our key generation.
pub fn certificate() -> Result<RTCCertificate> {
    let provider = rtc::crypto::default_provider().context("crypto provider")?;
    Ok(RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        CertificateParams::new(vec!["golive-load".to_owned()]).context("certificate params")?,
    )?)
}

fn opus() -> RTCRtpCodecParameters {
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

fn vp8() -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: VIDEO_CLOCK_RATE,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
        },
        payload_type: VP8_PAYLOAD_TYPE,
    }
}

/// A peer connection with its offer applied as the local description.
pub struct Offered {
    pub pc: RTCPeerConnection,
    pub offer_sdp: String,
    /// The publisher's (video, audio) senders with their SSRCs.
    pub senders: Option<Senders>,
}

#[derive(Debug, Clone, Copy)]
pub struct Senders {
    pub video: RTCRtpSenderId,
    pub video_ssrc: u32,
    pub audio: RTCRtpSenderId,
    pub audio_ssrc: u32,
}

/// A viewer (`publisher == None`) or the publisher (its two SSRCs), with one host candidate
/// at `local`.
pub fn offer(
    now: Instant,
    local: SocketAddr,
    cert: &RTCCertificate,
    srtp: SrtpOffer,
    publisher: Option<(u32, u32)>,
) -> Result<Offered> {
    let mut me = MediaEngine::default();
    me.register_codec(opus(), RtpCodecKind::Audio)?;
    me.register_codec(vp8(), RtpCodecKind::Video)?;
    // No NACK generator, no receiver reports: a viewer measures the loss the server and the
    // network caused, not what retransmission hid, and spends its CPU on receiving. The
    // publisher needs to see keyframe requests, which rtc drops unless an interceptor marks
    // them for the application.
    let registry = match publisher {
        Some(_) => Registry::new().with(Slot::JitterBuffer, KeyframeRequestsToApp::default()),
        None => Registry::new(),
    };
    let settings = SettingEngineBuilder::new()
        .with_srtp_protection_profiles(srtp.profiles())
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED_TIMEOUT),
            Some(ICE_FAILED_TIMEOUT),
            None,
        )
        .with_ice_connection_attempts(Some(ICE_CHECK_INTERVAL), Some(ICE_MAX_BINDING_REQUESTS))
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(
            RTCConfigurationBuilder::new()
                .with_certificates(vec![cert.clone()])
                .build(),
        )
        .with_setting_engine(settings)
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)
        .context("peer connection")?;

    let senders = match publisher {
        Some((video_ssrc, audio_ssrc)) => {
            let mut ids = Vec::new();
            for (kind, codec, ssrc, name) in [
                (RtpCodecKind::Video, vp8(), video_ssrc, "video"),
                (RtpCodecKind::Audio, opus(), audio_ssrc, "audio"),
            ] {
                let track = MediaStreamTrack::new(
                    "golive-load".to_owned(),
                    format!("golive-load-{name}"),
                    format!("synthetic {name}"),
                    kind,
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
                ids.push(RTCRtpSenderId::from(id));
            }
            Some(Senders {
                video: ids[0],
                video_ssrc,
                audio: ids[1],
                audio_ssrc,
            })
        }
        None => {
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
    let offer_sdp = pc
        .local_description()
        .context("no local description after set_local_description")?
        .sdp;
    Ok(Offered {
        pc,
        offer_sdp,
        senders,
    })
}

/// rtc 0.21 ends inbound RTCP at the chain's terminus unless an interceptor marks it for the
/// application: this one marks keyframe requests (PLI, FIR), so the publisher answers them
/// like a real encoder.
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
            && packets.iter().any(|p| is_keyframe_request(p.as_any()))
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

/// Whether an RTCP packet asks for a keyframe.
pub fn is_keyframe_request(p: &dyn std::any::Any) -> bool {
    p.is::<PictureLossIndication>() || p.is::<FullIntraRequest>()
}
