//! The lean viewer leg: a viewer's transport assembled from webrtc-rs's building blocks
//! (STUN, the DTLS handshake, SRTP contexts, RTCP, SDP) instead of a full peer connection.
//!
//! A viewer only receives, so its transport needs little: answer its ICE checks (ICE-lite),
//! complete one DTLS handshake as the server, derive SRTP keys from it, encrypt what the SFU
//! forwards, and read the feedback (PLI, FIR, NACK) the viewer sends back. A peer connection
//! carries all of that through eight handler queues per packet; here a forwarded packet is one
//! header write, one AEAD seal and one datagram.
//!
//! Two things differ from the peer connection on purpose:
//! - DTLS starts as soon as a STUN check from the address has passed its integrity check,
//!   without waiting for the viewer to nominate the pair: Chromium sends its ClientHello right
//!   after its first check but nominates only ~60 ms later.
//! - The certificate (and its fingerprint) is generated once per worker, not per viewer.
//!
//! The DTLS server of `rtc-dtls` always answers the first ClientHello with a HelloVerifyRequest
//! (its server flights are fixed and crate-private), so the cookie round trip stays; see the test
//! `the_dtls_server_always_asks_for_a_cookie`.

mod sdp;
mod srtp_gcm;
pub(crate) mod stun;

use bytes::{Bytes, BytesMut};
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{ClientAuthType, ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::shared::TransportProtocol;
use rtc::shared::marshal::{Marshal, MarshalSize};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::SfuError;
use crate::codec::{MediaKind, StreamMedia};
use crate::temporal::DescriptorPatch;
use crate::types::AbsCaptureTime;
// The same liveness timeout, SSRC cap and NACK bound as the `rtc` leg: one policy for viewers
// whichever leg serves them.
use crate::peer::{
    DatagramVerdict, ICE_FAILED_TIMEOUT, Inbound, MAX_NACKED_PER_FEEDBACK, MAX_SSRCS_PER_PEER,
    PeerEvent, SrtpPolicy, keyframe_request_ssrc,
};

/// How often each track sends an RTCP sender report (lip sync, round-trip time).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Replay windows for what the viewer sends (its RTCP).
const SRTCP_REPLAY_WINDOW: usize = 64;
const SRTP_REPLAY_WINDOW: usize = 64;
/// The kernel sends at most 64 segments in one UDP GSO send (UDP_MAX_SEGMENTS), of at most
/// 64 KiB together.
const MAX_SEGMENTS_PER_BATCH: usize = 64;
const MAX_BATCH_BYTES: usize = 65_000;
/// A send buffer that grew past this (a keyframe replay burst) gives the memory back once sent.
const MAX_RETAINED_SEND_BUFFER_BYTES: usize = 16 * 1024;
/// NTP seconds at the worker's first viewer: sender reports need a wallclock only consistent
/// within one viewer (the receiver relates audio and video by it), and the core reads no clock.
const NTP_EPOCH_SECS: u64 = 3_900_000_000;

/// What all lean viewers of one worker share: the crypto provider, one certificate and the DTLS
/// server configuration built around it.
pub(crate) struct Shared {
    crypto: Arc<dyn RTCCryptoProvider>,
    /// Our certificate's SHA-256 fingerprint as SDP writes it.
    fingerprint: String,
    dtls: Arc<HandshakeConfig>,
    /// The instant sender reports count NTP time from.
    ntp_anchor: Instant,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn internal(e: impl std::fmt::Display) -> SfuError {
    SfuError::Internal(e.to_string())
}

fn hex_colons(bytes: &[u8], upper: bool) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        if upper {
            s.push_str(&format!("{b:02X}"));
        } else {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}

impl Shared {
    pub(crate) fn new(now: Instant, srtp: SrtpPolicy) -> Result<Arc<Self>, SfuError> {
        let crypto = rtc::crypto::default_provider().map_err(internal)?;
        let cert = rtc::dtls::crypto::Certificate::generate_self_signed(
            vec!["golive".to_owned()],
            crypto.crypto(),
        )
        .map_err(internal)?;
        let der = cert
            .certificate
            .first()
            .ok_or_else(|| internal("a generated certificate has no DER"))?;
        let digest = crypto
            .crypto()
            .hash(rtc::crypto::HashAlgorithm::Sha256, der.as_ref())
            .map_err(internal)?;
        let fingerprint = hex_colons(&digest, true);
        // GCM only by default: Chromium lists CM_80 first and, as DTLS server, we follow the
        // client's order; GCM costs a quarter as much per packet.
        let mut profiles = vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm,
        ];
        if srtp.allow_legacy_cm {
            profiles.push(SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80);
        }
        let dtls = ConfigBuilder::default()
            .with_crypto_provider(crypto.clone())
            .with_certificates(vec![cert])
            .with_srtp_protection_profiles(profiles)
            // The viewer must present a certificate; its fingerprint is checked against the
            // offer once the handshake is done, before any key is derived.
            .with_client_auth(ClientAuthType::RequireAnyClientCert)
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(false, None)
            .map_err(internal)?;
        Ok(Arc::new(Self {
            crypto,
            fingerprint,
            dtls: Arc::new(dtls),
            ntp_anchor: now,
        }))
    }

    fn ntp_time(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.ntp_anchor);
        let secs = NTP_EPOCH_SECS + d.as_secs();
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }
}

/// The SRTP state of a connected viewer. Deliberately without `Debug`, like everything here
/// that holds keys or the ICE password: they must never reach a log (see the test
/// `keys_and_salts_never_appear_in_the_logs_at_trace`).
struct Srtp {
    /// What we send: sealed in place with AES-GCM, or (AES-CM, legacy clients) through
    /// `rtc-srtp`'s context, which also protects our RTCP.
    gcm: Option<srtp_gcm::GcmSender>,
    local: Context,
    /// What the viewer sends (its RTCP).
    remote: Context,
}

/// Per track, what a sender report says.
#[derive(Debug, Clone, Copy)]
struct SenderStats {
    ssrc: u32,
    clock_rate: u32,
    packets: u32,
    octets: u32,
    /// The last RTP timestamp sent, and when.
    last: Option<(u32, Instant)>,
}

pub(crate) struct LeanViewer {
    shared: Arc<Shared>,
    pub(crate) ufrag: String,
    pwd: String,
    pub(crate) remote_addrs: Vec<SocketAddr>,
    pub(crate) send_ssrc: [Option<u32>; 2],
    pub(crate) rtx: [Option<(u32, u8)>; 2],
    /// A relay's video tracks after the first, one per simulcast layer from layer 1 up: each
    /// SSRC with its RTX SSRC and payload type.
    pub(crate) layer_tracks: Vec<(u32, Option<(u32, u8)>)>,
    /// The certificate fingerprints the offer announced (lowercase).
    fingerprints: Vec<String>,
    /// Where media goes: the nominated address, or until nomination the last one checked.
    media_addr: Option<SocketAddr>,
    nominated: bool,
    /// The DTLS association, keyed in its endpoint by the address it started from (records from
    /// a later address of the same viewer are fed as if from that one), until it is settled.
    dtls: Option<(Endpoint, SocketAddr)>,
    /// When the DTLS association settles even without the viewer's SRTCP: a viewer that sends
    /// no RTCP at all (some players and load testers do not) would otherwise keep its whole
    /// endpoint, and the worker would poll its timers, for as long as it watches. Pushed back by
    /// every DTLS record the viewer sends after the handshake (a retransmitted last flight means
    /// it still waits for ours).
    settle_at: Option<Instant>,
    /// ...then only its session (see [`Settled`]).
    settled: Option<Settled>,
    srtp: Option<Srtp>,
    last_stun_at: Instant,
    transmits: VecDeque<(SocketAddr, BytesMut)>,
    events: VecDeque<PeerEvent>,
    inbound: VecDeque<Inbound>,
    /// The SSRCs this viewer's SRTP/SRTCP named so far (bounded).
    ssrcs: Vec<u32>,
    senders: Vec<SenderStats>,
    next_report_at: Option<Instant>,
    connected: bool,
    failed: bool,
    /// The latest instant any call brought (closing stamps its alert with it).
    last_now: Instant,
    /// Encrypted RTP not yet handed to the shell, end to end, and each datagram's length; the
    /// first `sent` of them (`sent_bytes` bytes) are handed out already.
    out: Vec<u8>,
    segments: Vec<u16>,
    sent: usize,
    sent_bytes: usize,
    /// The header extensions each kind's packets carry (audio, video), by the viewer's ids:
    /// only what that kind's m-section negotiated.
    exts: [sdp::ExtensionIds; 2],
    /// It negotiated REMB instead.
    remb: bool,
}

/// The most a one-byte-header extension block (RFC 8285) of ours adds to an RTP header: the
/// 0xBEDE profile and its length in words, then the transport-wide sequence number (1 + 2
/// bytes), the absolute send time (1 + 3), the playout delay (1 + 3) and the absolute capture
/// time (1 + 16), padded to a word.
pub(crate) const MAX_EXTENSION_BYTES: usize = 36;

/// How long after the handshake, with no DTLS record from the viewer, its association settles
/// without waiting for its first SRTCP. A viewer that lost our last flight resends its own
/// after 1 s, then 2 s and 4 s more (RFC 6347 §4.2.4.1); ten quiet seconds mean it has ours.
pub(crate) const DTLS_QUIET_SETTLE: Duration = Duration::from_secs(10);

/// A DTLS association after the viewer has shown it completed the handshake (its first
/// authenticated SRTCP: it derived the keys, so it has our Finished and will never ask for our
/// last flight again). The endpoint, with its handshake cache, flights, certificates and
/// buffers, is about 11 kB per viewer; the session it leaves (epochs, sequence numbers, the
/// master secret and randoms) is a few hundred bytes. A connection is rebuilt from it for the
/// two records that can still matter: the viewer's alert (close_notify) and ours when we close.
struct Settled {
    /// The session as `rtc-dtls` serializes it (never logged: it holds the master secret).
    session: Box<[u8]>,
    /// The address the association is keyed by.
    key: SocketAddr,
}

/// DTLS content type of an alert record (RFC 6347 §4.1).
const DTLS_CONTENT_ALERT: u8 = 21;

impl Settled {
    /// Serializes `endpoint`'s association for `key`, without the viewer's certificate (checked
    /// already, and the largest part).
    fn from_endpoint(
        endpoint: &Endpoint,
        key: SocketAddr,
        crypto: &Arc<dyn RTCCryptoProvider>,
    ) -> Result<Self, SfuError> {
        let state = endpoint
            .get_connection_state(key)
            .ok_or_else(|| internal("no DTLS state"))?;
        let full = state.marshal_binary().map_err(internal)?;
        let mut lean = rtc::dtls::state::State::new(crypto.clone(), false);
        lean.unmarshal_binary(&full).map_err(internal)?;
        lean.peer_certificates = Vec::new();
        lean.identity_hint = Vec::new();
        let session = lean.marshal_binary().map_err(internal)?.into_boxed_slice();
        Ok(Self { session, key })
    }

    /// An endpoint holding the association again, its handshake complete.
    fn restore(&self, now: Instant, shared: &Shared) -> Result<Endpoint, SfuError> {
        let mut state = rtc::dtls::state::State::new(shared.crypto.clone(), false);
        state.unmarshal_binary(&self.session).map_err(internal)?;
        let mut endpoint = Endpoint::new(self.key, TransportProtocol::UDP, None);
        // A connection started from a complete session is complete at once; the side it plays
        // is the session's (ours: the server's keys), not the endpoint's.
        endpoint
            .connect(now, self.key, shared.dtls.clone(), Some(state))
            .map_err(internal)?;
        Ok(endpoint)
    }
}

fn slot(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

/// Random ICE credentials: the ufrag names the viewer in the demultiplexer.
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

impl LeanViewer {
    /// Answers a viewer's offer; returns the viewer and the answer SDP.
    pub(crate) fn new(
        now: Instant,
        shared: Arc<Shared>,
        local_addr: SocketAddr,
        offer: &str,
        codecs: &StreamMedia,
        video_rtx_pt: Option<u8>,
        video_tracks: usize,
    ) -> Result<(Self, String), SfuError> {
        let facts = sdp::OfferFacts::parse(offer)?;
        // As many video tracks as asked for and the offer has sections to carry (at least one,
        // so a viewer that offered no video section gets the usual answer).
        let video_tracks = video_tracks.min(facts.usable_sections(MediaKind::Video).max(1));
        let tracks = sdp::send_tracks(codecs, video_rtx_pt, video_tracks);
        let (ufrag, pwd) = ice_credentials();
        let sdp = sdp::answer(
            &facts,
            &sdp::Local {
                ufrag: &ufrag,
                pwd: &pwd,
                fingerprint: &shared.fingerprint,
                candidate_addr: local_addr,
                session_id: rand::random::<u64>() >> 2,
            },
            &tracks,
        );
        let exts = [
            facts.extensions_for(MediaKind::Audio),
            facts.extensions_for(MediaKind::Video),
        ];
        let mut send_ssrc = [None, None];
        let mut rtx = [None, None];
        let mut layer_tracks = Vec::new();
        let mut senders = Vec::with_capacity(tracks.len());
        for t in &tracks {
            let i = slot(t.codec.kind);
            if send_ssrc[i].is_none() {
                send_ssrc[i] = Some(t.ssrc);
                rtx[i] = t.rtx;
            } else {
                layer_tracks.push((t.ssrc, t.rtx));
            }
            senders.push(SenderStats {
                ssrc: t.ssrc,
                clock_rate: t.codec.clock_rate,
                packets: 0,
                octets: 0,
                last: None,
            });
        }
        Ok((
            Self {
                shared,
                ufrag,
                pwd,
                remote_addrs: Vec::new(),
                send_ssrc,
                rtx,
                layer_tracks,
                fingerprints: facts.fingerprints,
                media_addr: None,
                nominated: false,
                dtls: None,
                settled: None,
                srtp: None,
                last_stun_at: now,
                transmits: VecDeque::new(),
                events: VecDeque::new(),
                inbound: VecDeque::new(),
                ssrcs: Vec::new(),
                senders,
                next_report_at: None,
                connected: false,
                settle_at: None,
                failed: false,
                last_now: now,
                out: Vec::new(),
                segments: Vec::new(),
                sent: 0,
                sent_bytes: 0,
                exts,
                remb: facts.remb,
            },
            sdp,
        ))
    }

    /// The viewer negotiated transport-wide congestion control feedback: every packet must carry
    /// a transport-wide sequence number.
    pub(crate) fn has_twcc(&self) -> bool {
        self.exts.iter().any(|e| e.twcc.is_some())
    }

    /// Where packets of `kind` carry the transport-wide sequence number: the bytes each such
    /// datagram carries besides its payload (RTP header, extensions but a capture time, SRTP
    /// tag).
    pub(crate) fn stamped_overhead(&self, kind: MediaKind) -> Option<usize> {
        let ids = &self.exts[slot(kind)];
        ids.twcc?;
        let (_, block_len) = extension_block(ids, Some(0), 0, None);
        Some(RTP_FIXED_HEADER_BYTES + block_len + srtp_gcm::TAG_LEN)
    }

    /// The viewer negotiated REMB feedback (and not TWCC).
    pub(crate) fn has_remb(&self) -> bool {
        self.remb
    }

    /// Checks a trickled candidate's syntax. As ICE-lite we never send checks, so it is not
    /// otherwise used.
    pub(crate) fn add_remote_candidate(&mut self, candidate: &str) -> Result<(), SfuError> {
        let value = candidate.strip_prefix("candidate:").unwrap_or(candidate);
        if value.is_empty() {
            return Ok(());
        }
        rtc::ice::candidate::unmarshal_candidate(value)
            .map(|_| ())
            .map_err(|e| SfuError::BadCandidate(e.to_string()))
    }

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: &[u8],
    ) -> DatagramVerdict {
        self.last_now = now;
        let Some(&first) = data.first() else {
            return DatagramVerdict::Garbage;
        };
        if is_stun_byte(first) {
            self.on_stun(now, from, data)
        } else if is_dtls_byte(first) {
            self.on_dtls(now, from, data)
        } else if is_rtp_byte(first) {
            self.on_srtp(from, data)
        } else {
            DatagramVerdict::Garbage
        }
    }

    fn on_stun(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> DatagramVerdict {
        match stun::check_binding_request(
            data,
            from,
            &self.ufrag,
            &self.pwd,
            self.shared.crypto.crypto(),
        ) {
            Ok(checked) => {
                self.last_stun_at = now;
                if checked.use_candidate {
                    self.media_addr = Some(from);
                    self.nominated = true;
                } else if !self.nominated {
                    self.media_addr = Some(from);
                }
                self.transmits
                    .push_back((from, BytesMut::from(&checked.response[..])));
                DatagramVerdict::Accepted
            }
            Err(stun::Refused::NotARequest) => DatagramVerdict::Accepted,
            Err(e) => {
                tracing::debug!(ufrag = %self.ufrag, "STUN refused: {e:?}");
                DatagramVerdict::Garbage
            }
        }
    }

    fn on_dtls(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> DatagramVerdict {
        if let Some(settled) = &self.settled {
            // Only an alert can still matter (the viewer closing); anything else is junk, and
            // is not worth rebuilding the connection for.
            if data.first() != Some(&DTLS_CONTENT_ALERT) {
                return DatagramVerdict::Garbage;
            }
            let mut endpoint = match settled.restore(now, &self.shared) {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(ufrag = %self.ufrag, "DTLS session not restored: {e}");
                    return DatagramVerdict::Garbage;
                }
            };
            let result = endpoint.read(now, settled.key, None, BytesMut::from(data));
            while let Some(t) = endpoint.poll_transmit() {
                self.transmits.push_back((from, t.message));
            }
            return match result {
                Ok(events)
                    if events
                        .iter()
                        .any(|e| matches!(e, EndpointEvent::PeerClosed)) =>
                {
                    self.fail();
                    DatagramVerdict::Accepted
                }
                Ok(_) => DatagramVerdict::Accepted,
                Err(e) => {
                    tracing::debug!(ufrag = %self.ufrag, "DTLS refused: {e}");
                    DatagramVerdict::Garbage
                }
            };
        }
        // DTLS is routed here only from an address bound to this viewer, i.e. one whose STUN
        // check passed: that is all ICE has to prove before DTLS may start.
        let (endpoint, key) = self.dtls.get_or_insert_with(|| {
            (
                Endpoint::new(from, TransportProtocol::UDP, Some(self.shared.dtls.clone())),
                from,
            )
        });
        let key = *key;
        if self.connected {
            self.settle_at = Some(now + DTLS_QUIET_SETTLE);
        }
        let result = endpoint.read(now, key, None, BytesMut::from(data));
        while let Some(t) = endpoint.poll_transmit() {
            self.transmits.push_back((from, t.message));
        }
        let events = match result {
            Ok(events) => events,
            Err(e) => {
                tracing::debug!(ufrag = %self.ufrag, "DTLS refused: {e}");
                return DatagramVerdict::Garbage;
            }
        };
        for ev in events {
            match ev {
                EndpointEvent::HandshakeComplete => self.on_handshake_complete(now),
                EndpointEvent::PeerClosed => self.fail(),
                _ => {}
            }
        }
        DatagramVerdict::Accepted
    }

    fn fail(&mut self) {
        if !self.failed {
            self.failed = true;
            self.events.push_back(PeerEvent::Failed);
        }
    }

    fn on_handshake_complete(&mut self, now: Instant) {
        match self.srtp_contexts() {
            Ok(srtp) => {
                self.srtp = Some(srtp);
                self.connected = true;
                self.next_report_at = Some(now + SENDER_REPORT_INTERVAL);
                self.settle_at = Some(now + DTLS_QUIET_SETTLE);
                self.events.push_back(PeerEvent::Connected);
            }
            Err(e) => {
                tracing::info!(ufrag = %self.ufrag, "DTLS done but refused: {e}");
                self.fail();
            }
        }
    }

    /// Checks the viewer's certificate against the offer's fingerprint, then derives the SRTP
    /// keys (RFC 5764 §4.2) from the handshake.
    fn srtp_contexts(&self) -> Result<Srtp, SfuError> {
        let (endpoint, key) = self
            .dtls
            .as_ref()
            .ok_or_else(|| internal("no DTLS association"))?;
        let state = endpoint
            .get_connection_state(*key)
            .ok_or_else(|| internal("no DTLS state"))?;
        let crypto = self.shared.crypto.crypto();
        let cert = state
            .peer_certificates
            .first()
            .ok_or_else(|| SfuError::BadSdp("the viewer presented no certificate".into()))?;
        let digest = crypto
            .hash(rtc::crypto::HashAlgorithm::Sha256, cert)
            .map_err(internal)?;
        let fingerprint = hex_colons(&digest, false);
        if !self.fingerprints.contains(&fingerprint) {
            return Err(SfuError::BadSdp(
                "the viewer's certificate does not match the offer's fingerprint".into(),
            ));
        }
        let profile = match state.srtp_protection_profile() {
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => ProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm => ProtectionProfile::AeadAes256Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            p => return Err(internal(format!("unexpected SRTP profile {p:?}"))),
        };
        let (key_len, salt_len) = (profile.key_len(), profile.salt_len());
        let material = state
            .export_keying_material(
                rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
                &[],
                2 * (key_len + salt_len),
            )
            .map_err(internal)?;
        let m: &[u8] = material.as_ref();
        // RFC 5764 §4.2: client key, server key, client salt, server salt. We are the server.
        let client_key = &m[..key_len];
        let server_key = &m[key_len..2 * key_len];
        let client_salt = &m[2 * key_len..2 * key_len + salt_len];
        let server_salt = &m[2 * key_len + salt_len..];
        let local =
            Context::new(server_key, server_salt, profile, None, None, crypto).map_err(internal)?;
        let remote = Context::new(
            client_key,
            client_salt,
            profile,
            Some(rtc::srtp::option::srtp_replay_protection(
                SRTP_REPLAY_WINDOW,
            )),
            Some(rtc::srtp::option::srtcp_replay_protection(
                SRTCP_REPLAY_WINDOW,
            )),
            crypto,
        )
        .map_err(internal)?;
        let gcm = match profile {
            ProtectionProfile::AeadAes128Gcm | ProtectionProfile::AeadAes256Gcm => {
                Some(srtp_gcm::GcmSender::new(crypto, server_key, server_salt)?)
            }
            _ => None,
        };
        Ok(Srtp { gcm, local, remote })
    }

    fn on_srtp(&mut self, _from: SocketAddr, data: &[u8]) -> DatagramVerdict {
        let Some(srtp) = self.srtp.as_mut() else {
            // Media before the session is up cannot be decrypted.
            return DatagramVerdict::Garbage;
        };
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
        if !rtcp {
            // A viewer has nothing to send; what it sends anyway is only checked.
            return match srtp.remote.decrypt_rtp(data) {
                Ok(_) => DatagramVerdict::Accepted,
                Err(_) => DatagramVerdict::Garbage,
            };
        }
        let Ok(plain) = srtp.remote.decrypt_rtcp(data) else {
            return DatagramVerdict::Garbage;
        };
        if self.dtls.is_some() {
            self.settle_dtls();
        }
        let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut plain.freeze()) else {
            return DatagramVerdict::Garbage;
        };
        // One compound packet may carry a PLI and NACKs together.
        for p in packets {
            let any = p.as_any();
            if let Some(twcc) = any.downcast_ref::<TransportLayerCc>() {
                if self.has_twcc() {
                    self.inbound
                        .push_back(Inbound::Twcc(Box::new(twcc.clone())));
                }
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                if self.remb {
                    self.inbound.push_back(Inbound::Remb {
                        bitrate_bps: f64::from(remb.bitrate),
                    });
                }
            } else if let Some(media_ssrc) = keyframe_request_ssrc(any) {
                self.inbound
                    .push_back(Inbound::KeyframeRequest { media_ssrc });
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                let seqs = nack
                    .nacks
                    .iter()
                    .flat_map(|pair| pair.packet_list())
                    .take(MAX_NACKED_PER_FEEDBACK)
                    .collect();
                self.inbound.push_back(Inbound::Nack {
                    media_ssrc: nack.media_ssrc,
                    seqs,
                });
            }
        }
        DatagramVerdict::Accepted
    }

    /// Shrinks the DTLS association to its session (see [`Settled`]). Where that fails the
    /// association is kept whole: it costs memory, nothing else.
    fn settle_dtls(&mut self) {
        let Some((endpoint, key)) = &self.dtls else {
            return;
        };
        match Settled::from_endpoint(endpoint, *key, &self.shared.crypto) {
            Ok(settled) => {
                self.settled = Some(settled);
                self.dtls = None;
            }
            Err(e) => tracing::debug!(ufrag = %self.ufrag, "DTLS association kept: {e}"),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if let Some((endpoint, key)) = self.dtls.as_mut()
            && endpoint.poll_timeout(key).is_some_and(|t| t <= now)
        {
            let gave_up = endpoint.handle_timeout(*key, now).err();
            let to = self.media_addr.unwrap_or(*key);
            while let Some(t) = endpoint.poll_transmit() {
                self.transmits.push_back((to, t.message));
            }
            if let Some(e) = gave_up
                && !self.connected
            {
                // Its retransmissions are spent: the viewer is gone. Free the handshake now
                // rather than at the connect timeout.
                tracing::debug!(ufrag = %self.ufrag, "DTLS handshake gave up: {e}");
                self.dtls = None;
                self.fail();
            }
        }
        if self.dtls.is_some() && self.settle_at.is_some_and(|t| t <= now) {
            self.settle_at = None;
            self.settle_dtls();
        }
        if self.connected && now >= self.last_stun_at + ICE_FAILED_TIMEOUT {
            tracing::info!(ufrag = %self.ufrag, "no STUN from the viewer for {ICE_FAILED_TIMEOUT:?}");
            self.fail();
        }
        if self.next_report_at.is_some_and(|t| t <= now) {
            self.next_report_at = Some(now + SENDER_REPORT_INTERVAL);
            self.send_sender_reports(now);
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let dtls = self
            .dtls
            .as_ref()
            .and_then(|(endpoint, key)| endpoint.poll_timeout(key));
        let ice = self
            .connected
            .then_some(self.last_stun_at + ICE_FAILED_TIMEOUT);
        let settle = self.settle_at.filter(|_| self.dtls.is_some());
        [dtls, ice, self.next_report_at, settle]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<(SocketAddr, BytesMut)> {
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    pub(crate) fn poll_inbound(&mut self) -> Option<Inbound> {
        self.inbound.pop_front()
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Encrypts one RTP packet into the send buffer: the header is written there, the payload
    /// copied after it (the one copy on the path) and sealed where it lies. Returns true when the
    /// buffer was empty before, i.e. the shell has a new batch to collect. The caller guarantees
    /// SSRC and payload type are this viewer's; the packet carries no header extension but the
    /// transport-wide sequence number `twcc_seq`, written where the viewer negotiated it.
    pub(crate) fn send_rtp(
        &mut self,
        now: Instant,
        header: &rtc::rtp::Header,
        payload: &Bytes,
        twcc_seq: Option<u16>,
        capture_time: Option<&AbsCaptureTime>,
        patch: Option<&DescriptorPatch>,
    ) -> bool {
        let Some(srtp) = self.srtp.as_mut() else {
            return false;
        };
        if self.media_addr.is_none() {
            return false;
        }
        let was_empty = self.segments.len() == self.sent;
        let start = self.out.len();
        let kind = if self.send_ssrc[1] == Some(header.ssrc)
            || self.rtx[1].is_some_and(|(ssrc, _)| ssrc == header.ssrc)
        {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        let send_time = self.shared.ntp_time(now);
        let (block, block_len) =
            extension_block(&self.exts[slot(kind)], twcc_seq, send_time, capture_time);
        let fixed_len = header.marshal_size();
        let header_len = fixed_len + block_len;
        let sealed = match srtp.gcm.as_mut() {
            Some(gcm) => {
                let end = start + header_len + payload.len();
                self.out.resize(end, 0);
                let packet = &mut self.out[start..end];
                header.marshal_to(&mut packet[..fixed_len]).is_ok() && {
                    if block_len > 0 {
                        packet[0] |= RTP_EXTENSION_BIT;
                        packet[fixed_len..header_len].copy_from_slice(&block[..block_len]);
                    }
                    packet[header_len..].copy_from_slice(payload);
                    if let Some(patch) = patch {
                        patch.apply(&mut packet[header_len..]);
                    }
                    let mut tag = [0u8; srtp_gcm::TAG_LEN];
                    let r = gcm.seal(
                        header.ssrc,
                        header.sequence_number,
                        packet,
                        header_len,
                        &mut tag,
                    );
                    self.out.extend_from_slice(&tag);
                    r.is_ok()
                }
            }
            None => {
                // AES-CM (legacy clients): through `rtc-srtp`, which allocates per packet.
                let mut plain = vec![0u8; header_len + payload.len()];
                header.marshal_to(&mut plain[..fixed_len]).is_ok() && {
                    if block_len > 0 {
                        plain[0] |= RTP_EXTENSION_BIT;
                        plain[fixed_len..header_len].copy_from_slice(&block[..block_len]);
                    }
                    plain[header_len..].copy_from_slice(payload);
                    if let Some(patch) = patch {
                        patch.apply(&mut plain[header_len..]);
                    }
                    match srtp.local.encrypt_rtp(&plain) {
                        Ok(out) => {
                            self.out.extend_from_slice(&out);
                            true
                        }
                        Err(_) => false,
                    }
                }
            }
        };
        let len = self.out.len() - start;
        if !sealed || len > usize::from(u16::MAX) {
            tracing::trace!(ufrag = %self.ufrag, "RTP not sent");
            self.out.truncate(start);
            return false;
        }
        self.segments.push(len as u16);
        if let Some(s) = self.senders.iter_mut().find(|s| s.ssrc == header.ssrc) {
            s.packets = s.packets.wrapping_add(1);
            s.octets = s.octets.wrapping_add(payload.len() as u32);
            s.last = Some((header.timestamp, now));
        }
        was_empty
    }

    /// The next run of queued datagrams that one UDP GSO send can carry: equal lengths, the
    /// last one possibly shorter (what the kernel accepts). Returns its destination, its bytes'
    /// range in [`Self::send_buffer`] and its segment length; `None` (and an empty buffer) once
    /// everything was handed out.
    pub(crate) fn next_batch(&mut self) -> Option<(SocketAddr, std::ops::Range<usize>, usize)> {
        let first = self.segments.get(self.sent).copied();
        let (Some(first), Some(to)) = (first, self.media_addr) else {
            self.out.clear();
            self.segments.clear();
            self.sent = 0;
            self.sent_bytes = 0;
            if self.out.capacity() > MAX_RETAINED_SEND_BUFFER_BYTES {
                self.out = Vec::new();
                self.segments = Vec::new();
            }
            return None;
        };
        let seg = usize::from(first);
        let mut n = 1;
        let mut bytes = seg;
        while let Some(&next) = self.segments.get(self.sent + n) {
            let next = usize::from(next);
            if n >= MAX_SEGMENTS_PER_BATCH || bytes + next > MAX_BATCH_BYTES || next > seg {
                break;
            }
            n += 1;
            bytes += next;
            if next < seg {
                // A shorter segment ends a GSO send.
                break;
            }
        }
        let range = self.sent_bytes..self.sent_bytes + bytes;
        self.sent += n;
        self.sent_bytes += bytes;
        Some((to, range, seg))
    }

    pub(crate) fn send_buffer(&self) -> &[u8] {
        &self.out
    }

    fn send_sender_reports(&mut self, now: Instant) {
        let (Some(srtp), Some(to)) = (self.srtp.as_mut(), self.media_addr) else {
            return;
        };
        let ntp_time = self.shared.ntp_time(now);
        for s in &self.senders {
            let Some((ts, at)) = s.last else { continue };
            let elapsed = now.saturating_duration_since(at);
            let rtp_time = ts.wrapping_add(
                (elapsed.as_micros() as u64 * u64::from(s.clock_rate) / 1_000_000) as u32,
            );
            let sr = SenderReport {
                ssrc: s.ssrc,
                ntp_time,
                rtp_time,
                packet_count: s.packets,
                octet_count: s.octets,
                ..Default::default()
            };
            let Ok(plain) = sr.marshal() else { continue };
            match srtp.local.encrypt_rtcp(&plain) {
                Ok(out) => self.transmits.push_back((to, out)),
                Err(e) => tracing::trace!(ufrag = %self.ufrag, "sender report not sent: {e}"),
            }
        }
    }

    pub(crate) fn close(&mut self) {
        if let Some(settled) = self.settled.take() {
            match settled.restore(self.last_now, &self.shared) {
                Ok(endpoint) => self.dtls = Some((endpoint, settled.key)),
                Err(e) => tracing::debug!(ufrag = %self.ufrag, "no close_notify: {e}"),
            }
        }
        if let Some((mut endpoint, key)) = self.dtls.take() {
            let _ = endpoint.stop(self.last_now, key);
            let to = self.media_addr.unwrap_or(key);
            while let Some(t) = endpoint.poll_transmit() {
                self.transmits.push_back((to, t.message));
            }
        }
        self.srtp = None;
    }
}

#[cfg(test)]
mod tests;

/// An RTP header without CSRCs or extensions.
const RTP_FIXED_HEADER_BYTES: usize = 12;
/// The X bit of an RTP header's first byte.
const RTP_EXTENSION_BIT: u8 = 0x10;

/// What the playout delay extension asks of receivers, in its 10 ms units: no added delay at
/// least, and at most 200 ms. A maximum of 0 would put Chromium on its low-latency renderer,
/// which shows each frame as it is decoded and stutters at the slightest jitter; 200 ms lets
/// the jitter buffer absorb a normal network's jitter while keeping it from growing towards
/// the seconds it may reach after a burst of loss.
pub(crate) const PLAYOUT_DELAY_MIN_10MS: u16 = 0;
pub(crate) const PLAYOUT_DELAY_MAX_10MS: u16 = 20;

/// A one-byte-header extension block (RFC 8285 §4.2) with the elements `ids` names: the
/// transport-wide sequence number `twcc_seq` (where given), the absolute send time from
/// `send_time` (NTP, 32.32 fixed point: the 6.18 fixed-point seconds of the extension are
/// its bits 14 to 37), the playout delay and the broadcaster's capture time, as it came.
/// Returns the block and its length, a multiple of four (0: no element, no block).
fn extension_block(
    ids: &sdp::ExtensionIds,
    twcc_seq: Option<u16>,
    send_time: u64,
    capture_time: Option<&AbsCaptureTime>,
) -> ([u8; MAX_EXTENSION_BYTES], usize) {
    let mut block = [0u8; MAX_EXTENSION_BYTES];
    let mut at = 4;
    let mut element = |block: &mut [u8; MAX_EXTENSION_BYTES], id: u8, data: &[u8]| {
        block[at] = (id << 4) | (data.len() as u8 - 1);
        block[at + 1..at + 1 + data.len()].copy_from_slice(data);
        at += 1 + data.len();
    };
    if let (Some(id), Some(seq)) = (ids.twcc, twcc_seq) {
        element(&mut block, id, &seq.to_be_bytes());
    }
    if let Some(id) = ids.abs_send_time {
        let t = ((send_time >> 14) as u32 & 0x00FF_FFFF).to_be_bytes();
        element(&mut block, id, &t[1..]);
    }
    if let Some(id) = ids.playout_delay {
        let v = (u32::from(PLAYOUT_DELAY_MIN_10MS) << 12) | u32::from(PLAYOUT_DELAY_MAX_10MS);
        element(&mut block, id, &v.to_be_bytes()[1..]);
    }
    if let (Some(id), Some(capture)) = (ids.abs_capture_time, capture_time) {
        element(&mut block, id, capture.as_bytes());
    }
    if at == 4 {
        return (block, 0);
    }
    let len = at.div_ceil(4) * 4;
    block[..4].copy_from_slice(&[0xBE, 0xDE, 0, ((len - 4) / 4) as u8]);
    (block, len)
}

#[cfg(test)]
mod twcc_tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;

    fn parse_with(
        ids: &sdp::ExtensionIds,
        twcc_seq: Option<u16>,
        send_time: u64,
        capture_time: Option<&AbsCaptureTime>,
    ) -> rtc::rtp::Packet {
        let header = rtc::rtp::Header {
            version: 2,
            marker: true,
            payload_type: 96,
            sequence_number: 7,
            timestamp: 9000,
            ssrc: 0x1234_5678,
            ..Default::default()
        };
        let fixed = header.marshal_size();
        let (block, len) = extension_block(ids, twcc_seq, send_time, capture_time);
        assert_eq!(len % 4, 0);
        let mut packet = vec![0u8; fixed + len + 3];
        header.marshal_to(&mut packet[..fixed]).unwrap();
        if len > 0 {
            packet[0] |= RTP_EXTENSION_BIT;
        }
        packet[fixed..fixed + len].copy_from_slice(&block[..len]);
        packet[fixed + len..].copy_from_slice(&[1, 2, 3]);
        let parsed = rtc::rtp::Packet::unmarshal(&mut &packet[..]).unwrap();
        assert_eq!(parsed.header.sequence_number, 7);
        assert_eq!(parsed.header.ssrc, 0x1234_5678);
        assert_eq!(&parsed.payload[..], &[1, 2, 3]);
        parsed
    }

    #[test]
    fn the_transport_wide_sequence_number_is_a_one_byte_extension_rtc_reads() {
        let ids = sdp::ExtensionIds {
            twcc: Some(5),
            ..Default::default()
        };
        let parsed = parse_with(&ids, Some(0xABCD), 0, None);
        assert_eq!(
            parsed.header.get_extension(5).as_deref(),
            Some(&[0xAB, 0xCD][..])
        );
        // No number given (a kind whose section did not negotiate it): no block at all.
        assert!(!parse_with(&ids, None, 0, None).header.extension);
    }

    #[test]
    fn send_time_and_playout_delay_ride_beside_the_sequence_number() {
        let ids = sdp::ExtensionIds {
            twcc: Some(3),
            abs_send_time: Some(2),
            playout_delay: Some(14),
            abs_capture_time: Some(1),
        };
        // 1.5 s in NTP 32.32: the 6.18 fixed point of the extension is 1.5 * 2^18.
        let send_time = (1u64 << 32) + (1u64 << 31);
        let capture: Vec<u8> = (1..=16).collect();
        let capture_time = AbsCaptureTime::new(&capture).expect("16 bytes");
        let parsed = parse_with(&ids, Some(9), send_time, Some(&capture_time));
        assert_eq!(
            parsed.header.get_extension(1).as_deref(),
            Some(&capture[..]),
            "the capture time as it came"
        );
        assert_eq!(parsed.header.get_extension(3).as_deref(), Some(&[0, 9][..]));
        let abs = parsed.header.get_extension(2).expect("abs-send-time");
        let value = u32::from_be_bytes([0, abs[0], abs[1], abs[2]]);
        assert_eq!(value, 3 << 17);
        let delay = parsed.header.get_extension(14).expect("playout-delay");
        let v = u32::from_be_bytes([0, delay[0], delay[1], delay[2]]);
        assert_eq!(
            (v >> 12, v & 0xFFF),
            (
                u32::from(PLAYOUT_DELAY_MIN_10MS),
                u32::from(PLAYOUT_DELAY_MAX_10MS)
            )
        );
        // Without the sequence number the other two still go.
        let parsed = parse_with(&ids, None, send_time, None);
        assert!(parsed.header.get_extension(3).is_none());
        assert!(
            parsed.header.get_extension(1).is_none(),
            "no capture time, none sent"
        );
        assert!(parsed.header.get_extension(2).is_some());
    }
}
