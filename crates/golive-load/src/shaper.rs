//! A viewer's capped downlink (`--viewer-kbps`), emulated in the load tester's receive path: a
//! token bucket in front of each viewer's peer that delays or drops datagrams as a `tc tbf`
//! qdisc on the viewer's link would (`tc qdisc add dev <if> root tbf rate <N>kbit burst <b>
//! latency 50ms`). It is not a kernel qdisc: the datagrams have already crossed loopback when
//! it sees them, so the server's socket and the kernel are untouched, but the viewer's peer
//! (and the TWCC feedback it sends) sees them arrive late, or never, exactly as if its link
//! carried only N kbit/s.
//!
//! The model: tokens (bytes) fill at the rate up to the burst size; a datagram that finds
//! enough tokens passes at once; otherwise it waits in a FIFO until the tokens for it (and for
//! every datagram queued before it) have accrued. A datagram that would wait longer than the
//! latency limit is dropped instead, as tbf drops past its queue limit (tbf's `latency` sets
//! that limit to rate x latency + burst bytes).

use std::time::{Duration, Instant};

/// How long a datagram may queue before the bucket drops it (tbf's `latency`).
pub const QUEUE_LIMIT: Duration = Duration::from_millis(50);
/// The smallest burst: two full-size datagrams, as tc needs at least one MTU and a little.
pub const MIN_BURST_BYTES: f64 = 3_000.0;
/// The burst is at least this long at the rate (tc wants rate/HZ or more; 4 ms at HZ=250).
pub const BURST_TIME: Duration = Duration::from_millis(5);
/// IPv4 and UDP headers: what a qdisc counts besides the payload.
pub const IP_UDP_OVERHEAD_BYTES: usize = 28;

/// What the bucket does with one datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Passes now.
    Pass,
    /// Reaches the viewer at this instant.
    Delay(Instant),
    /// The queue is full: lost.
    Drop,
}

/// A token bucket of `rate` bytes per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    bytes_per_s: f64,
    burst_bytes: f64,
    /// Tokens at `at`; negative while datagrams wait (their debt).
    tokens: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    pub fn new(kbit_per_s: u64) -> Self {
        let bytes_per_s = kbit_per_s as f64 * 1000.0 / 8.0;
        let burst_bytes = (bytes_per_s * BURST_TIME.as_secs_f64()).max(MIN_BURST_BYTES);
        Self {
            bytes_per_s,
            burst_bytes,
            tokens: burst_bytes,
            at: None,
        }
    }

    /// A datagram of `len` payload bytes arrived at `now`.
    pub fn offer(&mut self, now: Instant, len: usize) -> Verdict {
        let size = (len + IP_UDP_OVERHEAD_BYTES) as f64;
        let elapsed = self
            .at
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let tokens = (self.tokens + elapsed * self.bytes_per_s).min(self.burst_bytes);
        let wait = ((size - tokens) / self.bytes_per_s).max(0.0);
        if wait > QUEUE_LIMIT.as_secs_f64() {
            // Nothing taken: the refill up to now is kept for the next datagram.
            self.tokens = tokens;
            self.at = Some(now);
            return Verdict::Drop;
        }
        self.tokens = tokens - size;
        self.at = Some(now);
        if wait == 0.0 {
            Verdict::Pass
        } else {
            Verdict::Delay(now + Duration::from_secs_f64(wait))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `n` datagrams of `len` bytes every `gap` and returns the bytes passed (at once
    /// or later) and the datagrams dropped.
    fn run(bucket: &mut TokenBucket, n: usize, len: usize, gap: Duration) -> (usize, usize) {
        let t0 = Instant::now();
        let (mut passed, mut dropped) = (0, 0);
        for i in 0..n {
            match bucket.offer(t0 + gap * i as u32, len) {
                Verdict::Drop => dropped += 1,
                _ => passed += len + IP_UDP_OVERHEAD_BYTES,
            }
        }
        (passed, dropped)
    }

    #[test]
    fn a_stream_under_the_rate_passes_untouched() {
        // 100 kbit/s of 1,000-byte datagrams through a 300 kbit/s bucket.
        let mut b = TokenBucket::new(300);
        let t0 = Instant::now();
        for i in 0..100u32 {
            let at = t0 + Duration::from_millis(80) * i;
            assert_eq!(b.offer(at, 1_000), Verdict::Pass, "datagram {i}");
        }
    }

    #[test]
    fn a_stream_over_the_rate_is_cut_to_the_rate_and_the_queue_never_exceeds_its_limit() {
        // 2.5 Mbit/s offered for 10 s to a 300 kbit/s bucket.
        let mut b = TokenBucket::new(300);
        let t0 = Instant::now();
        let gap = Duration::from_micros(3_840); // 1,200 bytes at 2.5 Mbit/s
        let mut passed = 0usize;
        let mut dropped = 0usize;
        for i in 0..2_600u32 {
            let now = t0 + gap * i;
            match b.offer(now, 1_172) {
                Verdict::Pass => passed += 1_200,
                Verdict::Delay(at) => {
                    assert!(at - now <= QUEUE_LIMIT, "queued {:?}", at - now);
                    passed += 1_200;
                }
                Verdict::Drop => dropped += 1,
            }
        }
        let seconds = (gap * 2_600).as_secs_f64();
        let kbps = passed as f64 * 8.0 / seconds / 1000.0;
        assert!((kbps - 300.0).abs() < 15.0, "{kbps} kbit/s passed");
        assert!(dropped > 2_000, "{dropped} dropped");
    }

    #[test]
    fn a_burst_within_the_bucket_passes_and_a_short_one_beyond_it_waits() {
        let mut b = TokenBucket::new(1_000);
        let (passed, dropped) = run(&mut b, 2, 1_200, Duration::ZERO);
        assert_eq!((passed, dropped), (2_456, 0));
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000);
        b.offer(t0, 1_472);
        b.offer(t0, 1_472);
        // The bucket (3,000 bytes) is spent: the third waits 1,500 bytes at 125,000 bytes/s.
        match b.offer(t0, 1_472) {
            Verdict::Delay(at) => {
                let ms = (at - t0).as_secs_f64() * 1e3;
                assert!((ms - 12.0).abs() < 0.5, "{ms} ms");
            }
            v => panic!("{v:?}"),
        }
    }
}
