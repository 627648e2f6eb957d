//! SRTP with AES-GCM (RFC 7714) sealed in place, for what we send a viewer.
//!
//! `rtc-srtp`'s context returns every protected packet in a new buffer; on the forwarding path
//! that is one allocation and one more copy per packet and viewer. Here the caller writes the
//! RTP header and payload straight into the viewer's send buffer and this seals the payload
//! where it lies (the header is the AEAD's additional data), appending the tag. The session keys
//! come from the master key and salt with the AES-CM PRF of RFC 3711 §4.3.3.

use rtc::crypto::{AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, RTCCrypto};

use crate::SfuError;

/// RFC 3711 §4.3.2 labels.
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_SALT: u8 = 0x02;
/// RFC 7714: 12-byte salt and nonce, 16-byte tag.
const SALT_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
const AES_BLOCK: usize = 16;
/// At most this many SSRCs are sent from per viewer (audio, video, video RTX).
const MAX_SSRCS: usize = 4;

/// Rollover counter of one SSRC we send from (RFC 3711 §3.3.1).
#[derive(Debug, Clone, Copy)]
struct Rollover {
    ssrc: u32,
    roc: u32,
    highest_seq: u16,
}

/// No `Debug`: it holds the session key and salt.
pub(crate) struct GcmSender {
    aead: Box<dyn AeadCipher>,
    session_salt: [u8; SALT_LEN],
    rollovers: [Option<Rollover>; MAX_SSRCS],
}

fn internal(e: impl std::fmt::Display) -> SfuError {
    SfuError::Internal(e.to_string())
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with key derivation rate 0: the IV is the master salt
/// (left-aligned, zero-padded to 14 bytes) with the label XORed into byte 7, then a 16-bit block
/// counter; the output is the keystream itself (AES of the IVs).
fn derive(
    crypto: &dyn RTCCrypto,
    master_key: &[u8],
    master_salt: &[u8],
    label: u8,
    out: &mut [u8],
) -> Result<(), SfuError> {
    let algorithm = match master_key.len() {
        16 => BlockCipherAlgorithm::Aes128,
        32 => BlockCipherAlgorithm::Aes256,
        n => return Err(internal(format!("master key of {n} bytes"))),
    };
    for (i, chunk) in out.chunks_mut(AES_BLOCK).enumerate() {
        let mut block = [0u8; AES_BLOCK];
        block[..master_salt.len()].copy_from_slice(master_salt);
        block[7] ^= label;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        crypto
            .block_encrypt(algorithm, master_key, &mut block)
            .map_err(internal)?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

impl GcmSender {
    pub(crate) fn new(
        crypto: &dyn RTCCrypto,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, SfuError> {
        if master_salt.len() != SALT_LEN {
            return Err(internal(format!("GCM salt of {} bytes", master_salt.len())));
        }
        let algorithm = match master_key.len() {
            16 => AeadAlgorithm::Aes128Gcm,
            32 => AeadAlgorithm::Aes256Gcm,
            n => return Err(internal(format!("master key of {n} bytes"))),
        };
        let mut session_key = vec![0u8; master_key.len()];
        derive(
            crypto,
            master_key,
            master_salt,
            LABEL_RTP_ENCRYPTION,
            &mut session_key,
        )?;
        let mut session_salt = [0u8; SALT_LEN];
        derive(
            crypto,
            master_key,
            master_salt,
            LABEL_RTP_SALT,
            &mut session_salt,
        )?;
        let aead = crypto.new_aead(algorithm, &session_key).map_err(internal)?;
        Ok(Self {
            aead,
            session_salt,
            rollovers: [None; MAX_SSRCS],
        })
    }

    /// The rollover counter for `seq` of `ssrc`: advances on a wrap, and gives a retransmission
    /// from before the last wrap the counter it was first sent with.
    fn roc(&mut self, ssrc: u32, seq: u16) -> u32 {
        let slot = self
            .rollovers
            .iter()
            .position(|r| r.is_some_and(|r| r.ssrc == ssrc))
            .or_else(|| self.rollovers.iter().position(Option::is_none));
        let Some(slot) = slot else {
            // More SSRCs than a viewer is ever sent: reuse the first (a bug upstream).
            debug_assert!(false, "more than {MAX_SSRCS} SSRCs sent to one viewer");
            return 0;
        };
        let r = self.rollovers[slot].get_or_insert(Rollover {
            ssrc,
            roc: 0,
            highest_seq: seq,
        });
        let ahead = seq.wrapping_sub(r.highest_seq) as i16;
        if ahead > 0 {
            if seq < r.highest_seq {
                r.roc = r.roc.wrapping_add(1);
            }
            r.highest_seq = seq;
            r.roc
        } else if seq > r.highest_seq {
            // Older than the highest, but numerically larger: sent before the last wrap.
            r.roc.wrapping_sub(1)
        } else {
            r.roc
        }
    }

    /// Seals the RTP packet `packet[..header_len]` (header) + `packet[header_len..]` (payload)
    /// in place and appends the tag to `tag_out`. `ssrc` and `seq` are the header's.
    pub(crate) fn seal(
        &mut self,
        ssrc: u32,
        seq: u16,
        packet: &mut [u8],
        header_len: usize,
        tag_out: &mut [u8; TAG_LEN],
    ) -> Result<(), SfuError> {
        let roc = self.roc(ssrc, seq);
        // RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, XOR the session salt.
        let mut nonce = [0u8; SALT_LEN];
        nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
        nonce[6..10].copy_from_slice(&roc.to_be_bytes());
        nonce[10..12].copy_from_slice(&seq.to_be_bytes());
        for (n, s) in nonce.iter_mut().zip(self.session_salt) {
            *n ^= s;
        }
        let (aad, payload) = packet.split_at_mut(header_len);
        self.aead
            .seal_in_place(&nonce, aad, payload, tag_out)
            .map_err(internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::{Marshal, MarshalSize};
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    fn seal_packet(s: &mut GcmSender, header: &rtc::rtp::Header, payload: &[u8]) -> Vec<u8> {
        let hl = header.marshal_size();
        let mut buf = vec![0u8; hl + payload.len()];
        header.marshal_to(&mut buf[..hl]).expect("header");
        buf[hl..].copy_from_slice(payload);
        let mut tag = [0u8; TAG_LEN];
        s.seal(header.ssrc, header.sequence_number, &mut buf, hl, &mut tag)
            .expect("seal");
        buf.extend_from_slice(&tag);
        buf
    }

    /// What we seal, `rtc-srtp` opens: same key derivation, nonce and rollover counting, across
    /// a sequence-number wrap and with a retransmission from before it.
    #[test]
    fn sealed_packets_open_with_rtc_srtp_across_a_wrap() {
        let provider = rtc::crypto::default_provider().expect("provider");
        for (profile, key_len) in [
            (ProtectionProfile::AeadAes128Gcm, 16),
            (ProtectionProfile::AeadAes256Gcm, 32),
        ] {
            let key: Vec<u8> = (0..key_len as u8).collect();
            let salt: Vec<u8> = (100..112).collect();
            let mut ours = GcmSender::new(provider.crypto(), &key, &salt).expect("sender");
            let mut theirs =
                Context::new(&key, &salt, profile, None, None, provider.crypto()).expect("context");
            let mut seqs: Vec<u16> = (65_530..=65_535).chain(0..5).collect();
            seqs.push(65_534); // a retransmission from before the wrap
            seqs.push(6);
            for (i, seq) in seqs.into_iter().enumerate() {
                let header = rtc::rtp::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: 1000 + i as u32,
                    ssrc: 0xdead_beef,
                    marker: i % 3 == 0,
                    ..Default::default()
                };
                let payload: Vec<u8> = (0..200).map(|b| (b as u8) ^ (i as u8)).collect();
                let sealed = seal_packet(&mut ours, &header, &payload);
                let opened = theirs.decrypt_rtp(&sealed).expect("rtc-srtp opens it");
                assert_eq!(&opened[header.marshal_size()..], &payload[..], "seq {seq}");
            }
        }
    }
}
