//! A viewer the test drives by hand, datagram by datagram: its own STUN, its own DTLS client
//! (`rtc-dtls`) and, once keyed, its own SRTCP. Where a [`super::Client`] is a well-behaved
//! browser, this one can stop mid-handshake, mutate its flights, or send authenticated RTCP of
//! any shape, so tests reach the lean leg's input paths behind each layer of protection.

use bytes::BytesMut;
use golive_proto::StreamName;
use golive_sfu::{PeerId, StreamMedia};
use rtc::crypto::RTCCryptoProvider;
use rtc::dtls::config::{ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc::dtls::endpoint::{Endpoint, EndpointEvent};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::shared::TransportProtocol;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use rtc::stun::attributes::{ATTR_PRIORITY, ATTR_USE_CANDIDATE, ATTR_USERNAME, RawAttribute};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
use rtc::stun::textattrs::TextAttribute;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{SFU_ADDR, Sim};

/// The shared pieces: one crypto provider and one client certificate for every raw viewer of a
/// test (making a certificate is the slow part).
pub struct RawKit {
    pub crypto: Arc<dyn RTCCryptoProvider>,
    config: Arc<HandshakeConfig>,
    /// `a=fingerprint:sha-256 ...` of the certificate.
    fingerprint_line: String,
}

impl RawKit {
    pub fn new() -> Self {
        let crypto = rtc::crypto::default_provider().expect("a crypto provider is compiled in");
        let cert = rtc::dtls::crypto::Certificate::generate_self_signed(
            vec!["raw-viewer".to_owned()],
            crypto.crypto(),
        )
        .expect("certificate");
        let der = cert.certificate.first().expect("DER").clone();
        let digest = crypto
            .crypto()
            .hash(rtc::crypto::HashAlgorithm::Sha256, der.as_ref())
            .expect("sha-256");
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        let config = ConfigBuilder::default()
            .with_crypto_provider(crypto.clone())
            .with_certificates(vec![cert])
            .with_srtp_protection_profiles(vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm])
            .with_insecure_skip_verify(true)
            .with_extended_master_secret(ExtendedMasterSecretType::Require)
            .build(true, None)
            .expect("client config");
        Self {
            crypto,
            config: Arc::new(config),
            fingerprint_line: format!("a=fingerprint:sha-256 {}", hex.join(":")),
        }
    }
}

impl Default for RawKit {
    fn default() -> Self {
        Self::new()
    }
}

/// One hand-driven viewer.
pub struct RawViewer {
    pub id: PeerId,
    pub addr: SocketAddr,
    /// The SFU's ICE credentials for this viewer (from its answer).
    pub sfu_ufrag: String,
    pub sfu_pwd: String,
    crypto: Arc<dyn RTCCryptoProvider>,
    config: Arc<HandshakeConfig>,
    dtls: Endpoint,
    dtls_started: bool,
    pub connected: bool,
    /// The SFU closed the association (its close_notify arrived).
    pub closed_by_sfu: bool,
    /// What we send (SRTCP) and what the SFU sends us (SRTP), once keyed.
    local: Option<Context>,
    remote: Option<Context>,
    /// The keying material the handshake exported (RFC 5764 §4.2: client key, server key,
    /// client salt, server salt), for tests that look for it where it must not be.
    pub exported: Option<Vec<u8>>,
}

impl RawViewer {
    /// Offers to watch `stream` through the SFU with `kit`'s certificate; the SFU answers.
    pub fn join(s: &mut Sim, kit: &RawKit, id: PeerId, stream: &StreamName, port: u16) -> Self {
        let offer: String = s
            .viewer_offer()
            .lines()
            .map(|l| {
                if l.starts_with("a=fingerprint:") {
                    kit.fingerprint_line.clone()
                } else {
                    l.to_owned()
                }
            })
            .map(|l| l + "\r\n")
            .collect();
        let media: StreamMedia = s.media[stream].clone();
        let now = s.now;
        let answer = s
            .sfu
            .add_viewer(now, id, stream.clone(), &media, &offer)
            .expect("the SFU answers a raw viewer");
        let attr = |name: &str| {
            answer
                .sdp
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .expect("the answer has ICE credentials")
                .to_owned()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        s.catch_stray(addr);
        s.pump();
        Self {
            id,
            addr,
            sfu_ufrag: attr("a=ice-ufrag:"),
            sfu_pwd: attr("a=ice-pwd:"),
            crypto: kit.crypto.clone(),
            config: kit.config.clone(),
            dtls: Endpoint::new(addr, TransportProtocol::UDP, None),
            dtls_started: false,
            connected: false,
            closed_by_sfu: false,
            local: None,
            remote: None,
            exported: None,
        }
    }

    /// Presents `other`'s certificate in the handshake instead of the one the offer announced.
    pub fn use_certificate_of(&mut self, other: &RawKit) {
        self.config = other.config.clone();
    }

    /// A binding request with this `username` (`"<sfu ufrag>:<ours>"` for a real one), signed
    /// with `pwd`.
    pub fn stun_request(&self, username: &str, pwd: &str, nominate: bool) -> Vec<u8> {
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
            Box::new(RawAttribute {
                typ: ATTR_PRIORITY,
                length: 4,
                value: vec![0x6e, 0, 1, 0xff],
            }),
        ];
        if nominate {
            setters.push(Box::new(RawAttribute {
                typ: ATTR_USE_CANDIDATE,
                length: 0,
                value: vec![],
            }));
        }
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.to_owned(),
                self.crypto.crypto(),
            ),
        ));
        setters.push(Box::new(FINGERPRINT));
        m.build(&setters).expect("a STUN request builds");
        m.raw
    }

    /// A binding request the SFU accepts.
    pub fn valid_stun(&self, nominate: bool) -> Vec<u8> {
        self.stun_request(&format!("{}:raw", self.sfu_ufrag), &self.sfu_pwd, nominate)
    }

    /// Sends a valid check (nominating) from this viewer's address, binding it.
    pub fn check(&self, s: &mut Sim) {
        let m = self.valid_stun(true);
        s.inject(self.addr, &m);
        s.take_stray(self.addr);
    }

    /// The first flight: the ClientHello.
    pub fn start_dtls(&mut self, now: Instant) -> Vec<BytesMut> {
        if !self.dtls_started {
            self.dtls_started = true;
            self.dtls
                .connect(now, SFU_ADDR, self.config.clone(), None)
                .expect("the DTLS client starts");
        }
        self.drain()
    }

    fn drain(&mut self) -> Vec<BytesMut> {
        let mut out = Vec::new();
        while let Some(t) = self.dtls.poll_transmit() {
            out.push(t.message);
        }
        out
    }

    /// A datagram from the SFU; returns what the viewer sends in reply.
    pub fn receive(&mut self, now: Instant, data: &[u8]) -> Vec<BytesMut> {
        let Some(&first) = data.first() else {
            return Vec::new();
        };
        if (20..=63).contains(&first) && self.dtls_started {
            if let Ok(events) = self.dtls.read(now, SFU_ADDR, None, BytesMut::from(data)) {
                for e in events {
                    match e {
                        EndpointEvent::HandshakeComplete => self.on_connected(),
                        EndpointEvent::PeerClosed => self.closed_by_sfu = true,
                        _ => {}
                    }
                }
            }
        } else if (128..=191).contains(&first)
            && let Some(remote) = self.remote.as_mut()
        {
            let _ = remote.decrypt_rtp(data);
        }
        self.drain()
    }

    /// Ends the association: our close_notify.
    pub fn close(&mut self, now: Instant) -> Vec<BytesMut> {
        let _ = self.dtls.stop(now, SFU_ADDR);
        self.drain()
    }

    /// A receiver report, protected: the first authenticated SRTCP shows the SFU the handshake
    /// is done on our side.
    pub fn receiver_report(&mut self) -> Option<Vec<u8>> {
        self.srtcp(&[0x80, 201, 0, 1, 0, 0, 0, 7])
    }

    /// Retransmissions due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<BytesMut> {
        if self.dtls.poll_timeout(&SFU_ADDR).is_some_and(|t| t <= now) {
            let _ = self.dtls.handle_timeout(SFU_ADDR, now);
        }
        self.drain()
    }

    fn on_connected(&mut self) {
        let Some(state) = self.dtls.get_connection_state(SFU_ADDR) else {
            return;
        };
        let profile = ProtectionProfile::AeadAes128Gcm;
        let (k, s) = (profile.key_len(), profile.salt_len());
        let Ok(m) = state.export_keying_material(
            rtc::srtp::config::LABEL_EXTRACTOR_DTLS_SRTP,
            &[],
            2 * (k + s),
        ) else {
            return;
        };
        let m: &[u8] = m.as_ref();
        self.exported = Some(m.to_vec());
        let (client_key, server_key) = (&m[..k], &m[k..2 * k]);
        let (client_salt, server_salt) = (&m[2 * k..2 * k + s], &m[2 * k + s..]);
        let crypto = self.crypto.crypto();
        self.local = Context::new(client_key, client_salt, profile, None, None, crypto).ok();
        self.remote = Context::new(server_key, server_salt, profile, None, None, crypto).ok();
        self.connected = self.local.is_some() && self.remote.is_some();
    }

    /// `plain` RTCP protected with our SRTCP key; `None` before the handshake.
    pub fn srtcp(&mut self, plain: &[u8]) -> Option<Vec<u8>> {
        self.local
            .as_mut()?
            .encrypt_rtcp(plain)
            .ok()
            .map(|b| b.to_vec())
    }

    /// Drives the handshake through the SFU until it is done (or `limit` has passed), stepping
    /// the clock only while nothing is in flight.
    pub fn connect(&mut self, s: &mut Sim, limit: std::time::Duration) -> bool {
        let end = s.now + limit;
        let mut send = self.start_dtls(s.now);
        loop {
            for d in send.drain(..) {
                s.inject(self.addr, &d);
            }
            let now = s.now;
            for d in s.take_stray(self.addr) {
                send.extend(self.receive(now, &d));
            }
            if self.connected || s.now >= end {
                return self.connected;
            }
            if send.is_empty() {
                s.step();
                send = self.handle_timeout(s.now);
            }
        }
    }

    /// Drives the handshake through the SFU (clock running) until it is done or `limit` has
    /// passed; `tamper` sees every datagram the viewer sends and may change or drop it.
    pub fn handshake(
        &mut self,
        s: &mut Sim,
        limit: std::time::Duration,
        mut tamper: impl FnMut(Vec<u8>) -> Option<Vec<u8>>,
    ) {
        let end = s.now + limit;
        let mut send = self.start_dtls(s.now);
        while s.now < end {
            for d in send.drain(..) {
                if let Some(d) = tamper(d.to_vec()) {
                    s.inject(self.addr, &d);
                }
            }
            let now = s.now;
            for d in s.take_stray(self.addr) {
                send.extend(self.receive(now, &d));
            }
            if !send.is_empty() {
                continue;
            }
            s.step();
            send = self.handle_timeout(s.now);
            let now = s.now;
            for d in s.take_stray(self.addr) {
                send.extend(self.receive(now, &d));
            }
        }
    }
}
