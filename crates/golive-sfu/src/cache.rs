//! What a worker remembers of each source: the packets since its last keyframe (so a viewer that
//! joins starts at once, from that keyframe) and a short history by sequence number (so a viewer's
//! NACK is answered without asking the broadcaster).
//!
//! Both hold [`Media`], whose payload is the `Bytes` every viewer and every worker shares: a
//! cached packet costs its entry here, never a copy of the payload. One cache and one history per
//! source per worker serve every viewer of that worker, instead of one send buffer per viewer.

use bytes::Bytes;
use std::collections::VecDeque;

use crate::rewrite::SourceEpoch;
use crate::simulcast::Layer;

/// The keyframe cache of one source holds at most this many packets...
pub const KEYFRAME_CACHE_MAX_PACKETS: usize = 512;
/// ...and at most this many payload bytes.
pub const KEYFRAME_CACHE_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Packets of history per video source: about 1-3 s of a browser's video, longer than any NACK
/// is useful for.
pub const VIDEO_HISTORY_PACKETS: usize = 1024;
/// Packets of history per audio source (Opus: 50 packets/s).
pub const AUDIO_HISTORY_PACKETS: usize = 128;

/// One source packet as the fan-out needs it. `Clone` costs a reference count on the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Media {
    pub epoch: SourceEpoch,
    /// The simulcast layer it belongs to (the lowest for a broadcaster without simulcast).
    pub layer: Layer,
    pub keyframe_start: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub capture_time: Option<crate::types::AbsCaptureTime>,
    /// The VP8 payload descriptor's picture id and temporal layer, where it carries them.
    pub vp8: Option<crate::temporal::Vp8Descriptor>,
}

/// What the cache holds for a joining viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheState {
    /// No keyframe seen (of the current epoch): a joining viewer must wait and ask for one.
    Empty,
    /// Every packet from the last keyframe on: a joining viewer gets them all, then goes live.
    Complete,
    /// The source ran past the bounds since its last keyframe: only the keyframe's own packets
    /// are kept. A joining viewer gets that picture at once and then waits for the next keyframe
    /// (which the cache asked for when it overflowed).
    KeyframeOnly,
}

/// The packets of one video source since its last keyframe.
#[derive(Debug)]
pub(crate) struct KeyframeCache {
    packets: VecDeque<Media>,
    bytes: usize,
    state: CacheState,
    epoch: Option<SourceEpoch>,
    /// Extended sequence number of the keyframe start (packets before it are not cached) and
    /// the 16-bit form, for unwrapping.
    start_seq: u16,
    keyframe_ts: u32,
}

impl Default for KeyframeCache {
    fn default() -> Self {
        Self {
            packets: VecDeque::new(),
            bytes: 0,
            state: CacheState::Empty,
            epoch: None,
            start_seq: 0,
            keyframe_ts: 0,
        }
    }
}

impl KeyframeCache {
    /// Takes one source packet (already free of duplicates). Returns true when the cache just
    /// overflowed and the source should be asked for a new keyframe.
    pub(crate) fn push(&mut self, m: &Media) -> bool {
        if self.epoch != Some(m.epoch) {
            // A new source: nothing of the old one may start a viewer of the new.
            self.clear();
            self.epoch = Some(m.epoch);
        }
        if m.keyframe_start {
            self.clear();
            self.state = CacheState::Complete;
            self.start_seq = m.seq;
            self.keyframe_ts = m.timestamp;
            self.append(m);
            return false;
        }
        // A packet from before the keyframe (a late retransmission) is of no use to a joiner.
        let behind_start = (m.seq.wrapping_sub(self.start_seq) as i16) < 0;
        match self.state {
            CacheState::Empty => false,
            CacheState::KeyframeOnly => {
                // The keyframe's own late packets still belong to it.
                if !behind_start && m.timestamp == self.keyframe_ts {
                    self.append(m);
                }
                false
            }
            CacheState::Complete if behind_start => false,
            CacheState::Complete => {
                self.append(m);
                if self.packets.len() <= KEYFRAME_CACHE_MAX_PACKETS
                    && self.bytes <= KEYFRAME_CACHE_MAX_BYTES
                {
                    return false;
                }
                let ts = self.keyframe_ts;
                self.packets.retain(|p| p.timestamp == ts);
                self.bytes = self.packets.iter().map(|p| p.payload.len()).sum();
                self.state = CacheState::KeyframeOnly;
                if self.packets.len() > KEYFRAME_CACHE_MAX_PACKETS
                    || self.bytes > KEYFRAME_CACHE_MAX_BYTES
                {
                    // A keyframe larger than the bounds by itself: keep nothing.
                    self.clear();
                }
                true
            }
        }
    }

    fn append(&mut self, m: &Media) {
        self.bytes += m.payload.len();
        self.packets.push_back(m.clone());
    }

    pub(crate) fn clear(&mut self) {
        self.packets.clear();
        self.bytes = 0;
        self.state = CacheState::Empty;
        if self.packets.capacity() > KEYFRAME_CACHE_MAX_PACKETS * 2 {
            self.packets.shrink_to(KEYFRAME_CACHE_MAX_PACKETS);
        }
    }

    pub(crate) fn state(&self) -> CacheState {
        self.state
    }

    pub(crate) fn packets(&self) -> impl Iterator<Item = &Media> {
        self.packets.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.packets.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The last packets of one source, by sequence number, for answering NACKs.
#[derive(Debug)]
pub(crate) struct History {
    slots: Vec<Option<Media>>,
    /// Highest sequence number stored (16-bit) in the current epoch.
    highest: Option<(SourceEpoch, u16)>,
}

/// Whether a packet a viewer asked for can be sent again.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    Found(&'a Media),
    /// Newer than anything evicted but not here: the SFU never got it either (the broadcaster's
    /// retransmission may still come, and then reaches every viewer anyway).
    NotYetReceived,
    /// Too old for the history, or of another epoch: only a keyframe repairs the picture.
    Gone,
}

impl History {
    /// `capacity` is rounded up to a power of two.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: vec![None; capacity.next_power_of_two()],
            highest: None,
        }
    }

    fn index(&self, seq: u16) -> usize {
        usize::from(seq) & (self.slots.len() - 1)
    }

    pub(crate) fn push(&mut self, m: &Media) {
        match self.highest {
            Some((epoch, h)) if epoch == m.epoch => {
                if (m.seq.wrapping_sub(h) as i16) > 0 {
                    // Slots skipped over (a source gap) must not answer for the new numbers.
                    let mut s = h.wrapping_add(1);
                    let mut cleared = 0;
                    while s != m.seq && cleared < self.slots.len() {
                        let i = self.index(s);
                        self.slots[i] = None;
                        s = s.wrapping_add(1);
                        cleared += 1;
                    }
                    self.highest = Some((epoch, m.seq));
                } else if h.wrapping_sub(m.seq) as usize >= self.slots.len() {
                    return; // older than the window
                }
            }
            _ => {
                self.slots.iter_mut().for_each(|s| *s = None);
                self.highest = Some((m.epoch, m.seq));
            }
        }
        let i = self.index(m.seq);
        self.slots[i] = Some(m.clone());
    }

    pub(crate) fn get(&self, epoch: SourceEpoch, seq: u16) -> Lookup<'_> {
        let Some((e, h)) = self.highest else {
            return Lookup::Gone;
        };
        if e != epoch {
            return Lookup::Gone;
        }
        let back = h.wrapping_sub(seq);
        if (back as i16) < 0 {
            return Lookup::NotYetReceived;
        }
        if usize::from(back) >= self.slots.len() {
            return Lookup::Gone;
        }
        match &self.slots[self.index(seq)] {
            Some(m) if m.seq == seq && m.epoch == epoch => Lookup::Found(m),
            _ => Lookup::NotYetReceived,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u16, ts: u32, key: bool, len: usize) -> Media {
        Media {
            layer: Layer::LOWEST,
            epoch: 1,
            keyframe_start: key,
            seq,
            timestamp: ts,
            marker: false,
            payload: Bytes::from(vec![0u8; len]),
            capture_time: None,
            vp8: None,
        }
    }

    #[test]
    fn cache_holds_everything_since_the_last_keyframe() {
        let mut c = KeyframeCache::default();
        assert!(!c.push(&m(1, 0, false, 10)));
        assert_eq!(c.state(), CacheState::Empty);
        c.push(&m(2, 100, true, 10));
        c.push(&m(3, 100, false, 10));
        c.push(&m(4, 200, false, 10));
        assert_eq!(c.state(), CacheState::Complete);
        assert_eq!(c.packets().map(|p| p.seq).collect::<Vec<_>>(), [2, 3, 4]);
        // A late packet from before the keyframe is not cached.
        c.push(&m(1, 0, false, 10));
        assert_eq!(c.len(), 3);
        // The next keyframe starts over.
        c.push(&m(5, 300, true, 10));
        assert_eq!(c.packets().map(|p| p.seq).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn cache_overflow_keeps_only_the_keyframe_and_asks_for_a_new_one() {
        let mut c = KeyframeCache::default();
        c.push(&m(0, 7, true, 100));
        c.push(&m(1, 7, false, 100));
        let mut overflowed = 0;
        for i in 2..(KEYFRAME_CACHE_MAX_PACKETS as u16 + 10) {
            overflowed += usize::from(c.push(&m(i, 7 + u32::from(i), false, 100)));
        }
        assert_eq!(overflowed, 1, "asks once");
        assert_eq!(c.state(), CacheState::KeyframeOnly);
        assert_eq!(c.packets().map(|p| p.seq).collect::<Vec<_>>(), [0, 1]);
        // Bytes bound.
        let mut c = KeyframeCache::default();
        c.push(&m(0, 7, true, 1000));
        let big = KEYFRAME_CACHE_MAX_BYTES / 1000;
        let hits: usize = (1..=big as u16 + 1)
            .map(|i| usize::from(c.push(&m(i, 8, false, 1000))))
            .sum();
        assert_eq!(hits, 1);
        assert_eq!(c.len(), 1);
        assert!(c.bytes() <= KEYFRAME_CACHE_MAX_BYTES);
    }

    #[test]
    fn a_keyframe_larger_than_the_bounds_is_not_kept() {
        let mut c = KeyframeCache::default();
        c.push(&m(0, 7, true, 1000));
        for i in 1..=KEYFRAME_CACHE_MAX_PACKETS as u16 {
            c.push(&m(i, 7, false, 10));
        }
        assert_eq!(c.state(), CacheState::Empty);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_new_epoch_empties_the_cache() {
        let mut c = KeyframeCache::default();
        c.push(&m(0, 7, true, 10));
        let mut other = m(1, 8, false, 10);
        other.epoch = 2;
        c.push(&other);
        assert_eq!(c.state(), CacheState::Empty);
    }

    #[test]
    fn history_answers_recent_packets_and_knows_what_is_gone() {
        let mut h = History::new(8);
        for s in [65530u16, 65531, 65533, 65534, 65535, 0, 1] {
            h.push(&m(s, 0, false, 1));
        }
        assert!(matches!(h.get(1, 65535), Lookup::Found(p) if p.seq == 65535));
        assert!(matches!(h.get(1, 1), Lookup::Found(_)));
        assert_eq!(h.get(1, 65532), Lookup::NotYetReceived);
        assert_eq!(h.get(1, 2), Lookup::NotYetReceived);
        assert_eq!(h.get(1, 65529), Lookup::Gone);
        assert_eq!(h.get(2, 1), Lookup::Gone);
        // A late packet inside the window fills its slot.
        h.push(&m(65532, 0, false, 1));
        assert!(matches!(h.get(1, 65532), Lookup::Found(_)));
        // A jump clears the slots it skips.
        h.push(&m(9, 0, false, 1));
        assert_eq!(h.get(1, 3), Lookup::NotYetReceived);
        assert_eq!(h.get(1, 1), Lookup::Gone);
    }
}
