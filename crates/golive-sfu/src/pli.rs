//! Coalescing of keyframe requests toward a broadcaster.
//!
//! Every viewer that joins, loses a packet it cannot repair, or sends PLI/FIR wants a keyframe;
//! the broadcaster must see at most one request per [`KEYFRAME_REQUEST_INTERVAL`] however many
//! viewers ask. A request that arrives inside the interval is not lost: it is held, and sent
//! when the interval ends unless a keyframe arrived in the meantime and so answered it.

use std::time::{Duration, Instant};

/// At most one PLI per source per this interval.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct KeyframeRequests {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyframeRequests {
    /// Records a request; returns true when a PLI must go out now.
    pub fn request(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(at) if now < at + KEYFRAME_REQUEST_INTERVAL => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    /// A keyframe arrived: any request held since the last PLI is answered.
    pub fn keyframe_received(&mut self, now: Instant) {
        if self.last_sent.is_some_and(|at| now >= at) {
            self.pending = false;
        }
    }

    /// When a held request falls due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending {
            self.last_sent.map(|at| at + KEYFRAME_REQUEST_INTERVAL)
        } else {
            None
        }
    }

    /// Returns true when a held request is due and a PLI must go out now.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.poll_timeout().is_some_and(|due| now >= due) {
            self.last_sent = Some(now);
            self.pending = false;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn many_requests_in_one_interval_send_one_pli_then_one_more() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert!(k.request(t0));
        let sent_inside = (1..100).filter(|i| k.request(t0 + 4 * MS * *i)).count();
        assert_eq!(sent_inside, 0);
        assert_eq!(k.poll_timeout(), Some(t0 + KEYFRAME_REQUEST_INTERVAL));
        assert!(!k.handle_timeout(t0 + 499 * MS));
        assert!(k.handle_timeout(t0 + 500 * MS));
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.handle_timeout(t0 + 2000 * MS));
    }

    #[test]
    fn a_keyframe_answers_held_requests() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert!(k.request(t0));
        assert!(!k.request(t0 + 100 * MS));
        k.keyframe_received(t0 + 200 * MS);
        assert_eq!(k.poll_timeout(), None);
        assert!(!k.handle_timeout(t0 + 600 * MS));
    }

    #[test]
    fn requests_far_apart_each_send() {
        let t0 = Instant::now();
        let mut k = KeyframeRequests::default();
        assert!(k.request(t0));
        assert!(k.request(t0 + 500 * MS));
        assert!(k.request(t0 + 1500 * MS));
    }
}
