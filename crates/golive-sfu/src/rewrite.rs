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
//! A packet the SFU drops on purpose inside a run (a frame of a temporal layer above the
//! viewer's, see [`crate::temporal`]) is closed over: the packets after it move down by one
//! ([`HeaderRewriter::drop_packet`]). The offsets then differ by ranges of source numbers,
//! kept for the last [`MAX_DROP_RANGES`] drops so that a viewer's NACK still finds its packet.
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
    /// Sequence offsets after drops in the current run, allocated at the first drop.
    drops: Option<Box<DropRanges>>,
}

/// How many ranges of differing sequence offsets a run keeps: one per run of dropped packets
/// (a dropped frame), about a second of video with one frame in two dropped.
pub const MAX_DROP_RANGES: usize = 16;

/// The sequence offsets of the current run after its drops, oldest first: range `i` starts at
/// extended source number `start_ext + from[i]` and maps with `offset[i]`; numbers before the
/// first range map with the run's own offset, numbers before `floor` (once older ranges were
/// forgotten) not at all.
#[derive(Debug, Default)]
struct DropRanges {
    from: [u32; MAX_DROP_RANGES],
    offset: [u16; MAX_DROP_RANGES],
    len: usize,
    floor: u32,
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
            drops: None,
        }
    }

    /// The sequence offset for extended source number `ext` of mapping `m`; `None` for a
    /// number older than the ranges remembered.
    fn offset_for(&self, m: &Mapping, ext: i64) -> Option<u16> {
        let Some(d) = self.drops.as_deref() else {
            return Some(m.seq_offset);
        };
        let rel = ext - m.start_ext;
        if rel < i64::from(d.floor) {
            return None;
        }
        let i = d.from[..d.len]
            .iter()
            .rposition(|&from| i64::from(from) <= rel);
        Some(i.map_or(m.seq_offset, |i| d.offset[i]))
    }

    /// The source packet `(epoch, seq)` of the current run is dropped on purpose: the packets
    /// after it move down by one, leaving the viewer no gap. A packet older than the newest one
    /// mapped changes nothing (its number stays a gap the viewer may report).
    pub fn drop_packet(&mut self, epoch: SourceEpoch, seq: u16) {
        let Some(m) = self.mapping.as_mut() else {
            return;
        };
        if m.epoch != epoch || self.resync || self.restart {
            return;
        }
        let ext = m.highest_ext + i64::from(seq.wrapping_sub(m.highest_seq) as i16);
        if ext <= m.highest_ext {
            return;
        }
        m.highest_ext = ext;
        m.highest_seq = seq;
        let rel = u32::try_from(ext + 1 - m.start_ext).unwrap_or(u32::MAX);
        let base = m.seq_offset;
        let d = self.drops.get_or_insert_with(Box::default);
        let current = if d.len > 0 { d.offset[d.len - 1] } else { base };
        if d.len > 0 && d.from[d.len - 1] + 1 == rel {
            // The packet right after the last drop: the same range moves on.
            d.from[d.len - 1] = rel;
            d.offset[d.len - 1] = current.wrapping_sub(1);
            return;
        }
        if d.len == MAX_DROP_RANGES {
            // Forget the oldest range: numbers before the next one no longer map.
            d.floor = d.from[1];
            d.from.copy_within(1.., 0);
            d.offset.copy_within(1.., 0);
            d.len -= 1;
        }
        d.from[d.len] = rel;
        d.offset[d.len] = current.wrapping_sub(1);
        d.len += 1;
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
        let in_run = |offset: u16, lo: i64, hi: i64| {
            let seq = out_seq.wrapping_sub(offset);
            let ext = m.highest_ext + i64::from(seq.wrapping_sub(m.highest_seq) as i16);
            (ext >= lo && ext < hi && ext <= m.highest_ext).then_some((m.epoch, seq))
        };
        let Some(d) = self.drops.as_deref() else {
            return in_run(m.seq_offset, m.start_ext, i64::MAX);
        };
        // The newest range first: each maps from its start to the next one's.
        let at = |rel: u32| m.start_ext + i64::from(rel);
        let mut hi = i64::MAX;
        for i in (0..d.len).rev() {
            if let Some(found) = in_run(d.offset[i], at(d.from[i]), hi) {
                return Some(found);
            }
            hi = at(d.from[i]);
        }
        in_run(m.seq_offset, at(d.floor), hi)
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
                self.drops = None;
                m
            }
        };
        let ext = mapping.highest_ext + i64::from(seq.wrapping_sub(mapping.highest_seq) as i16);
        if ext < mapping.start_ext {
            return None;
        }
        let out_seq = seq.wrapping_add(self.offset_for(&mapping, ext)?);
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
    fn dropped_packets_leave_no_gap_and_nacks_still_find_their_packets() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 65534, 0);
        assert_eq!(r.rewrite(t0, 1, 10, 0), Some((65534, 0)));
        // 11 and 12 (one frame) dropped, 13 sent, 14 dropped, 15 lost, 16 sent.
        r.drop_packet(1, 11);
        r.drop_packet(1, 12);
        assert_eq!(r.rewrite(t0, 1, 13, 3000).unwrap().0, 65535);
        r.drop_packet(1, 14);
        assert_eq!(r.rewrite(t0, 1, 16, 6000).unwrap().0, 1);
        // The lost packet's number stays a gap, and comes late into it.
        assert_eq!(r.rewrite(t0, 1, 15, 6000).unwrap().0, 0);
        assert_eq!(r.source_of(65534), Some((1, 10)));
        assert_eq!(r.source_of(65535), Some((1, 13)));
        assert_eq!(r.source_of(0), Some((1, 15)));
        assert_eq!(r.source_of(1), Some((1, 16)));
        assert_eq!(r.source_of(2), None);
        // A late packet of a dropped frame shifts nothing.
        r.drop_packet(1, 12);
        assert_eq!(r.rewrite(t0, 1, 17, 9000).unwrap().0, 2);
        // A new run forgets the drops.
        r.restart();
        assert_eq!(r.rewrite(t0, 1, 500, 0).unwrap().0, 3);
        assert_eq!(r.rewrite(t0, 1, 501, 0).unwrap().0, 4);
    }

    #[test]
    fn numbers_before_the_oldest_remembered_drop_no_longer_map() {
        let t0 = Instant::now();
        let mut r = HeaderRewriter::new(VIDEO_CLOCK, 0, 0);
        r.rewrite(t0, 1, 0, 0);
        // Every other packet dropped, more drops than ranges kept.
        let mut seq = 1u16;
        let mut out = 0;
        for _ in 0..MAX_DROP_RANGES + 4 {
            r.drop_packet(1, seq);
            out = r.rewrite(t0, 1, seq + 1, 0).unwrap().0;
            seq += 2;
        }
        assert_eq!(out as usize, MAX_DROP_RANGES + 4, "no gaps");
        assert_eq!(r.source_of(out), Some((1, seq - 1)));
        assert_eq!(r.source_of(0), None, "forgotten");
        assert_eq!(r.rewrite(t0, 1, 2, 0), None, "too old to map");
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
