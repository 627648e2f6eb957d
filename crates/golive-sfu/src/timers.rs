//! One deadline structure for every peer of a worker, so a wake-up costs in the peers that are
//! due, not in the peers there are.
//!
//! A binary heap of `(deadline, peer, generation)` with lazy invalidation: a peer keeps a
//! [`TimerSlot`] naming its one live entry. A deadline that moves earlier pushes a new entry
//! (the old one goes stale: its generation no longer matches); one that moves later pushes
//! nothing, and when the earlier entry pops the SFU finds the peer not due yet and schedules it
//! again. So a peer is never woken late, and a packet sent to a viewer, which pushes the
//! viewer's liveness or report timer later, costs no heap operation at all.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::types::PeerId;

/// A peer's entry in [`Timers`]: the instant it is scheduled for and that entry's generation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TimerSlot {
    at: Option<Instant>,
    generation: u64,
}

/// Stale entries (removed peers, deadlines that moved earlier) are dropped as they pop; past this
/// many per live peer the heap is swept at once, so it stays proportional to the peers.
const STALE_ENTRIES_PER_PEER: usize = 2;
const MIN_ENTRIES_BEFORE_SWEEP: usize = 64;

impl TimerSlot {
    /// Whether the entry of this generation is the slot's live one.
    pub(crate) fn is_live(&self, generation: u64) -> bool {
        self.at.is_some() && self.generation == generation
    }
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, PeerId, u64)>>,
    /// Generations are unique across peers, so an entry of a removed peer never matches a new
    /// peer that reuses its id.
    next_generation: u64,
}

impl Timers {
    /// Keeps `peer`'s wake-up in step with its next deadline `at`, after any call that may have
    /// moved it.
    pub(crate) fn schedule(&mut self, peer: PeerId, slot: &mut TimerSlot, at: Option<Instant>) {
        let Some(at) = at else {
            // An entry left in the heap wakes the SFU once, finds nothing due and goes.
            return;
        };
        if slot.at.is_some_and(|s| s <= at) {
            return;
        }
        self.next_generation += 1;
        *slot = TimerSlot {
            at: Some(at),
            generation: self.next_generation,
        };
        self.heap.push(Reverse((at, peer, slot.generation)));
    }

    /// The earliest entry. It may be stale: the wake-up it causes is early, never late.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the next entry due at `now`: its peer and generation, for [`Timers::claim`].
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(PeerId, u64)> {
        let Reverse((at, _, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        let Reverse((_, peer, generation)) = self.heap.pop()?;
        Some((peer, generation))
    }

    /// Whether a popped entry is its peer's live one; if so the peer has no entry any more and
    /// must be scheduled again after its timeout handling.
    pub(crate) fn claim(slot: &mut TimerSlot, generation: u64) -> bool {
        if !slot.is_live(generation) {
            return false;
        }
        slot.at = None;
        true
    }

    /// Drops stale entries once they outnumber the live ones; `live` tells a live entry by its
    /// peer and generation.
    pub(crate) fn sweep_if_stale(&mut self, peers: usize, live: impl Fn(PeerId, u64) -> bool) {
        if self.heap.len() > MIN_ENTRIES_BEFORE_SWEEP.max(peers * STALE_ENTRIES_PER_PEER) {
            self.heap
                .retain(|Reverse((_, peer, generation))| live(*peer, *generation));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn due(t: &mut Timers, slots: &mut [TimerSlot], now: Instant) -> Vec<PeerId> {
        let mut out = Vec::new();
        while let Some((peer, generation)) = t.pop_due(now) {
            if Timers::claim(&mut slots[peer.0 as usize], generation) {
                out.push(peer);
            }
        }
        out
    }

    #[test]
    fn a_deadline_moved_earlier_fires_at_the_earlier_instant_and_once() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut slots = [TimerSlot::default(); 2];
        t.schedule(PeerId(0), &mut slots[0], Some(t0 + Duration::from_secs(10)));
        t.schedule(PeerId(1), &mut slots[1], Some(t0 + Duration::from_secs(5)));
        t.schedule(PeerId(0), &mut slots[0], Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            due(&mut t, &mut slots, t0 + Duration::from_secs(1)),
            [PeerId(0)]
        );
        // The entry it replaced is stale: at 10 s only peer 1 (due at 5 s) is claimed.
        assert_eq!(
            due(&mut t, &mut slots, t0 + Duration::from_secs(10)),
            [PeerId(1)]
        );
        assert_eq!(t.next(), None);
    }

    #[test]
    fn a_deadline_moved_later_keeps_the_earlier_entry() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut slots = [TimerSlot::default(); 1];
        t.schedule(PeerId(0), &mut slots[0], Some(t0 + Duration::from_secs(1)));
        t.schedule(PeerId(0), &mut slots[0], Some(t0 + Duration::from_secs(2)));
        assert_eq!(t.len(), 1, "moving later pushes nothing");
        // It pops at 1 s; the SFU then sees the peer is not due and schedules it again.
        assert_eq!(
            due(&mut t, &mut slots, t0 + Duration::from_secs(1)),
            [PeerId(0)]
        );
        t.schedule(PeerId(0), &mut slots[0], Some(t0 + Duration::from_secs(2)));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn stale_entries_are_swept_once_they_outnumber_the_peers() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut slot = TimerSlot::default();
        for i in 0..200u64 {
            t.schedule(
                PeerId(0),
                &mut slot,
                Some(t0 + Duration::from_secs(1_000 - i)),
            );
        }
        assert_eq!(t.len(), 200);
        let live = slot.generation;
        t.sweep_if_stale(1, |_, g| g == live);
        assert_eq!(t.len(), 1);
    }
}
