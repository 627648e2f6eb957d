//! Per-client-address limits: new sessions per second and sessions open at once. A refused
//! client gets a clear error code; nobody else notices. And the one [`TokenBucket`] every rate
//! limit of the server is made of.
//!
//! Loopback clients can be exempt ([`IpLimiter::new`]'s `exempt_loopback`): on a server bound to
//! loopback, every client is on the same machine (a developer's browser tabs, the load tester's
//! hundreds of viewers), so one address stands for many people and a per-address limit would only
//! refuse the documented local load test. The global limits (streams, viewers) still hold.
//!
//! Every limit counts per [`client_key`]: an IPv4 address, or the /64 of an IPv6 address.

use golive_proto::{ErrorCode, ProtocolError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The length of the IPv6 prefix that counts as one client. RFC 6177 and every major ISP hand a
/// subscriber at least a /64 (SLAAC needs one per link), so one household or one rented server
/// can pick any of 2^64 addresses inside it: keyed on the whole address, a single client would
/// get 2^64 budgets.
pub const IPV6_CLIENT_PREFIX_BITS: u32 = 64;

/// The key a client's address is counted under: an IPv4 address as it is (an IPv4-mapped IPv6
/// address, as a dual-stack listener sees IPv4 clients, as the IPv4 address it maps), an IPv6
/// address as its /64 with the interface bits zeroed.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX << (128 - IPV6_CLIENT_PREFIX_BITS);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
    }
}

/// Past this many addresses, those with no open session and a full budget (which are as good
/// as new) are forgotten.
const FORGET_ABOVE_ADDRESSES: usize = 4096;

/// A token bucket: up to `capacity` takes at once, refilled at `per_sec`. The caller passes the
/// time, so a test drives it with a clock of its own.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: f64, per_sec: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            capacity,
            per_sec,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.tokens = self.tokens_at(now);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely by `now`.
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens_at(now) >= self.capacity
    }

    fn tokens_at(&self, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_sec;
        (self.tokens + refill).min(self.capacity)
    }
}

struct PerIp {
    open: usize,
    new_sessions: TokenBucket,
}

/// Counts sessions per client IP address.
pub struct IpLimiter {
    per_sec: f64,
    max_open: usize,
    exempt_loopback: bool,
    map: Mutex<HashMap<IpAddr, PerIp>>,
}

/// Holds one session's place; dropping it frees the place.
pub struct IpSlot {
    limiter: Arc<IpLimiter>,
    /// `None` for an exempt client: nothing was counted, nothing to free.
    ip: Option<IpAddr>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut map = self.limiter.lock();
        if let Some(e) = map.get_mut(&ip) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

/// Which limit refused, for the error and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NewSessionsPerSecond,
    SessionsPerIp,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NewSessionsPerSecond => "new_sessions_per_sec_per_ip",
            Refusal::SessionsPerIp => "sessions_per_ip",
        }
    }

    pub fn error(self) -> ProtocolError {
        match self {
            Refusal::NewSessionsPerSecond => ProtocolError::new(
                ErrorCode::RateLimited,
                "too many new sessions from your address; try again in a moment",
            ),
            Refusal::SessionsPerIp => ProtocolError::new(
                ErrorCode::TooManySessions,
                "too many sessions open from your address",
            ),
        }
    }
}

impl IpLimiter {
    /// `exempt_loopback`: loopback clients are admitted without being counted (see the module
    /// docs for when that is right).
    pub fn new(new_per_sec: u32, max_open: usize, exempt_loopback: bool) -> Arc<Self> {
        Arc::new(Self {
            per_sec: f64::from(new_per_sec.max(1)),
            max_open,
            exempt_loopback,
            map: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, PerIp>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a new session from `ip`, or says which limit refuses it.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<IpSlot, Refusal> {
        let ip = client_key(ip);
        if self.is_exempt(ip) {
            return Ok(IpSlot {
                limiter: self.clone(),
                ip: None,
            });
        }
        let mut map = self.lock();
        if map.len() > FORGET_ABOVE_ADDRESSES {
            map.retain(|_, e| e.open > 0 || !e.new_sessions.is_full(now));
        }
        let e = map.entry(ip).or_insert_with(|| PerIp {
            open: 0,
            // A burst of one second's worth.
            new_sessions: TokenBucket::new(self.per_sec, self.per_sec, now),
        });
        if e.open >= self.max_open {
            return Err(Refusal::SessionsPerIp);
        }
        if !e.new_sessions.take(now) {
            return Err(Refusal::NewSessionsPerSecond);
        }
        e.open += 1;
        Ok(IpSlot {
            limiter: self.clone(),
            ip: Some(ip),
        })
    }

    /// Whether `ip` is admitted without counting.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt_loopback && client_key(ip).is_loopback()
    }

    pub fn open_sessions(&self, ip: IpAddr) -> usize {
        self.lock().get(&client_key(ip)).map_or(0, |e| e.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0, 2.0, t0);
        assert!(b.is_full(t0));
        assert_eq!((0..5).filter(|_| b.take(t0)).count(), 3);
        assert!(!b.is_full(t0));
        // Half a second at 2 a second refills one token, never more than the capacity.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        let later = t1 + Duration::from_secs(60);
        assert!(b.is_full(later));
        assert_eq!((0..5).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn new_sessions_are_rate_limited_and_open_ones_capped_per_address() {
        let l = IpLimiter::new(3, 4, true);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        let slots: Vec<_> = (0..3).map(|_| l.acquire(a, t0).unwrap()).collect();
        assert_eq!(l.acquire(a, t0).err(), Some(Refusal::NewSessionsPerSecond));
        // Another address is not affected.
        let _b = l.acquire(b, t0).unwrap();
        // A second later one more fits, then the cap of 4 open sessions holds.
        let t1 = t0 + Duration::from_secs(1);
        let fourth = l.acquire(a, t1).unwrap();
        assert_eq!(
            l.acquire(a, t1 + Duration::from_secs(5)).err(),
            Some(Refusal::SessionsPerIp)
        );
        drop(fourth);
        assert_eq!(l.open_sessions(a), 3);
        assert!(l.acquire(a, t1 + Duration::from_secs(5)).is_ok());
        drop(slots);
    }

    #[test]
    fn loopback_is_exempt_only_when_asked() {
        let t0 = Instant::now();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let exempt = IpLimiter::new(1, 1, true);
        let held: Vec<_> = (0..500)
            .map(|_| exempt.acquire(local, t0).unwrap())
            .collect();
        assert_eq!(exempt.open_sessions(local), 0);
        drop(held);

        let enforced = IpLimiter::new(1, 1, false);
        let _one = enforced.acquire(local, t0).unwrap();
        assert!(enforced.acquire(local, t0).is_err());
        assert!(enforced.acquire("::1".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("192.0.2.7").to_string(), "192.0.2.7");
        assert!(key("::ffff:127.0.0.1").is_loopback());

        // One client hopping through its /64 shares one budget.
        let l = IpLimiter::new(100, 2, false);
        let t0 = Instant::now();
        let _a = l.acquire("2001:db8::1".parse().unwrap(), t0).unwrap();
        let _b = l.acquire("2001:db8::ffff:2".parse().unwrap(), t0).unwrap();
        assert_eq!(
            l.acquire("2001:db8::abcd:3".parse().unwrap(), t0).err(),
            Some(Refusal::SessionsPerIp)
        );
        assert_eq!(l.open_sessions("2001:db8::77".parse().unwrap()), 2);
        assert!(l.acquire("2001:db8:0:1::1".parse().unwrap(), t0).is_ok());
    }
}
