//! Per-client-address limits: new sessions per second and sessions open at once. A refused
//! client gets a clear error code; nobody else notices. And the one [`TokenBucket`] every rate
//! limit of the server is made of.

use golive_proto::{ErrorCode, ProtocolError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    map: Mutex<HashMap<IpAddr, PerIp>>,
}

/// Holds one session's place; dropping it frees the place.
pub struct IpSlot {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.limiter.lock();
        if let Some(e) = map.get_mut(&self.ip) {
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
    pub fn new(new_per_sec: u32, max_open: usize) -> Arc<Self> {
        Arc::new(Self {
            per_sec: f64::from(new_per_sec.max(1)),
            max_open,
            map: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, PerIp>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a new session from `ip`, or says which limit refuses it.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<IpSlot, Refusal> {
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
            ip,
        })
    }

    pub fn open_sessions(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).map_or(0, |e| e.open)
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
        let l = IpLimiter::new(3, 4);
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
}
