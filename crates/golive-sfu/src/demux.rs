//! Demultiplexing of one UDP socket among many peers.
//!
//! Every peer of a worker shares the worker's socket. A STUN message goes to the peer its
//! USERNAME names (`"<our ufrag>:<their ufrag>"`; our ufrag is chosen by the SFU for each peer),
//! wherever it comes from, so a client that starts a new session from the same address reaches the
//! new peer. Everything else (DTLS, SRTP, SRTCP) goes to the peer its remote address is bound to.
//! An address is bound only once the peer has answered a STUN request from it, i.e. once the ICE
//! stack has checked the request's integrity: forged STUN binds nothing. Both lookups are hash
//! maps, so the cost does not grow with the number of peers.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

const STUN_HEADER_LEN: usize = 20;
const STUN_MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const STUN_ATTR_USERNAME: u16 = 0x0006;
/// The longest USERNAME RFC 8489 allows (513 bytes), so a hostile length is refused early.
const STUN_MAX_USERNAME_LEN: usize = 513;

/// Whether `data` looks like a STUN message (RFC 7983 demultiplexing plus the magic cookie).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= STUN_HEADER_LEN && data[0] < 2 && data[4..8] == STUN_MAGIC_COOKIE
}

/// The local (our) ufrag of a STUN message's USERNAME, if it has one. Never panics, whatever
/// the bytes.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    if !is_stun(data) {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(STUN_HEADER_LEN..STUN_HEADER_LEN + body_len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let len = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if typ == STUN_ATTR_USERNAME {
            if len > STUN_MAX_USERNAME_LEN {
                return None;
            }
            let username = std::str::from_utf8(value).ok()?;
            let (local, _remote) = username.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

/// Routes datagrams to peers: by remote address once bound, by ICE ufrag until then.
#[derive(Debug)]
pub struct Demuxer<P> {
    by_ufrag: HashMap<String, P>,
    by_addr: HashMap<SocketAddr, P>,
}

impl<P> Default for Demuxer<P> {
    fn default() -> Self {
        Self {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
        }
    }
}

/// Where a datagram goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<P> {
    Peer(P),
    /// Not STUN from an unknown address, or a ufrag no peer has: dropped.
    Unknown,
}

impl<P: Copy + Eq + Hash> Demuxer<P> {
    pub fn add_ufrag(&mut self, ufrag: String, peer: P) {
        self.by_ufrag.insert(ufrag, peer);
    }

    /// Forgets a peer: its ufrag and every address still bound to it (an address may have moved
    /// on to a newer peer of the same client).
    pub fn remove(&mut self, ufrag: &str, addrs: &[SocketAddr], peer: P) {
        self.by_ufrag.remove(ufrag);
        for a in addrs {
            if self.by_addr.get(a) == Some(&peer) {
                self.by_addr.remove(a);
            }
        }
    }

    /// Binds `addr` to `peer` (a peer may use several addresses, e.g. after a NAT rebinding).
    pub fn bind(&mut self, addr: SocketAddr, peer: P) {
        self.by_addr.insert(addr, peer);
    }

    /// Where one datagram goes.
    pub fn route(&self, from: SocketAddr, data: &[u8]) -> Route<P> {
        if is_stun(data)
            && let Some(&p) = stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u))
        {
            return Route::Peer(p);
        }
        match self.by_addr.get(&from) {
            Some(&p) => Route::Peer(p),
            None => Route::Unknown,
        }
    }

    /// Gives back map capacity left over from a burst of peers that is gone.
    pub fn shrink(&mut self) {
        if self.by_ufrag.capacity() > 64 && self.by_ufrag.len() * 4 < self.by_ufrag.capacity() {
            self.by_ufrag.shrink_to(self.by_ufrag.len() * 2);
        }
        if self.by_addr.capacity() > 64 && self.by_addr.len() * 4 < self.by_addr.capacity() {
            self.by_addr.shrink_to(self.by_addr.len() * 2);
        }
    }

    pub fn bound_addrs(&self) -> usize {
        self.by_addr.len()
    }

    pub fn ufrags(&self) -> usize {
        self.by_ufrag.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&STUN_ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        // A second attribute after it, as real requests have (PRIORITY).
        attr.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn reads_the_local_ufrag() {
        assert_eq!(
            stun_local_ufrag(&stun_with_username("abcd:efgh")),
            Some("abcd")
        );
        assert_eq!(stun_local_ufrag(&stun_with_username("x:y")), Some("x"));
        assert_eq!(stun_local_ufrag(&stun_with_username("nocolon")), None);
        assert_eq!(stun_local_ufrag(&stun_with_username(":y")), None);
    }

    #[test]
    fn truncated_and_hostile_stun_never_panics() {
        let good = stun_with_username("abcd:efgh");
        for cut in 0..good.len() {
            let _ = stun_local_ufrag(&good[..cut]);
        }
        let mut lying = good.clone();
        lying[2] = 0xff; // body length far past the end
        assert_eq!(stun_local_ufrag(&lying), None);
        let mut attr_lies = good.clone();
        attr_lies[22] = 0xff; // attribute length past the body
        assert_eq!(stun_local_ufrag(&attr_lies), None);
        assert!(!is_stun(&[0x80, 0x60, 0, 0]));
        assert!(!is_stun(&[]));
    }

    #[test]
    fn stun_routes_by_ufrag_and_the_rest_by_bound_address() {
        let mut d = Demuxer::default();
        d.add_ufrag("peerA".into(), 1u32);
        d.add_ufrag("peerB".into(), 2u32);
        let media = [0x80, 0x60, 0, 1];
        // Media from an unknown address is dropped; STUN alone binds nothing.
        assert_eq!(d.route(addr(5000), &media), Route::Unknown);
        assert_eq!(
            d.route(addr(5000), &stun_with_username("peerB:x")),
            Route::Peer(2)
        );
        assert_eq!(d.route(addr(5000), &media), Route::Unknown);
        d.bind(addr(5000), 2);
        assert_eq!(d.route(addr(5000), &media), Route::Peer(2));
        // A ufrag nobody has.
        assert_eq!(
            d.route(addr(6000), &stun_with_username("nobody:x")),
            Route::Unknown
        );
        d.remove("peerB", &[addr(5000)], 2);
        assert_eq!(d.route(addr(5000), &media), Route::Unknown);
        assert_eq!(d.bound_addrs(), 0);
        assert_eq!(d.ufrags(), 1);
    }

    #[test]
    fn a_new_session_from_a_bound_address_reaches_the_new_peer() {
        let mut d = Demuxer::default();
        d.add_ufrag("old".into(), 1u32);
        d.bind(addr(5000), 1);
        d.add_ufrag("new".into(), 2u32);
        assert_eq!(
            d.route(addr(5000), &stun_with_username("new:x")),
            Route::Peer(2)
        );
        d.bind(addr(5000), 2);
        // Removing the old peer leaves the address with the new one.
        d.remove("old", &[addr(5000)], 1);
        assert_eq!(d.route(addr(5000), &[0x80, 0x60, 0, 1]), Route::Peer(2));
    }

    #[test]
    fn many_peers_route_to_themselves() {
        let mut d = Demuxer::default();
        for i in 0..1000u32 {
            d.add_ufrag(format!("u{i}"), i);
        }
        for i in 0..1000u32 {
            let from = addr(10_000 + i as u16);
            assert_eq!(
                d.route(from, &stun_with_username(&format!("u{i}:r"))),
                Route::Peer(i)
            );
            d.bind(from, i);
        }
        for i in (0..1000u32).rev() {
            assert_eq!(d.route(addr(10_000 + i as u16), &[0x80]), Route::Peer(i));
        }
    }
}
