//! The publisher side of a stream: per-track duplicate suppression and padding removal, done
//! once per source packet before fan-out, so no viewer pays for them.

use std::collections::VecDeque;

/// How far back (in packets) a late or retransmitted packet is still recognised.
const WINDOW: i64 = 128;
/// How many removed padding packets are remembered to renumber late packets correctly.
const PADDING_MEMORY: usize = 256;

/// What to do with one source packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Forward with this (padding-compacted) sequence number.
    Forward(u16),
    /// Already seen (a retransmission that raced the original), too old, or padding.
    Drop,
}

/// Sequence bookkeeping of one incoming track.
#[derive(Debug, Default)]
pub(crate) struct SourceTrack {
    /// Highest extended sequence number and its 16-bit form.
    highest: Option<(i64, u16)>,
    /// Bit i set: extended sequence number `highest - i` was received.
    seen: u128,
    /// Extended sequence numbers of removed padding-only packets, oldest first.
    padding: VecDeque<i64>,
    /// How many padding packets were removed in all.
    padding_removed: u16,
}

impl SourceTrack {
    /// Classifies a packet; `padding_only` packets (bandwidth probes, no media) are removed and
    /// the sequence numbers after them closed up, so viewers see no gap for them.
    pub(crate) fn accept(&mut self, seq: u16, padding_only: bool) -> Verdict {
        let ext = match self.highest {
            None => {
                self.highest = Some((i64::from(seq), seq));
                self.seen = 1;
                i64::from(seq)
            }
            Some((hext, hseq)) => {
                let ext = hext + i64::from(seq.wrapping_sub(hseq) as i16);
                if ext > hext {
                    let shift = ext - hext;
                    self.seen = if shift >= 128 { 0 } else { self.seen << shift };
                    self.seen |= 1;
                    self.highest = Some((ext, seq));
                } else {
                    let back = hext - ext;
                    if back >= WINDOW {
                        return Verdict::Drop;
                    }
                    let bit = 1u128 << back;
                    if self.seen & bit != 0 {
                        return Verdict::Drop;
                    }
                    self.seen |= bit;
                }
                ext
            }
        };
        if padding_only {
            self.padding.push_back(ext);
            if self.padding.len() > PADDING_MEMORY {
                self.padding.pop_front();
            }
            self.padding_removed = self.padding_removed.wrapping_add(1);
            return Verdict::Drop;
        }
        let later_padding = self.padding.iter().rev().take_while(|&&p| p > ext).count();
        let removed_before = self.padding_removed.wrapping_sub(later_padding as u16);
        Verdict::Forward(seq.wrapping_sub(removed_before))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_dropped_once_seen() {
        let mut t = SourceTrack::default();
        assert_eq!(t.accept(10, false), Verdict::Forward(10));
        assert_eq!(t.accept(11, false), Verdict::Forward(11));
        assert_eq!(t.accept(11, false), Verdict::Drop);
        assert_eq!(t.accept(10, false), Verdict::Drop);
        // A late packet inside the window is new, once.
        assert_eq!(t.accept(13, false), Verdict::Forward(13));
        assert_eq!(t.accept(12, false), Verdict::Forward(12));
        assert_eq!(t.accept(12, false), Verdict::Drop);
    }

    #[test]
    fn wraps_and_forgets_far_history() {
        let mut t = SourceTrack::default();
        assert_eq!(t.accept(65535, false), Verdict::Forward(65535));
        assert_eq!(t.accept(0, false), Verdict::Forward(0));
        assert_eq!(t.accept(65535, false), Verdict::Drop);
        assert_eq!(t.accept(1000, false), Verdict::Forward(1000));
        // More than the window behind: too old to judge, dropped.
        assert_eq!(t.accept(1, false), Verdict::Drop);
    }

    #[test]
    fn padding_is_removed_and_the_gap_closed() {
        let mut t = SourceTrack::default();
        assert_eq!(t.accept(100, false), Verdict::Forward(100));
        assert_eq!(t.accept(101, true), Verdict::Drop);
        assert_eq!(t.accept(102, true), Verdict::Drop);
        assert_eq!(t.accept(103, false), Verdict::Forward(101));
        // A packet from before the padding, arriving late, keeps its own number.
        let mut t = SourceTrack::default();
        assert_eq!(t.accept(100, false), Verdict::Forward(100));
        assert_eq!(t.accept(102, true), Verdict::Drop);
        assert_eq!(t.accept(103, false), Verdict::Forward(102));
        assert_eq!(t.accept(101, false), Verdict::Forward(101));
    }
}
