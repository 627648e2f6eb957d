//! The ICE-lite side of a viewer: answer the viewer's connectivity checks, nothing more.
//!
//! As ICE-lite (RFC 8445 §2.5) the SFU never sends checks of its own: it answers each binding
//! request whose USERNAME names our ufrag and whose MESSAGE-INTEGRITY verifies with our password,
//! and the address it came from is then proven (the viewer knows the password, so the request
//! is no forgery). Everything else is refused without an answer.

use rtc::crypto::RTCCrypto;
use rtc::stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::SocketAddr;

/// A binding request that passed the integrity check.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The success response to send back to where the request came from.
    pub response: Vec<u8>,
    /// The viewer (the controlling agent) nominated this address.
    pub use_candidate: bool,
}

/// Why a STUN message got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a STUN message, or not a binding request (indications and responses are not ours
    /// to answer).
    NotARequest,
    /// USERNAME is missing or does not start with our ufrag.
    WrongUsername,
    /// MESSAGE-INTEGRITY is missing or does not verify with our password.
    BadIntegrity,
}

/// Checks one STUN binding request against our credentials and builds the answer.
pub(crate) fn check_binding_request(
    data: &[u8],
    from: SocketAddr,
    local_ufrag: &str,
    local_pwd: &str,
    crypto: &dyn RTCCrypto,
) -> Result<Checked, Refused> {
    let mut m = Message::new();
    m.unmarshal_binary(data).map_err(|_| Refused::NotARequest)?;
    if m.typ != BINDING_REQUEST {
        return Err(Refused::NotARequest);
    }
    let username =
        TextAttribute::get_from_as(&m, ATTR_USERNAME).map_err(|_| Refused::WrongUsername)?;
    let ours = username
        .text
        .split_once(':')
        .is_some_and(|(local, _)| local == local_ufrag);
    if !ours {
        return Err(Refused::WrongUsername);
    }
    MessageIntegrity::check(&mut m, local_pwd.as_bytes(), crypto)
        .map_err(|_| Refused::BadIntegrity)?;
    let use_candidate = m.contains(ATTR_USE_CANDIDATE);

    let mut out = Message::new();
    let setters: [Box<dyn Setter + '_>; 5] = [
        Box::new(m),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            local_pwd.to_owned(),
            crypto,
        )),
        Box::new(FINGERPRINT),
    ];
    // Building can only fail on our own attributes, which are well-formed.
    out.build(&setters).map_err(|_| Refused::NotARequest)?;
    Ok(Checked {
        response: out.raw,
        use_candidate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::attributes::ATTR_PRIORITY;
    use rtc::stun::message::BINDING_SUCCESS;

    fn crypto() -> std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider> {
        rtc::crypto::default_provider().expect("a crypto provider is compiled in")
    }

    fn request(username: &str, pwd: &str, nominate: bool) -> Vec<u8> {
        let c = crypto();
        let mut m = Message::new();
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(rtc::stun::message::TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        ];
        if nominate {
            setters.push(Box::new(rtc::stun::attributes::RawAttribute {
                typ: ATTR_USE_CANDIDATE,
                length: 0,
                value: vec![],
            }));
        }
        setters.push(Box::new(rtc::stun::attributes::RawAttribute {
            typ: ATTR_PRIORITY,
            length: 4,
            value: vec![0, 0, 0, 1],
        }));
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(pwd.to_owned(), c.crypto()),
        ));
        setters.push(Box::new(FINGERPRINT));
        m.build(&setters).expect("builds");
        m.raw
    }

    const FROM: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)),
        5555,
    );

    #[test]
    fn a_request_with_our_credentials_is_answered_with_its_address() {
        let c = crypto();
        let req = request("ours:theirs", "secretsecretsecret", false);
        let got = check_binding_request(&req, FROM, "ours", "secretsecretsecret", c.crypto())
            .expect("answered");
        assert!(!got.use_candidate);
        let mut resp = Message::new();
        resp.unmarshal_binary(&got.response).expect("parses");
        assert_eq!(resp.typ, BINDING_SUCCESS);
        let mut xor = XorMappedAddress::default();
        xor.get_from_as(&resp, rtc::stun::attributes::ATTR_XORMAPPED_ADDRESS)
            .expect("has XOR-MAPPED-ADDRESS");
        assert_eq!(SocketAddr::new(xor.ip, xor.port), FROM);
        MessageIntegrity::check(&mut resp, b"secretsecretsecret", c.crypto())
            .expect("the answer is signed with our password");
    }

    #[test]
    fn nomination_is_reported() {
        let c = crypto();
        let req = request("ours:theirs", "pw-pw-pw-pw-pw-pw-pw", true);
        let got = check_binding_request(&req, FROM, "ours", "pw-pw-pw-pw-pw-pw-pw", c.crypto())
            .expect("answered");
        assert!(got.use_candidate);
    }

    #[test]
    fn a_wrong_password_or_ufrag_or_garbage_gets_no_answer() {
        let c = crypto();
        let req = request("ours:theirs", "not-the-password-at-all", false);
        assert_eq!(
            check_binding_request(&req, FROM, "ours", "the-real-password-here", c.crypto())
                .unwrap_err(),
            Refused::BadIntegrity
        );
        let req = request("other:theirs", "the-real-password-here", false);
        assert_eq!(
            check_binding_request(&req, FROM, "ours", "the-real-password-here", c.crypto())
                .unwrap_err(),
            Refused::WrongUsername
        );
        for junk in [&b""[..], &[0u8; 20], &[0, 1, 0, 4, 0x21, 0x12, 0xa4, 0x42]] {
            assert!(check_binding_request(junk, FROM, "ours", "pw", c.crypto()).is_err());
        }
    }
}
