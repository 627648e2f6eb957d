//! How the directory ranks what is live now, the way a feed does: by how many people watch, and
//! by how much they are into it (hearts per minute).
//!
//! `score = viewers + min(hearts_per_minute, HEARTS_CAP_PER_VIEWER × viewers) / HEARTS_PER_VIEWER`
//!
//! Ten hearts a minute weigh as much as one more viewer, and hearts count up to ten a minute per
//! viewer: a lively audience can double a stream's weight, but one eager tapper (the server takes
//! up to ten hearts a second from each) cannot lift a stream of two over a stream of twenty.
//! Ties go to more viewers, then more hearts, then the name, so the order is stable.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Hearts per minute are counted over this window.
pub const HEART_WINDOW: Duration = Duration::from_secs(60);
/// The window is kept as buckets this long (12 of them): memory stays constant however many
/// hearts come.
const BUCKET: Duration = Duration::from_secs(5);
/// This many hearts a minute weigh as much as one viewer.
pub const HEARTS_PER_VIEWER: u64 = 10;
/// Hearts a minute count up to this many per viewer.
pub const HEARTS_CAP_PER_VIEWER: u64 = 10;

/// Hearts over the last minute, in buckets of [`BUCKET`].
#[derive(Debug, Default)]
pub struct HeartRate {
    buckets: VecDeque<(Instant, u64)>,
}

impl HeartRate {
    pub fn record(&mut self, now: Instant) {
        self.forget_before(now);
        match self.buckets.back_mut() {
            Some((start, n)) if now.saturating_duration_since(*start) < BUCKET => *n += 1,
            _ => self.buckets.push_back((now, 1)),
        }
    }

    /// Hearts in the minute before `now`.
    pub fn per_minute(&self, now: Instant) -> u64 {
        self.buckets
            .iter()
            .filter(|(start, _)| now.saturating_duration_since(*start) < HEART_WINDOW)
            .map(|(_, n)| n)
            .sum()
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some((start, _)) = self.buckets.front() {
            if now.saturating_duration_since(*start) < HEART_WINDOW {
                break;
            }
            self.buckets.pop_front();
        }
    }
}

/// The rank's inputs and the score they make (see the module docs).
pub fn score(viewers: usize, hearts_per_minute: u64) -> f64 {
    let viewers = viewers as u64;
    let hearts = hearts_per_minute.min(HEARTS_CAP_PER_VIEWER.saturating_mul(viewers));
    viewers as f64 + hearts as f64 / HEARTS_PER_VIEWER as f64
}

/// What is ranked: one live stream's inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs<'a> {
    pub stream: &'a str,
    pub viewers: usize,
    pub hearts_per_minute: u64,
}

/// The 1-based rank of each of `rows`, in their order: 1 is the top of the directory.
pub fn ranks(rows: &[Inputs<'_>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&rows[a], &rows[b]);
        score(y.viewers, y.hearts_per_minute)
            .total_cmp(&score(x.viewers, x.hearts_per_minute))
            .then(y.viewers.cmp(&x.viewers))
            .then(y.hearts_per_minute.cmp(&x.hearts_per_minute))
            .then(x.stream.cmp(y.stream))
    });
    let mut rank = vec![0; rows.len()];
    for (place, i) in order.into_iter().enumerate() {
        rank[i] = place + 1;
    }
    rank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hearts_per_minute_counts_the_last_minute_only() {
        let t0 = Instant::now();
        let mut rate = HeartRate::default();
        for s in 0..30 {
            rate.record(t0 + Duration::from_secs(s));
        }
        assert_eq!(rate.per_minute(t0 + Duration::from_secs(30)), 30);
        // A minute after the first hearts, the first bucket (5 of them) is out of the window.
        assert_eq!(rate.per_minute(t0 + Duration::from_secs(60)), 25);
        assert_eq!(rate.per_minute(t0 + Duration::from_secs(95)), 0);
        rate.record(t0 + Duration::from_secs(200));
        assert_eq!(rate.per_minute(t0 + Duration::from_secs(200)), 1);
        assert_eq!(rate.buckets.len(), 1, "old buckets are forgotten");
    }

    #[test]
    fn many_hearts_from_a_small_audience_do_not_outrank_a_large_one() {
        // One viewer tapping as fast as the server allows (600 a minute) against twenty quiet ones.
        assert_eq!(score(1, 600), 2.0);
        assert_eq!(score(20, 0), 20.0);
        assert_eq!(score(0, 50), 0.0);
        let rows = [
            Inputs {
                stream: "eager",
                viewers: 1,
                hearts_per_minute: 600,
            },
            Inputs {
                stream: "big",
                viewers: 20,
                hearts_per_minute: 0,
            },
        ];
        assert_eq!(ranks(&rows), vec![2, 1]);
    }

    #[test]
    fn hearts_lift_a_stream_over_an_equal_audience() {
        let rows = [
            Inputs {
                stream: "a-quiet",
                viewers: 5,
                hearts_per_minute: 0,
            },
            Inputs {
                stream: "b-loved",
                viewers: 5,
                hearts_per_minute: 30,
            },
            Inputs {
                stream: "c-nobody",
                viewers: 0,
                hearts_per_minute: 0,
            },
            Inputs {
                stream: "b-also-quiet",
                viewers: 5,
                hearts_per_minute: 0,
            },
        ];
        // Loved first; equal scores fall back to the name.
        assert_eq!(ranks(&rows), vec![2, 1, 4, 3]);
    }
}
