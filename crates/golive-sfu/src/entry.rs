//! A peer as the SFU holds it: its transport (leg), its stream, its role (a broadcaster's
//! receiver or a viewer's down tracks), its place in the worker's timers and its garbage meter.
//! The role is matched here, once; the rest of the core asks for the side it needs.

use golive_proto::StreamName;
use std::time::{Duration, Instant};

use crate::down_track::Viewer;
use crate::leg::Leg;
use crate::outbox::Outbox;
use crate::receiver::Receiver;
use crate::timers::{TimerSlot, Timers};
use crate::types::PeerId;

/// A peer that has not connected (ICE and DTLS) this long after its answer is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Garbage is judged over windows of this length...
pub const GARBAGE_WINDOW: Duration = Duration::from_secs(5);
/// ...and a peer whose bound address sent at least this many garbage datagrams in one window,
/// more garbage than good, is closed. An honest peer sends none; 200 a second for five seconds
/// is no accident.
pub const GARBAGE_LIMIT: u32 = 1000;

pub(crate) enum PeerRole {
    Publisher(Box<Receiver>),
    Viewer(Box<Viewer>),
}

impl PeerRole {
    pub(crate) fn receiver_mut(&mut self) -> Option<&mut Receiver> {
        match self {
            PeerRole::Publisher(p) => Some(p),
            PeerRole::Viewer(_) => None,
        }
    }

    pub(crate) fn viewer(&self) -> Option<&Viewer> {
        match self {
            PeerRole::Viewer(v) => Some(v),
            PeerRole::Publisher(_) => None,
        }
    }

    pub(crate) fn viewer_mut(&mut self) -> Option<&mut Viewer> {
        match self {
            PeerRole::Viewer(v) => Some(v),
            PeerRole::Publisher(_) => None,
        }
    }
}

/// How much garbage a peer sent lately.
#[derive(Default)]
pub(crate) struct GarbageMeter {
    since: Option<Instant>,
    bad: u32,
    good: u32,
}

impl GarbageMeter {
    /// Returns true when the peer must be closed.
    pub(crate) fn record(&mut self, now: Instant, bad: bool) -> bool {
        if self.since.is_none_or(|s| now >= s + GARBAGE_WINDOW) {
            *self = Self {
                since: Some(now),
                ..Self::default()
            };
        }
        if bad {
            self.bad += 1;
        } else {
            self.good = self.good.saturating_add(1);
        }
        self.bad >= GARBAGE_LIMIT && self.bad > self.good
    }
}

pub(crate) struct PeerEntry {
    pub(crate) leg: Leg,
    pub(crate) stream: StreamName,
    pub(crate) role: PeerRole,
    pub(crate) created_at: Instant,
    /// The leg's own next deadline, as it last reported it.
    pub(crate) deadline: Option<Instant>,
    pub(crate) garbage: GarbageMeter,
    pub(crate) timer: TimerSlot,
}

impl PeerEntry {
    pub(crate) fn new(now: Instant, leg: Leg, stream: StreamName, role: PeerRole) -> Self {
        Self {
            leg,
            stream,
            role,
            created_at: now,
            deadline: None,
            garbage: GarbageMeter::default(),
            timer: TimerSlot::default(),
        }
    }

    pub(crate) fn is_publisher(&self) -> bool {
        matches!(self.role, PeerRole::Publisher(_))
    }

    /// It never connected and its time is up.
    pub(crate) fn connect_expired(&self, now: Instant) -> bool {
        !self.leg.is_connected() && self.created_at + CONNECT_TIMEOUT <= now
    }

    /// When this peer next needs [`crate::Sfu::handle_timeout`]: its leg's timers, its connect
    /// timeout, a held keyframe request (broadcasters) or the next step of a cache replay
    /// (viewers).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let connect = (!self.leg.is_connected()).then_some(self.created_at + CONNECT_TIMEOUT);
        let own = match &self.role {
            PeerRole::Publisher(p) => p.poll_timeout(),
            PeerRole::Viewer(v) => {
                let bwe = v.bwe.as_ref().and_then(|b| b.poll_timeout());
                [v.replay.map(|r| r.due), bwe].into_iter().flatten().min()
            }
        };
        [self.deadline, connect, own].into_iter().flatten().min()
    }

    /// Keeps the worker's timers in step after anything that may have moved this peer's
    /// deadline without a call into its leg.
    pub(crate) fn reschedule(&mut self, id: PeerId, timers: &mut Timers) {
        let at = self.next_deadline();
        timers.schedule(id, &mut self.timer, at);
    }

    /// After sending through the leg: its datagrams to the outbox, then its next deadline read
    /// and scheduled.
    pub(crate) fn settle(&mut self, id: PeerId, out: &mut Outbox) {
        out.drain_transmits(id, &mut self.leg);
        self.deadline = self.leg.poll_timeout();
        self.reschedule(id, &mut out.timers);
    }
}
