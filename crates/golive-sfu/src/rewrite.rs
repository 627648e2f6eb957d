//! Per-viewer rewriting of RTP sequence numbers and timestamps.
//!
//! A viewer must see one continuous stream per track: its own sequence numbers with no gap that
//! the SFU made (a viewer started at a keyframe, a viewer that skipped ahead after falling behind,
//! a broadcaster that reconnected with new sequence numbers and timestamps), while a gap that the
//! broadcaster's network made stays visible so the viewer can report it.
//!
//! The rewriter maps a source `(epoch, seq, ts)` to the viewer's `(seq, ts)` by two offsets. The
//! offsets are set at a *sync point*: the first packet, the first packet after [`resync`], and the
//! first packet of a new source epoch. Source packets older than the sync point are dropped (they
//! would map before the viewer's start).
//!
//! [`resync`]: HeaderRewriter::resync

use std::time::Instant;

/// Identifies one run of a source: a broadcaster that reconnects gets a new epoch, with new
/// sequence numbers, timestamps and SSRC.
pub type SourceEpoch = u64;

#[derive(Debug)]
pub struct HeaderRewriter {
    clock_rate: u32,
    mapping: Option<Mapping>,
    /// Set by [`HeaderRewriter::resync`]: the next packet of the same epoch becomes a sync point,
    /// keeping the timestamp offset (source timestamps run on).
    resync: bool,
    /// Set by [`HeaderRewriter::restart`]: the next packet starts a new source run even in the
    /// same epoch.
    restart: bool,
    last_out_seq: u16,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    epoch: SourceEpoch,
    seq_offset: u16,
    ts_offset: u32,
    /// Extended (unwrapped) source sequence numbers: the sync point and the highest seen.
    start_ext: i64,
    highest_ext: i64,
    highest_seq: u16,
}

impl HeaderRewriter {
    /// `first_seq` and `first_ts` are what the viewer's first packet carries (random in
    /// production, as RFC 3550 asks; fixed in tests).
    pub fn new(clock_rate: u32, first_seq: u16, first_ts: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            mapping: None,
            resync: false,
            restart: false,
            last_out_seq: first_seq.wrapping_sub(1),
            last_out_ts: first_ts,
            last_out_at: None,
        }
    }

    /// Makes the next packet of the current epoch a sync point: used when the viewer skips ahead
    /// (to the next keyframe), so that the skipped packets leave no gap.
    pub fn resync(&mut self) {
        self.resync = true;
    }

    /// Makes the next packet the start of a new source run, as if of a new epoch: its own
    /// sequence numbers and timestamps, mapped on from where the viewer is. Used when a viewer
    /// moves to another simulcast layer of the same broadcaster, whose numbers and clock have
    /// nothing in common with the layer it leaves.
    pub fn restart(&mut self) {
        self.restart = true;
    }

    /// The timestamp of the newest packet sent, once one was.
    pub fn last_timestamp(&self) -> Option<u32> {
        self.last_out_at.map(|_| self.last_out_ts)
    }

    /// The source packet `(epoch, seq)` a viewer's sequence number stands for, if it was mapped
    /// by the current sync point (a viewer's NACK names the numbers it saw).
    pub fn source_of(&self, out_seq: u16) -> Option<(SourceEpoch, u16)> {
        let m = self.mapping?;
        let seq = out_seq.wrapping_sub(m.seq_offset);
        let ext = m.highest_ext + i64::from(seq.wrapping_sub(m.highest_seq) as i16);
        (ext >= m.start_ext && ext <= m.highest_ext).then_some((m.epoch, seq))
    }

    /// The viewer's sequence number and timestamp for a source packet, or `None` when the packet
    /// is older than the viewer's sync point and must not be sent.
    pub fn rewrite(
        &mut self,
        now: Instant,
        epoch: SourceEpoch,
        seq: u16,
        ts: u32,
    ) -> Option<(u16, u32)> {
        let mapping = match self.mapping {
            Some(m) if m.epoch == epoch && !self.resync && !self.restart => m,
            previous => {
                let ts_offset = match previous {
                    // Same source, skipping ahead: its clock runs on, keep it.
                    Some(m) if m.epoch == epoch && !self.restart => m.ts_offset,
                    // First packet ever: start at the chosen first timestamp.
                    _ if self.last_out_at.is_none() => self.last_out_ts.wrapping_sub(ts),
                    // A new source: continue the viewer's clock by the time that passed.
                    _ => {
                        let elapsed = self
                            .last_out_at
                            .map(|at| now.saturating_duration_since(at))
                            .unwrap_or_default();
                        let ticks = (elapsed.as_secs_f64() * f64::from(self.clock_rate)) as u64;
                        let ticks = ticks.clamp(1, u64::from(u32::MAX / 2)) as u32;
                        self.last_out_ts.wrapping_add(ticks).wrapping_sub(ts)
                    }
                };
                let m = Mapping {
                    epoch,
                    seq_offset: self.last_out_seq.wrapping_add(1).wrapping_sub(seq),
                    ts_offset,
                    start_ext: i64::from(seq),
                    highest_ext: i64::from(seq),
                    highest_seq: seq,
                };
                self.resync = false;
                self.restart = false;
                self.mapping = Some(m);
                m
            }
        };
        let ext = mapping.highest_ext + i64::from(seq.wrapping_sub(mapping.highest_seq) as i16);
        if ext < mapping.start_ext {
            return None;
        }
        let out_seq = seq.wrapping_add(mapping.seq_offset);
        let out_ts = ts.wrapping_add(mapping.ts_offset);
        if ext >= mapping.highest_ext {
            if let Some(m) = self.mapping.as_mut() {
                m.highest_ext = ext;
                m.highest_seq = seq;
            }
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
        }
        Some((out_seq, out_ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const VIDEO_CLOCK: u32 = 90_000;

    #[test]
    fn maps_to_the_chosen_start_and_follows_the_source() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 1000, 5000);
        assert_eq!(r.rewrite(t0, 1, 40, 900), Some((1000, 5000)));
        assert_eq!(r.rewrite(t0, 1, 41, 900), Some((1001, 5000)));
        assert_eq!(r.rewrite(t0, 1, 42, 3900), Some((1002, 8000)));
    }

    #[test]
    fn sequence_numbers_wrap_around() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 65534, 0);
        let out: Vec<u16> = [100u16, 101, 102, 103]
            .iter()
            .map(|&s| r.rewrite(t0, 1, s, 0).unwrap().0)
            .collect();
        assert_eq!(out, [65534, 65535, 0, 1]);
        // The source wraps too.
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 10, 0);
        let out: Vec<u16> = [65534u16, 65535, 0, 1]
            .iter()
            .map(|&s| r.rewrite(t0, 1, s, 0).unwrap().0)
            .collect();
        assert_eq!(out, [10, 11, 12, 13]);
    }

    #[test]
    fn timestamps_wrap_around() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 0, u32::MAX - 1000);
        assert_eq!(r.rewrite(t0, 1, 1, 10).unwrap().1, u32::MAX - 1000);
        assert_eq!(r.rewrite(t0, 1, 2, 3010).unwrap().1, 1999);
        // A source timestamp wrapping maps continuously as well.
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 0, 7);
        assert_eq!(r.rewrite(t0, 1, 1, u32::MAX).unwrap().1, 7);
        assert_eq!(r.rewrite(t0, 1, 2, 2999).unwrap().1, 3007);
    }

    #[test]
    fn source_gaps_stay_visible() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 0, 0);
        assert_eq!(r.rewrite(t0, 1, 10, 0).unwrap().0, 0);
        assert_eq!(r.rewrite(t0, 1, 13, 0).unwrap().0, 3);
        // The late packet fills its own slot.
        assert_eq!(r.rewrite(t0, 1, 11, 0).unwrap().0, 1);
    }

    #[test]
    fn packets_before_the_sync_point_are_dropped() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 0, 0);
        assert_eq!(r.rewrite(t0, 1, 500, 0), Some((0, 0)));
        assert_eq!(r.rewrite(t0, 1, 499, 0), None);
        assert_eq!(r.rewrite(t0, 1, 501, 0), Some((1, 0)));
    }

    #[test]
    fn resync_skips_ahead_without_a_gap_and_keeps_the_clock() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 0, 0);
        assert_eq!(r.rewrite(t0, 1, 100, 1000), Some((0, 0)));
        assert_eq!(r.rewrite(t0, 1, 101, 1000), Some((1, 0)));
        r.resync();
        // 50 packets skipped; the viewer sees the next number, and the source's clock distance.
        assert_eq!(r.rewrite(t0, 1, 152, 91_000), Some((2, 90_000)));
        assert_eq!(r.rewrite(t0, 1, 151, 91_000), None);
    }

    #[test]
    fn viewer_numbers_map_back_to_their_source_packets() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 65535, 0);
        assert_eq!(r.source_of(65535), None);
        r.rewrite(t0, 3, 100, 0);
        r.rewrite(t0, 3, 101, 0);
        r.rewrite(t0, 3, 103, 0);
        assert_eq!(r.source_of(65535), Some((3, 100)));
        assert_eq!(r.source_of(1), Some((3, 102)));
        assert_eq!(r.source_of(2), Some((3, 103)));
        // Not sent yet, or before the sync point.
        assert_eq!(r.source_of(3), None);
        assert_eq!(r.source_of(65534), None);
    }

    #[test]
    fn continuity_when_the_source_restarts() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 7, 1000);
        assert_eq!(r.rewrite(t0, 1, 30_000, 555), Some((7, 1000)));
        assert_eq!(r.rewrite(t0, 1, 30_001, 3555), Some((8, 4000)));
        // The broadcaster reconnects two seconds later with fresh numbers.
        let t1 = t0 + Duration::from_secs(2);
        let (seq, ts) = r.rewrite(t1, 2, 12, 4_000_000_000).unwrap();
        assert_eq!(seq, 9);
        assert_eq!(ts, 4000 + 2 * VIDEO_CLOCK);
        assert_eq!(
            r.rewrite(t1, 2, 13, 4_000_003_000),
            Some((10, 4000 + 2 * VIDEO_CLOCK + 3000))
        );
    }

    #[test]
    fn a_restart_in_the_same_epoch_continues_the_line_by_the_time_that_passed() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 100, 10_000);
        assert_eq!(r.rewrite(t0, 1, 5000, 777), Some((100, 10_000)));
        assert_eq!(r.rewrite(t0, 1, 5001, 3777), Some((101, 13_000)));
        // Another layer of the same broadcaster: unrelated numbers and clock, 40 ms later.
        r.restart();
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(r.rewrite(t1, 1, 20, 9_000_000), Some((102, 13_000 + 3600)));
        assert_eq!(r.rewrite(t1, 1, 21, 9_003_000), Some((103, 16_000 + 3600)));
        // Packets of the new layer from before its sync point are not the viewer's.
        assert_eq!(r.rewrite(t1, 1, 19, 8_997_000), None);
        assert_eq!(r.source_of(102), Some((1, 20)));
    }

    #[test]
    fn restart_immediately_still_advances_the_clock() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(48_000, 0, 0);
        assert_eq!(r.rewrite(t0, 1, 5, 960), Some((0, 0)));
        let (_, ts) = r.rewrite(t0, 2, 9, 123).unwrap();
        assert!(ts > 0, "a new source never repeats the last timestamp");
    }
}
