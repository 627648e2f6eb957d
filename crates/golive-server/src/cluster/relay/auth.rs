//! How nodes authenticate their requests to each other: an HMAC-SHA256 with the cluster secret
//! over the method, the stream, the requesting node, the time and a nonce, checked in constant
//! time; a request older than [`AUTH_MAX_AGE`] or with a nonce seen before is refused.

use base64::Engine;
use golive_proto::StreamName;
use ring::hmac;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The header that authenticates one node's request to another.
pub const AUTH_HEADER: &str = "x-golive-relay-auth";
/// A signed request is good for this long (clocks of nodes may differ by a few seconds).
pub const AUTH_MAX_AGE: Duration = Duration::from_secs(30);

/// Seconds since the Unix epoch, as requests are signed with.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs and checks node-to-node requests with the cluster secret.
pub struct Auth {
    key: hmac::Key,
    /// Nonces of requests accepted in the last [`AUTH_MAX_AGE`] (a replay is refused).
    seen: Mutex<HashMap<String, u64>>,
}

/// Why a node-to-node request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no {AUTH_HEADER} header")]
    Missing,
    #[error("a malformed {AUTH_HEADER} header")]
    Malformed,
    #[error("a request signed too long ago (or in the future)")]
    Stale,
    #[error("a request not signed with the cluster secret")]
    BadSignature,
    #[error("a request seen before")]
    Replayed,
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            seen: Mutex::default(),
        }
    }

    fn message(method: &str, stream: &str, node: &str, secs: u64, nonce: &str) -> String {
        format!("golive-relay\n{method}\n{stream}\n{node}\n{secs}\n{nonce}")
    }

    /// The header value for `node`'s request `method` on `stream`, signed now.
    pub fn sign(&self, method: &str, stream: &StreamName, node: &str, secs: u64) -> String {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let msg = Self::message(method, stream.as_str(), node, secs, &nonce);
        let tag = hmac::sign(&self.key, msg.as_bytes());
        let tag = base64::engine::general_purpose::STANDARD_NO_PAD.encode(tag.as_ref());
        format!("{node}:{secs}:{nonce}:{tag}")
    }

    /// Checks a request's header (the signature in constant time); returns the node that made
    /// it.
    pub fn check(
        &self,
        method: &str,
        stream: &StreamName,
        value: Option<&str>,
        now_secs: u64,
    ) -> Result<String, AuthError> {
        let value = value.ok_or(AuthError::Missing)?;
        let mut parts = value.splitn(4, ':');
        let (Some(node), Some(secs), Some(nonce), Some(tag)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let secs: u64 = secs.parse().map_err(|_| AuthError::Malformed)?;
        let tag = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(tag)
            .map_err(|_| AuthError::Malformed)?;
        if now_secs.abs_diff(secs) > AUTH_MAX_AGE.as_secs() {
            return Err(AuthError::Stale);
        }
        let msg = Self::message(method, stream.as_str(), node, secs, nonce);
        hmac::verify(&self.key, msg.as_bytes(), &tag).map_err(|_| AuthError::BadSignature)?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now_secs.abs_diff(*at) <= 2 * AUTH_MAX_AGE.as_secs());
        if seen.insert(nonce.to_owned(), secs).is_some() {
            return Err(AuthError::Replayed);
        }
        Ok(node.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> StreamName {
        StreamName::new("show").unwrap()
    }

    #[test]
    fn a_signed_request_is_accepted_once_and_only_with_the_secret() {
        let auth = Auth::new("s3cret");
        let now = 1_000_000;
        let h = auth.sign("POST", &stream(), "node-a", now);
        assert_eq!(
            auth.check("POST", &stream(), Some(&h), now + 5),
            Ok("node-a".into())
        );
        assert_eq!(
            auth.check("POST", &stream(), Some(&h), now + 6),
            Err(AuthError::Replayed)
        );
        let other = Auth::new("not the secret");
        let h = other.sign("POST", &stream(), "node-a", now);
        assert_eq!(
            auth.check("POST", &stream(), Some(&h), now),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_signature_is_bound_to_its_stream_method_and_time() {
        let auth = Auth::new("s3cret");
        let now = 1_000_000;
        let h = auth.sign("GET", &stream(), "node-a", now);
        let other = StreamName::new("other").unwrap();
        assert_eq!(
            auth.check("GET", &other, Some(&h), now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            auth.check("POST", &stream(), Some(&h), now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            auth.check("GET", &stream(), Some(&h), now + 31),
            Err(AuthError::Stale)
        );
        assert_eq!(
            auth.check("GET", &stream(), None, now),
            Err(AuthError::Missing)
        );
        assert_eq!(
            auth.check("GET", &stream(), Some("node-a:x"), now),
            Err(AuthError::Malformed)
        );
    }
}
