//! Where every step of the SFU leaves its results: datagrams and lean viewers' batches for the
//! shell to send, outputs for it to act on, the addresses those datagrams bind, the deadlines
//! the step moved, and the counters. Held apart from the peer and stream maps so the fan-out
//! can borrow all three at once.

use std::collections::VecDeque;

use crate::demux::Demuxer;
use crate::leg::Leg;
use crate::simulcast::LayerChange;
use crate::timers::Timers;
use crate::types::{Output, PeerId, SfuStats, Transmit};

/// A peer may send from this many remote addresses (NAT rebinding, several candidates).
const MAX_ADDRS_PER_PEER: usize = 8;

#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) transmits: VecDeque<Transmit>,
    /// Lean viewers with encrypted datagrams waiting in their send buffers, for
    /// [`crate::Sfu::poll_batch`].
    pub(crate) batches: VecDeque<PeerId>,
    pub(crate) outputs: VecDeque<Output>,
    /// Viewers that moved to another simulcast layer, for [`crate::Sfu::poll_layer_change`].
    pub(crate) layer_changes: VecDeque<LayerChange>,
    pub(crate) demux: Demuxer<PeerId>,
    pub(crate) timers: Timers,
    pub(crate) stats: SfuStats,
}

impl Outbox {
    /// Moves a peer's outgoing datagrams to the send queue. A destination the peer has not sent
    /// to before is bound to it in the demultiplexer: a leg only answers STUN whose integrity it
    /// checked, so an address is bound once it is proven, never on a forged request.
    pub(crate) fn drain_transmits(&mut self, id: PeerId, peer: &mut Leg) {
        while let Some((to, data)) = peer.poll_transmit() {
            let addrs = peer.remote_addrs_mut();
            if !addrs.contains(&to) {
                if addrs.len() >= MAX_ADDRS_PER_PEER {
                    // Keep the newest: the oldest is the likeliest to be dead.
                    let old = addrs.remove(0);
                    self.demux.remove("", &[old], id);
                }
                addrs.push(to);
                self.demux.bind(to, id);
            }
            self.transmits.push_back(Transmit { to, data, peer: id });
        }
    }
}
