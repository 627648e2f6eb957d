//! A browser's send pacer, sans-IO: a frame's video packets leave in bursts, each burst at
//! most [`PACING_BURST`] worth of [`PACING_FACTOR`] times the media bitrate, instead of all at
//! once when the encoder hands the frame over.
//!
//! libwebrtc's pacer works so: it sends at 2.5 times the target bitrate and wakes every 5 ms,
//! sending what that interval's budget allows; a packet may overdraw the budget, and the debt is
//! paid from the next intervals, so the rate holds on average even when one packet is larger
//! than a whole burst (a 1,200-byte packet at 500 kbit/s). What a server sees is what it costs:
//! a 2.5 Mbit/s keyframe reaches it in about ten bursts over 50 ms, not in one read, so one
//! wake-up serves a few packets, not forty.
//!
//! Audio is not paced here: it is small, and a browser's pacer sends it ahead of video.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::SyntheticPacket;

/// The longest burst: libwebrtc's pacer wakes every 5 ms.
pub const PACING_BURST: Duration = Duration::from_millis(5);
/// A browser paces at this many times its target bitrate, so a frame leaves well within the
/// frame interval while the link never sees the whole frame at once.
pub const PACING_FACTOR: f64 = 2.5;

/// How a publisher's video leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pacing {
    /// Each frame's packets in one burst, the moment the frame is made.
    #[default]
    Burst,
    /// Like a browser's pacer (see the module docs).
    Browser,
}

/// Queues video packets and lets them out in paced bursts. Drive it as any sans-IO part:
/// [`push`](Self::push) what the encoder made, then [`pop`](Self::pop) until `None`, and come
/// back at [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct Pacer {
    burst_bytes: i64,
    queue: VecDeque<SyntheticPacket>,
    /// Bytes the current burst may still send; negative: the debt of a packet that overdrew it.
    budget_bytes: i64,
    /// When the current burst began; `None` before the first.
    burst_start: Option<Instant>,
}

impl Pacer {
    /// A pacer for media of `bitrate_bps` (it sends at [`PACING_FACTOR`] times that).
    pub fn new(bitrate_bps: u64) -> Self {
        let burst_bytes =
            (bitrate_bps as f64 * PACING_FACTOR * PACING_BURST.as_secs_f64() / 8.0) as i64;
        let burst_bytes = burst_bytes.max(1);
        Self {
            burst_bytes,
            queue: VecDeque::new(),
            budget_bytes: burst_bytes,
            burst_start: None,
        }
    }

    /// The bytes one burst may carry.
    pub fn burst_bytes(&self) -> usize {
        self.burst_bytes as usize
    }

    /// Packets waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Queues a packet made at `packet.at`; it leaves after every packet queued before it.
    pub fn push(&mut self, packet: SyntheticPacket) {
        self.queue.push_back(packet);
    }

    /// When the next queued packet may leave; `None` when nothing waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let head = self.queue.front()?;
        match self.burst_start {
            Some(start) if self.budget_bytes <= 0 => Some((start + PACING_BURST).max(head.at)),
            _ => Some(head.at),
        }
    }

    /// The next packet that may leave by `now`, if any.
    pub fn pop(&mut self, now: Instant) -> Option<SyntheticPacket> {
        let head = self.queue.front()?;
        if head.at > now {
            return None;
        }
        let in_burst = self
            .burst_start
            .is_some_and(|start| now < start + PACING_BURST);
        if !in_burst {
            self.begin_burst(now);
        }
        if self.budget_bytes <= 0 {
            return None;
        }
        let packet = self.queue.pop_front()?;
        self.budget_bytes -= packet.payload.len() as i64;
        Some(packet)
    }

    /// A new burst: the budget of every interval since the last one began, but never more than
    /// one burst's worth (an idle pacer does not save up for a bigger burst later).
    fn begin_burst(&mut self, now: Instant) {
        let (start, intervals) = match self.burst_start {
            None => (now, i64::MAX),
            Some(last) => {
                let end = last + PACING_BURST;
                let late = now.saturating_duration_since(end);
                if late < PACING_BURST {
                    // A timely wake-up keeps the 5 ms grid, so late wake-ups do not slow the
                    // rate.
                    (end, 1)
                } else {
                    let missed = (late.as_nanos() / PACING_BURST.as_nanos()) as i64;
                    (now, 1 + missed)
                }
            }
        };
        self.budget_bytes = self
            .budget_bytes
            .saturating_add(self.burst_bytes.saturating_mul(intervals))
            .min(self.burst_bytes);
        self.burst_start = Some(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{MediaKind, PayloadKind, Stamp, payload};

    fn frame(at: Instant, sizes: &[usize]) -> Vec<SyntheticPacket> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let stamp = Stamp {
                    source_id: 1,
                    kind: PayloadKind::VideoContinuation,
                    temporal: None,
                    counter: i as u64,
                    sent_ns: 0,
                };
                SyntheticPacket {
                    kind: MediaKind::Video,
                    at,
                    seq: i as u16,
                    ts: 0,
                    marker: i + 1 == sizes.len(),
                    keyframe_start: false,
                    stamp,
                    temporal: None,
                    payload: payload(len, stamp),
                }
            })
            .collect()
    }

    /// Drives the pacer as a driver does: at each `poll_timeout`, pop what is due. Returns each
    /// packet's send time and size.
    fn drain(pacer: &mut Pacer) -> Vec<(Instant, usize)> {
        let mut sent = Vec::new();
        while let Some(at) = pacer.poll_timeout() {
            while let Some(p) = pacer.pop(at) {
                sent.push((at, p.payload.len()));
            }
        }
        sent
    }

    /// The bytes sent in each burst, in order (a burst: the packets sent at one instant).
    fn bursts(sent: &[(Instant, usize)]) -> Vec<(Instant, usize)> {
        let mut out: Vec<(Instant, usize)> = Vec::new();
        for &(at, len) in sent {
            match out.last_mut() {
                Some((t, bytes)) if *t == at => *bytes += len,
                _ => out.push((at, len)),
            }
        }
        out
    }

    #[test]
    fn a_frame_leaves_in_bursts_5_ms_apart_of_at_most_2_5_times_the_bitrate() {
        let t0 = Instant::now();
        // 2.5 Mbit/s: 6.25 Mbit/s paced, 3,906 bytes per 5 ms burst.
        let mut pacer = Pacer::new(2_500_000);
        assert_eq!(pacer.burst_bytes(), 3_906);
        let packets = frame(t0, &[1_000; 20]);
        for p in packets {
            pacer.push(p);
        }
        let sent = drain(&mut pacer);
        assert_eq!(sent.len(), 20);
        let bursts = bursts(&sent);
        assert_eq!(bursts[0].0, t0, "the first burst leaves at once");
        for w in bursts.windows(2) {
            assert_eq!(w[1].0 - w[0].0, PACING_BURST);
        }
        // Each burst spends its budget and may overdraw it by less than one packet, which the
        // next burst pays back; over the frame the rate is at most 2.5 times the bitrate.
        for (i, &(_, bytes)) in bursts.iter().enumerate() {
            assert!(bytes < 3_906 + 1_000, "burst {i}: {bytes} bytes");
        }
        let mut total = 0;
        for (k, &(_, bytes)) in bursts.iter().enumerate() {
            total += bytes;
            assert!(total < 3_906 * (k + 1) + 1_000, "after burst {k}: {total}");
        }
        // 20,000 bytes at 3,906 per burst, each overdrawn by less than a packet: five bursts,
        // the frame gone 20 ms after it was made.
        assert_eq!(bursts.len(), 5);
        assert_eq!(sent.last().unwrap().0 - t0, Duration::from_millis(20));
    }

    #[test]
    fn packets_larger_than_a_burst_leave_one_at_a_time_at_the_paced_rate_on_average() {
        let t0 = Instant::now();
        // 500 kbit/s: 781 bytes per burst, less than one 1,200-byte packet.
        let mut pacer = Pacer::new(500_000);
        for p in frame(t0, &[1_200; 10]) {
            pacer.push(p);
        }
        let sent = drain(&mut pacer);
        assert_eq!(sent.len(), 10);
        assert!(bursts(&sent).iter().all(|&(_, bytes)| bytes == 1_200));
        // 12,000 bytes at 781 per 5 ms: the last packet leaves once the debt of the nine
        // before it is paid, 9 * 1,200 / 781 = 13.8 bursts' budget: in burst 13 (from 0).
        assert_eq!(sent.last().unwrap().0 - t0, PACING_BURST * 13);
        for (k, &(at, _)) in sent.iter().enumerate() {
            let bursts_since_start = ((at - t0).as_nanos() / PACING_BURST.as_nanos()) as usize;
            assert!(1_200 * k <= 781 * (bursts_since_start + 1), "packet {k}");
        }
    }

    #[test]
    fn an_idle_pacer_starts_the_next_frame_at_once_with_one_burst_of_budget() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(2_500_000);
        for p in frame(t0, &[1_000; 5]) {
            pacer.push(p);
        }
        drain(&mut pacer);
        // A frame 33 ms later leaves when it is made, and the idle time bought no bigger burst.
        let t1 = t0 + Duration::from_millis(33);
        assert_eq!(pacer.poll_timeout(), None);
        for p in frame(t1, &[1_000; 10]) {
            pacer.push(p);
        }
        assert_eq!(pacer.poll_timeout(), Some(t1));
        let sent = drain(&mut pacer);
        let bursts = bursts(&sent);
        assert_eq!(bursts[0], (t1, 4_000));
        assert_eq!(bursts[1].0, t1 + PACING_BURST);
    }

    #[test]
    fn a_packet_is_not_sent_before_it_was_made() {
        let t0 = Instant::now();
        let mut pacer = Pacer::new(2_500_000);
        let later = t0 + Duration::from_millis(3);
        for p in frame(later, &[100]) {
            pacer.push(p);
        }
        assert!(pacer.pop(t0).is_none());
        assert_eq!(pacer.poll_timeout(), Some(later));
        assert!(pacer.pop(later).is_some());
        assert_eq!(pacer.queued(), 0);
    }
}
