//! What a worker knows of one stream: its local peers and what it remembers of the source
//! (keyframe cache, NACK history), whether the broadcaster is here or on another worker.

use std::time::{Duration, Instant};

use crate::cache::{History, KeyframeCache};
use crate::codec::MediaKind;
use crate::rewrite::SourceEpoch;
use crate::simulcast::{Availability, Layer, MAX_LAYERS, Rung};
use crate::temporal::{ALL_TEMPORAL_LAYERS, MAX_TEMPORAL_LAYERS};
use crate::types::PeerId;

pub(crate) struct LocalStream {
    pub(crate) publisher: Option<PeerId>,
    pub(crate) viewers: Vec<PeerId>,
    /// Video packets since the last keyframe, per simulcast layer, for viewers that join and
    /// viewers that move to the layer.
    pub(crate) caches: [KeyframeCache; MAX_LAYERS],
    /// Recent audio packets, and recent video packets per layer, for viewers' NACKs (allocated
    /// with the first packet of each).
    pub(crate) audio_history: Option<History>,
    pub(crate) video_history: [Option<History>; MAX_LAYERS],
    /// How many simulcast layers the source has sent so far (layers below the highest seen
    /// count too): 1 for a broadcaster without simulcast, once it sent video.
    pub(crate) layers: usize,
    /// Bit i: layer i is being sent (a packet of it came within [`LAYER_IDLE`] of the stream's
    /// latest video).
    pub(crate) active: u8,
    /// When each layer's latest packet came.
    pub(crate) last_seen: [Option<Instant>; MAX_LAYERS],
    /// The source epoch `layers` counts for: a new broadcaster may send fewer layers.
    pub(crate) layers_epoch: Option<SourceEpoch>,
    /// What each layer's video carries, measured, headers included
    /// ([`crate::forwarder::DATAGRAM_OVERHEAD_BYTES`]).
    pub(crate) rates: [RateMeter; MAX_LAYERS],
    /// The same per temporal layer (TID) of each layer, where its packets name one.
    pub(crate) tid_rates: [[RateMeter; MAX_TEMPORAL_LAYERS]; MAX_LAYERS],
    /// How many temporal layers each layer has shown (its highest TID plus one; 0: none).
    pub(crate) tids: [u8; MAX_LAYERS],
    /// What the audio carries, measured the same way: every viewer gets it beside its layer.
    pub(crate) audio_rate: RateMeter,
    pub(crate) last_media_at: Option<Instant>,
}

impl LocalStream {
    pub(crate) fn new() -> Self {
        Self {
            publisher: None,
            viewers: Vec::new(),
            caches: Default::default(),
            audio_history: None,
            video_history: Default::default(),
            layers: 0,
            active: 0,
            last_seen: [None; MAX_LAYERS],
            layers_epoch: None,
            rates: Default::default(),
            tid_rates: Default::default(),
            tids: [0; MAX_LAYERS],
            audio_rate: RateMeter::default(),
            last_media_at: None,
        }
    }

    /// Which layers the source sends.
    pub(crate) fn availability(&self) -> Availability {
        Availability {
            seen: self.layers,
            active: self.active,
        }
    }

    /// A video packet of `layer` came now. Returns true when the layers being sent changed:
    /// the layer is new or back, or another went quiet for [`LAYER_IDLE`].
    pub(crate) fn layer_seen(&mut self, now: Instant, layer: Layer) -> bool {
        let before = (self.layers, self.active);
        let i = layer.index();
        self.last_seen[i] = Some(now);
        self.layers = self.layers.max(i + 1);
        self.active |= 1 << i;
        for (l, seen) in self.last_seen.iter().enumerate() {
            if seen.is_some_and(|t| now.saturating_duration_since(t) >= LAYER_IDLE) {
                self.active &= !(1 << l);
            }
        }
        before != (self.layers, self.active)
    }

    /// Forgets which layers were sent: a new source counts them again.
    pub(crate) fn reset_layers(&mut self) {
        self.layers = 0;
        self.active = 0;
        self.last_seen = [None; MAX_LAYERS];
        self.tids = [0; MAX_LAYERS];
    }

    /// A video packet of `layer` and temporal layer `tid` (if it names one), `bytes` on the
    /// wire, came now: measured for its layer and its temporal layer.
    pub(crate) fn record_video(
        &mut self,
        now: Instant,
        layer: Layer,
        tid: Option<u8>,
        bytes: usize,
    ) {
        let l = layer.index().min(MAX_LAYERS - 1);
        self.rates[l].record(now, bytes);
        if let Some(t) = tid {
            let t = usize::from(t).min(MAX_TEMPORAL_LAYERS - 1);
            self.tid_rates[l][t].record(now, bytes);
            self.tids[l] = self.tids[l].max(t as u8 + 1);
        }
    }

    /// The highest TID `layer` has shown (0 for a layer without temporal layers).
    pub(crate) fn max_tid(&self, layer: Layer) -> u8 {
        self.tids[layer.index().min(MAX_LAYERS - 1)].saturating_sub(1)
    }

    /// What a viewer may receive, cheapest first, and what each costs: per layer, its video
    /// with frames of its upper temporal layers dropped (see [`Ladder`]), then all of it; each
    /// with the stream's audio, as measured, headers included, so it compares with an estimate
    /// of everything the viewer's link carries. A layer above the lowest that is not being
    /// sent, or has not been measured over a whole window since it started or came back, is
    /// unbounded: nothing says what it will take (a browser resumes a layer at a low rate and
    /// ramps it up), so no estimate fits it. The lowest layer is the floor every viewer stands
    /// on, measured or not.
    pub(crate) fn ladder(&self) -> Ladder {
        let audio = self.audio_rate.bps().unwrap_or(0.0);
        let mut ladder = Ladder::default();
        for (i, rate) in self.rates[..self.layers.min(MAX_LAYERS)].iter().enumerate() {
            let layer = Layer(i as u8);
            let bps = match rate.bps() {
                Some(bps) if self.active & (1 << i) != 0 => bps,
                _ if i == 0 => rate.bps().unwrap_or(0.0),
                _ => f64::INFINITY,
            };
            let n = usize::from(self.tids[i]);
            if n >= 2 && bps.is_finite() {
                // The lowest layer may go down to its base frame rate; a higher one to half its
                // frame rate at most (below that a smaller picture at a steady rate looks better).
                let lowest = if i == 0 { 0 } else { n - 2 };
                let mut sum = 0.0;
                for (t, meter) in self.tid_rates[i][..n - 1].iter().enumerate() {
                    let Some(tid_bps) = meter.bps() else {
                        break;
                    };
                    sum += tid_bps;
                    if t >= lowest {
                        ladder.push(
                            Rung {
                                layer,
                                tid: t as u8,
                            },
                            sum + audio,
                        );
                    }
                }
            }
            ladder.push(
                Rung {
                    layer,
                    tid: ALL_TEMPORAL_LAYERS,
                },
                bps + audio,
            );
        }
        ladder
    }

    /// The keyframe cache of `layer`.
    pub(crate) fn cache(&self, layer: Layer) -> &KeyframeCache {
        &self.caches[layer.index().min(MAX_LAYERS - 1)]
    }

    /// The history a packet of `kind` and `layer` is kept in (audio has one).
    pub(crate) fn history(&self, kind: MediaKind, layer: Layer) -> Option<&History> {
        match kind {
            MediaKind::Audio => self.audio_history.as_ref(),
            MediaKind::Video => self.video_history[layer.index().min(MAX_LAYERS - 1)].as_ref(),
        }
    }

    pub(crate) fn history_mut(&mut self, kind: MediaKind, layer: Layer) -> &mut Option<History> {
        match kind {
            MediaKind::Audio => &mut self.audio_history,
            MediaKind::Video => &mut self.video_history[layer.index().min(MAX_LAYERS - 1)],
        }
    }

    pub(crate) fn is_unused(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }
}

/// At most this many rungs in a [`Ladder`].
pub const MAX_RUNGS: usize = MAX_LAYERS * MAX_TEMPORAL_LAYERS;

/// What a viewer of a stream may be sent, cheapest first: for each simulcast layer, the
/// temporal layers it may stop at (frame rates), then the whole layer; and the bitrate of each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ladder {
    rungs: [Rung; MAX_RUNGS],
    bps: [f64; MAX_RUNGS],
    len: usize,
}

impl Default for Ladder {
    fn default() -> Self {
        Self {
            rungs: [Rung::full(Layer::LOWEST); MAX_RUNGS],
            bps: [0.0; MAX_RUNGS],
            len: 0,
        }
    }
}

impl Ladder {
    /// One whole rung per layer at these bitrates, lowest first.
    #[cfg(test)]
    pub(crate) fn of_layers(bps: &[f64]) -> Self {
        let mut ladder = Self::default();
        for (i, &b) in bps.iter().enumerate() {
            ladder.push(Rung::full(Layer(i as u8)), b);
        }
        ladder
    }

    fn push(&mut self, rung: Rung, bps: f64) {
        if self.len < MAX_RUNGS {
            self.rungs[self.len] = rung;
            self.bps[self.len] = bps;
            self.len += 1;
        }
    }

    /// The bitrates, cheapest first.
    pub(crate) fn bitrates(&self) -> &[f64] {
        &self.bps[..self.len]
    }

    pub(crate) fn rung(&self, index: usize) -> Option<Rung> {
        self.rungs[..self.len].get(index).copied()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rungs (bit i: rung i) a viewer on `layer` may step down to but not climb to: the
    /// lowered frame rates of every other layer.
    pub(crate) fn down_only(&self, layer: Option<Layer>) -> u64 {
        self.rungs[..self.len]
            .iter()
            .enumerate()
            .filter(|(_, r)| r.tid != ALL_TEMPORAL_LAYERS && Some(r.layer) != layer)
            .fold(0, |mask, (i, _)| mask | 1 << i)
    }

    /// The index of `rung`, or of the highest rung below it (0 when there is none).
    pub(crate) fn at_or_below(&self, rung: Rung) -> usize {
        self.rungs[..self.len]
            .iter()
            .rposition(|r| (r.layer, r.tid) <= (rung.layer, rung.tid))
            .unwrap_or(0)
    }

    /// The index of the highest rung on `layer` or below (0 when there is none).
    pub(crate) fn top_of(&self, layer: Layer) -> usize {
        self.rungs[..self.len]
            .iter()
            .rposition(|r| r.layer <= layer)
            .unwrap_or(0)
    }
}

/// A layer without a packet this long, while another layer's video comes, is taken as
/// stopped. Every layer sends at least a packet per frame, and browsers drop a layer's frame
/// rate no lower than a few frames a second.
pub const LAYER_IDLE: Duration = Duration::from_millis(500);

/// How long a layer's bitrate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The bitrate of one layer, over the last whole [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    bps: Option<f64>,
    last: Option<Instant>,
}

impl RateMeter {
    pub(crate) fn record(&mut self, now: Instant, bytes: usize) {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) >= LAYER_IDLE)
        {
            // The layer stopped and came back: a window spanning the pause would average the
            // silence in. Measure afresh.
            *self = Self::default();
        }
        self.last = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.bps = Some(self.bytes as f64 * 8.0 / elapsed.as_secs_f64());
            self.window_start = Some(now);
            self.bytes = 0;
        }
        self.bytes += bytes as u64;
    }

    /// The last whole window's bitrate; `None` before one ended since the layer (re)started.
    pub(crate) fn bps(&self) -> Option<f64> {
        self.bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_what_a_whole_window_carried() {
        let t0 = Instant::now();
        let mut r = RateMeter::default();
        for i in 0..100 {
            r.record(t0 + Duration::from_millis(10 * i), 125);
        }
        assert_eq!(r.bps(), None);
        r.record(t0 + RATE_WINDOW, 125);
        let bps = r.bps().unwrap();
        assert!((bps - 100_000.0).abs() < 1.0, "{bps}");
    }

    #[test]
    fn a_layer_that_paused_is_measured_afresh_and_unbounded_until_then() {
        let t0 = Instant::now();
        let mut s = LocalStream::new();
        let tick = Duration::from_millis(10);
        // Three layers at 100, 200 and 400 kbit/s for 2 s.
        let mut t = t0;
        while t < t0 + Duration::from_secs(2) {
            for (l, bytes) in [125, 250, 500].into_iter().enumerate() {
                s.layer_seen(t, Layer(l as u8));
                s.rates[l].record(t, bytes);
            }
            t += tick;
        }
        let rates = s.ladder().bitrates().to_vec();
        assert!((rates[2] - 400_000.0).abs() < 5_000.0, "{rates:?}");
        // The top layer pauses for 3 s while the others go on: it is not being sent, so no
        // estimate can fit it.
        let paused = t;
        while t < paused + Duration::from_secs(3) {
            for (l, bytes) in [125, 250].into_iter().enumerate() {
                s.layer_seen(t, Layer(l as u8));
                s.rates[l].record(t, bytes);
            }
            t += tick;
        }
        assert_eq!(s.ladder().bitrates().to_vec()[2], f64::INFINITY);
        // It comes back ramping up from a low rate: a window spanning the pause would have
        // called it cheap. Unbounded until a whole window after its return, then its rate.
        let back = t;
        while t < back + RATE_WINDOW + Duration::from_millis(50) {
            for (l, bytes) in [125, 250, 500].into_iter().enumerate() {
                s.layer_seen(t, Layer(l as u8));
                s.rates[l].record(t, bytes);
            }
            let rates = s.ladder().bitrates().to_vec();
            if t < back + RATE_WINDOW {
                assert_eq!(rates[2], f64::INFINITY, "{:?}", t - back);
            }
            t += tick;
        }
        let rates = s.ladder().bitrates().to_vec();
        assert!((rates[2] - 400_000.0).abs() < 5_000.0, "{rates:?}");
        // The lowest layer is the floor: 0 before its first window, never unbounded.
        assert_eq!(
            LocalStream::new().ladder().bitrates().to_vec(),
            Vec::<f64>::new()
        );
        let mut fresh = LocalStream::new();
        fresh.layer_seen(t0, Layer(0));
        fresh.rates[0].record(t0, 100);
        assert_eq!(fresh.ladder().bitrates().to_vec(), [0.0]);
    }

    #[test]
    fn temporal_layers_add_rungs_below_each_layer() {
        let t0 = Instant::now();
        let mut s = LocalStream::new();
        let tick = Duration::from_millis(10);
        let mut t = t0;
        // Two layers in L1T3 (TID 0, 1, 2 carrying 40/20/40 %): 100 and 1,000 kbit/s.
        while t <= t0 + 2 * RATE_WINDOW {
            for (l, bytes) in [125.0, 1250.0].into_iter().enumerate() {
                s.layer_seen(t, Layer(l as u8));
                for (tid, share) in [0.4, 0.2, 0.4].into_iter().enumerate() {
                    let b = (bytes * share) as usize;
                    s.record_video(t, Layer(l as u8), Some(tid as u8), b);
                }
            }
            t += tick;
        }
        let ladder = s.ladder();
        let rungs: Vec<(u8, u8)> = (0..4)
            .map(|i| ladder.rung(i).map(|r| (r.layer.0, r.tid)).unwrap())
            .collect();
        // The lowest layer down to TID 0; the upper one to half its frame rate (TID 1).
        assert_eq!(rungs, [(0, 0), (0, 1), (0, ALL_TEMPORAL_LAYERS), (1, 1)]);
        assert_eq!(ladder.bitrates().len(), 5);
        let kbps: Vec<f64> = ladder
            .bitrates()
            .iter()
            .map(|b| (b / 1e3).round())
            .collect();
        assert_eq!(kbps, [40.0, 60.0, 100.0, 600.0, 1000.0]);
        assert_eq!(ladder.top_of(Layer(0)), 2);
        assert_eq!(ladder.top_of(Layer(1)), 4);
        assert_eq!(s.max_tid(Layer(1)), 2);
        s.reset_layers();
        assert_eq!(s.max_tid(Layer(1)), 0);
    }
}
