//! The figures: a cheap fixed-bucket histogram for per-packet latency, sequence-number loss
//! accounting, and percentiles.

use std::time::Duration;

/// Latency buckets: 10 µs wide up to 100 ms, then 1 ms wide up to 10 s; beyond that, the
/// last bucket. Recording is one index computation and one increment (per packet, on the
/// viewers' hot path), and merging histograms from several threads is a sum.
const FINE_US: u64 = 10;
const FINE_LIMIT_US: u64 = 100_000;
const COARSE_US: u64 = 1_000;
const COARSE_LIMIT_US: u64 = 10_000_000;
const FINE_BUCKETS: usize = (FINE_LIMIT_US / FINE_US) as usize;
const BUCKETS: usize = FINE_BUCKETS + ((COARSE_LIMIT_US - FINE_LIMIT_US) / COARSE_US) as usize + 1;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("max_us", &self.max_us)
            .finish()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = if us < FINE_LIMIT_US {
            (us / FINE_US) as usize
        } else if us < COARSE_LIMIT_US {
            FINE_BUCKETS + ((us - FINE_LIMIT_US) / COARSE_US) as usize
        } else {
            BUCKETS - 1
        };
        self.counts[i] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The upper edge of the bucket holding quantile `q` (0..=1), in milliseconds; the max is
    /// exact.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let upper_us = if i < FINE_BUCKETS {
                    (i as u64 + 1) * FINE_US
                } else {
                    FINE_LIMIT_US + (i - FINE_BUCKETS + 1) as u64 * COARSE_US
                };
                return Some(upper_us.min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    pub fn summary(&self) -> Option<Summary> {
        Some(Summary {
            p50: self.quantile_ms(0.50)?,
            p95: self.quantile_ms(0.95)?,
            p99: self.quantile_ms(0.99)?,
            max: self.max_us as f64 / 1000.0,
        })
    }
}

/// p50/p95/p99/max of some figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Exact percentiles (nearest rank) of a small set of values, e.g. one per viewer.
    pub fn of(values: &mut [f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Some(Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: values[values.len() - 1],
        })
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "p50": round3(self.p50),
            "p95": round3(self.p95),
            "p99": round3(self.p99),
            "max": round3(self.max),
        })
    }
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Loss accounting for one RTP stream from its sequence numbers. The server rewrites every
/// viewer's sequence numbers to be gap-free, so every gap is a packet lost on its way.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqTracker {
    /// Extended (unwrapped) sequence numbers.
    first: Option<u64>,
    highest: u64,
    received: u64,
    /// Packets skipped over by a jump forward.
    gaps: u64,
    /// Packets that arrived below the highest seen (reordered or duplicated).
    late: u64,
}

impl SeqTracker {
    /// Records one packet; returns how many packets this one showed to be missing.
    pub fn record(&mut self, seq: u16) -> u64 {
        self.received += 1;
        let Some(_) = self.first else {
            self.first = Some(u64::from(seq) + (1 << 16));
            self.highest = u64::from(seq) + (1 << 16);
            return 0;
        };
        // Unwrap against the highest: the nearest extended value with these low 16 bits.
        let delta = seq.wrapping_sub(self.highest as u16) as i16;
        let ext = (self.highest as i64 + i64::from(delta)) as u64;
        if ext > self.highest {
            let missing = ext - self.highest - 1;
            self.gaps += missing;
            self.highest = ext;
            missing
        } else {
            self.late += 1;
            0
        }
    }

    /// Packets the sequence numbers say were sent, from the first received to the highest.
    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }

    pub fn lost(&self) -> u64 {
        self.gaps.saturating_sub(self.late)
    }

    pub fn received(&self) -> u64 {
        self.received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_land_in_the_right_bucket() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us * 100)); // 0.1 ms .. 100 ms
        }
        let s = h.summary().unwrap();
        assert!((s.p50 - 50.0).abs() <= 0.02, "{s:?}");
        assert!((s.p99 - 99.0).abs() <= 1.0, "{s:?}");
        assert_eq!(s.max, 100.0);
        let mut other = Histogram::default();
        other.record(Duration::from_secs(20));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.summary().unwrap().max, 20_000.0);
        assert_eq!(Histogram::default().summary(), None);
    }

    #[test]
    fn exact_percentiles_of_a_few_values() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.p50, s.p95, s.p99, s.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Summary::of(&mut []), None);
    }

    #[test]
    fn loss_counts_gaps_across_the_wrap() {
        let mut t = SeqTracker::default();
        for seq in [65_533u16, 65_534, 65_535, 0, 2, 3] {
            t.record(seq);
        }
        assert_eq!(t.expected(), 7);
        assert_eq!(t.received(), 6);
        assert_eq!(t.lost(), 1);
        // The missing packet turns up late: nothing is lost after all.
        t.record(1);
        assert_eq!(t.lost(), 0);
    }
}
