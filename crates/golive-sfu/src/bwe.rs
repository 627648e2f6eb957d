//! Per-viewer bandwidth estimation and the choice of simulcast layer it drives.
//!
//! # The pieces
//!
//! - [`Estimator`]: every datagram sent to a viewer is stamped with a transport-wide sequence
//!   number ([`Estimator::stamp`]); the viewer's TWCC feedback ([`Estimator::on_twcc`]) pairs
//!   each number with its arrival time. The delay trend (rtc-interceptor's `SlopeEstimator`
//!   and `OveruseDetector`, the GCC filter and detector) and the loss fraction drive an AIMD
//!   rate of our own, capped at 1.5 times what the viewer is actually receiving. Where a viewer
//!   offers no TWCC, its REMB is taken as the estimate ([`Estimator::on_remb`]).
//! - Probing: an estimate can only grow with what is sent, so to find out whether the next
//!   layer fits, the down track pads up to that layer's rate for a short cluster
//!   ([`Estimator::start_probe`]). When the cluster arrives at that rate with no delay growth,
//!   the estimate jumps to the rate measured at the receiver.
//! - [`LayerChooser`]: the highest layer the estimate fits, with hysteresis: down after the
//!   estimate has stayed below the current layer for [`DOWN_HOLD`], up only after it has
//!   covered the next layer for [`UP_HOLD`] (shorter before the first congestion, so a viewer
//!   reaches its layer quickly after joining), under the viewer's own ceiling ([`Preference`]).
//!
//! # Why not rtc-interceptor's `Gcc` and `History` as they are
//!
//! `History` keeps its records in hash maps (an allocation per forwarded packet, which the
//! forwarding path must not make), and `convert_twcc` expands run-length chunks into a vector
//! whose size the remote chooses (up to 65,535 entries from one 20-byte chunk). Its `Gcc`
//! rate controllers can be neither raised by a probe result nor capped by the received rate.
//! So the records live in a fixed ring here, the feedback is walked against that ring and
//! nothing else, and the rate control is our own; the delay filter and overuse detector are
//! reused unchanged.

use rtc::interceptor::{OveruseDetector, PacketReport, SlopeEstimator, Usage};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};
use std::time::{Duration, Instant};

const _: () = assert!(std::mem::size_of::<Option<SentRecord>>() == 16);

/// Sent packets remembered for feedback: about 1.6 s at 2.5 Mbit/s of 1,200-byte datagrams and
/// audio (0.8 s at 5 Mbit/s), far more than the 100 ms between two feedback reports plus a round
/// trip. Each slot is 16 bytes, so the ring is 8 KiB of every viewer that negotiated TWCC.
pub const SEND_LOG_SLOTS: usize = 512;
/// Where an estimate starts before any feedback.
pub const INITIAL_BITRATE_BPS: f64 = 300_000.0;
/// The estimate never falls below this: below it, audio alone still goes out.
pub const MIN_BITRATE_BPS: f64 = 50_000.0;
/// A multiplicative increase per second while the path shows no congestion.
const INCREASE_PER_SECOND: f64 = 1.08;
/// On congestion, the estimate drops to this fraction of what the viewer receives.
const DECREASE_FACTOR: f64 = 0.85;
/// The estimate never runs ahead of the received rate by more than this: a rate the path has
/// never carried is not evidence that it can.
const RECEIVED_RATE_CAP: f64 = 1.5;
/// Averaged loss above this cuts the estimate in proportion to the loss.
const HIGH_LOSS: f64 = 0.10;
/// Between two loss-based cuts, so one burst is not counted again in every report.
const LOSS_INTERVAL: Duration = Duration::from_millis(300);
/// The window the received rate is measured over.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// rtc-rtcp decodes TWCC deltas (250 µs ticks on the wire) into microseconds.
const TWCC_DELTA_UNIT: Duration = Duration::from_micros(1);
/// One TWCC reference-time tick.
const TWCC_REFERENCE_TICK: Duration = Duration::from_millis(64);
/// How long a probe cluster lasts.
pub const PROBE_DURATION: Duration = Duration::from_millis(150);
/// A probe succeeds when the receiver got at least this fraction of the probed rate.
const PROBE_SUCCESS: f64 = 0.9;

/// Why a feedback packet was refused. The viewer's stream goes on; the packet is only counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    #[error(
        "TWCC feedback reports {0} packets, more than the {SEND_LOG_SLOTS} that can be in flight"
    )]
    TooManyStatuses(usize),
    #[error("TWCC feedback has fewer arrival deltas than received packets")]
    MissingDeltas,
}

#[derive(Clone, Copy)]
struct SentRecord {
    /// The low 32 bits of the unwrapped transport-wide number, so a slot from a previous lap
    /// of the ring is told apart (laps are [`SEND_LOG_SLOTS`] numbers; 2^32 are months of
    /// sending).
    id: u32,
    /// When it left, in microseconds since the estimator's epoch (half the size of an
    /// `Instant`; 2^64 µs never wrap).
    departure_us: u64,
    /// The datagram's size (UDP payloads are under 64 KiB).
    size: u16,
    probe: bool,
    acknowledged: bool,
}

/// A probe cluster in flight, and what its feedback showed.
#[derive(Debug, Clone, Copy)]
struct Probe {
    rate_bps: f64,
    first_id: u64,
    last_id: Option<u64>,
    ends: Instant,
    first_arrival: Option<Duration>,
    last_arrival: Option<Duration>,
    bytes_after_first: u64,
    overused: bool,
}

thread_local! {
    /// One feedback's reports while they are folded in. Every estimator of a thread (a media
    /// worker's viewers) shares it, so no viewer keeps a report buffer of its own between
    /// feedbacks (up to a few hundred reports of several dozen bytes each), and none is
    /// allocated per feedback once the first has grown it.
    static REPORTS: std::cell::RefCell<Vec<PacketReport>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// What one viewer's link carries, from its feedback.
pub struct Estimator {
    ring: Box<[Option<SentRecord>]>,
    /// The first stamp's instant: records keep their departures relative to it.
    epoch: Option<Instant>,
    next_id: u64,
    slope: SlopeEstimator,
    detector: OveruseDetector,
    /// Acknowledged (arrival on the viewer's clock in µs, bytes) in the rate window, in report
    /// order: 16 bytes an entry, a few hundred entries at 2.5 Mbit/s.
    received: std::collections::VecDeque<(u64, u32)>,
    received_bytes: u64,
    target_bps: f64,
    max_bps: f64,
    last_change: Option<Instant>,
    /// The received rate at the last decrease: near it, growth is additive.
    ceiling_bps: Option<f64>,
    average_loss: Option<f64>,
    remb_bps: Option<f64>,
    twcc_seen: bool,
    probe: Option<Probe>,
    probe_result: Option<bool>,
    last_loss_cut: Option<Instant>,
    usage: Usage,
}

impl Estimator {
    pub fn new(max_bps: f64) -> Self {
        Self {
            ring: vec![None; SEND_LOG_SLOTS].into_boxed_slice(),
            epoch: None,
            next_id: 0,
            slope: SlopeEstimator::new(),
            detector: OveruseDetector::new(),
            // Both grow to what the viewer's rate needs (a few hundred entries at 2.5 Mbit/s) and
            // keep that: no allocation per report once there.
            received: std::collections::VecDeque::new(),
            received_bytes: 0,
            target_bps: INITIAL_BITRATE_BPS.min(max_bps),
            max_bps,
            last_change: None,
            ceiling_bps: None,
            average_loss: None,
            remb_bps: None,
            twcc_seen: false,
            probe: None,
            probe_result: None,
            last_loss_cut: None,
            usage: Usage::Normal,
        }
    }

    /// TWCC feedback has come: only it can judge a probe.
    pub fn twcc_seen(&self) -> bool {
        self.twcc_seen
    }

    /// The estimate, in bits per second.
    pub fn estimate_bps(&self) -> f64 {
        if self.twcc_seen {
            self.target_bps
        } else {
            self.remb_bps.unwrap_or(self.target_bps)
        }
    }

    /// The estimate has been cut for congestion (delay growth or loss) at least once: it is
    /// then a measure of the link, not just a start that has not grown yet.
    pub fn has_cut(&self) -> bool {
        self.ceiling_bps.is_some() || self.last_loss_cut.is_some()
    }

    /// What the delay signal says now.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The smoothed loss fraction, once feedback has come.
    pub fn average_loss(&self) -> Option<f64> {
        self.average_loss
    }

    /// Records a datagram leaving now; returns the transport-wide sequence number to put in its
    /// `transport-cc` header extension. No allocation.
    pub fn stamp(&mut self, now: Instant, size_bytes: usize) -> u16 {
        let id = self.next_id;
        self.next_id += 1;
        let probe = match &mut self.probe {
            Some(probe) if now < probe.ends => {
                probe.last_id = Some(id);
                true
            }
            _ => false,
        };
        let epoch = *self.epoch.get_or_insert(now);
        self.ring[id as usize % SEND_LOG_SLOTS] = Some(SentRecord {
            id: id as u32,
            departure_us: now.saturating_duration_since(epoch).as_micros() as u64,
            size: size_bytes.min(u16::MAX as usize) as u16,
            probe,
            acknowledged: false,
        });
        id as u16
    }

    /// Starts a probe cluster at `rate_bps`: the caller pads its sending up to that rate until
    /// [`Estimator::probe_active`] turns false. Returns false while another probe is pending.
    pub fn start_probe(&mut self, now: Instant, rate_bps: f64) -> bool {
        if self.probe.is_some() {
            return false;
        }
        self.probe = Some(Probe {
            rate_bps,
            first_id: self.next_id,
            last_id: None,
            ends: now + PROBE_DURATION,
            first_arrival: None,
            last_arrival: None,
            bytes_after_first: 0,
            overused: false,
        });
        true
    }

    /// The rate to pad up to now, while a probe cluster is being sent.
    pub fn probe_active(&self, now: Instant) -> Option<f64> {
        self.probe
            .filter(|probe| now < probe.ends)
            .map(|probe| probe.rate_bps)
    }

    /// Whether the last probe cluster lifted the estimate, once, after it is judged.
    pub fn take_probe_result(&mut self) -> Option<bool> {
        self.probe_result.take()
    }

    /// Takes a REMB from the viewer. Used as the estimate until TWCC feedback arrives.
    pub fn on_remb(&mut self, bitrate_bps: f64) {
        if bitrate_bps.is_finite() && bitrate_bps >= 0.0 {
            self.remb_bps = Some(bitrate_bps.clamp(MIN_BITRATE_BPS, self.max_bps));
        }
    }

    /// Takes one TWCC feedback packet from the viewer.
    pub fn on_twcc(
        &mut self,
        now: Instant,
        feedback: &TransportLayerCc,
    ) -> Result<(), FeedbackError> {
        let statuses: usize = feedback
            .packet_chunks
            .iter()
            .map(|chunk| match chunk {
                PacketStatusChunk::RunLengthChunk(run) => run.run_length as usize,
                PacketStatusChunk::StatusVectorChunk(vector) => vector.symbol_list.len(),
            })
            .sum();
        let statuses = statuses.min(feedback.packet_status_count as usize);
        if statuses > SEND_LOG_SLOTS {
            return Err(FeedbackError::TooManyStatuses(statuses));
        }
        self.twcc_seen = true;
        let mut reports = REPORTS.with(|r| std::mem::take(&mut *r.borrow_mut()));
        reports.clear();
        let mut arrival = TWCC_REFERENCE_TICK * feedback.reference_time;
        let mut deltas = feedback.recv_deltas.iter();
        let symbols = feedback.packet_chunks.iter().flat_map(|chunk| {
            let (run, vector) = match chunk {
                PacketStatusChunk::RunLengthChunk(run) => (
                    Some((run.packet_status_symbol, run.run_length as usize)),
                    None,
                ),
                PacketStatusChunk::StatusVectorChunk(vector) => (None, Some(&vector.symbol_list)),
            };
            run.into_iter()
                .flat_map(|(symbol, count)| std::iter::repeat_n(symbol, count))
                .chain(vector.into_iter().flatten().copied())
        });
        let mut missing_delta = false;
        for (index, symbol) in symbols.take(statuses).enumerate() {
            let sequence = feedback.base_sequence_number.wrapping_add(index as u16);
            let arrived = match symbol {
                SymbolTypeTcc::PacketNotReceived => None,
                SymbolTypeTcc::PacketReceivedSmallDelta
                | SymbolTypeTcc::PacketReceivedLargeDelta => {
                    let Some(delta) = deltas.next() else {
                        missing_delta = true;
                        break;
                    };
                    let delta = delta.delta;
                    let magnitude = TWCC_DELTA_UNIT * delta.unsigned_abs() as u32;
                    arrival = if delta < 0 {
                        arrival.saturating_sub(magnitude)
                    } else {
                        arrival + magnitude
                    };
                    Some(Some(arrival))
                }
                SymbolTypeTcc::PacketReceivedWithoutDelta => Some(None),
            };
            self.acknowledge(&mut reports, sequence, arrived);
        }
        if !missing_delta {
            self.apply_reports(now, &mut reports);
        }
        reports.clear();
        REPORTS.with(|r| *r.borrow_mut() = reports);
        if missing_delta {
            return Err(FeedbackError::MissingDeltas);
        }
        Ok(())
    }

    /// Pairs one reported packet with its record, if it is still in the ring and not reported.
    fn acknowledge(
        &mut self,
        reports: &mut Vec<PacketReport>,
        sequence: u16,
        arrived: Option<Option<Duration>>,
    ) {
        // The unwrapped id nearest the newest sent with these low 16 bits.
        let newest = self.next_id.wrapping_sub(1);
        let back = (newest as u16).wrapping_sub(sequence) as u64;
        if back >= self.next_id || back as usize >= SEND_LOG_SLOTS {
            return;
        }
        let id = newest - back;
        // Set by the first stamp: without it there is no record.
        let (Some(epoch), Some(record)) =
            (self.epoch, self.ring[id as usize % SEND_LOG_SLOTS].as_mut())
        else {
            return;
        };
        if record.id != id as u32 || record.acknowledged {
            return;
        }
        if arrived.is_some() {
            record.acknowledged = true;
        }
        let record = *record;
        if record.probe
            && let (Some(probe), Some(Some(at))) = (&mut self.probe, arrived)
        {
            if probe.first_arrival.is_none_or(|first| at < first) {
                probe.first_arrival = Some(at);
            } else {
                probe.bytes_after_first += record.size as u64;
            }
            probe.last_arrival = Some(probe.last_arrival.map_or(at, |last| last.max(at)));
        }
        reports.push(PacketReport {
            ssrc: 0,
            id,
            rtp_sequence_number: 0,
            is_twcc: true,
            twcc_sequence_number: sequence,
            size: record.size as usize,
            arrived: arrived.is_some(),
            departure: epoch + Duration::from_micros(record.departure_us),
            arrival: arrived.flatten(),
            ecn: Ecn::NotEct,
        });
    }

    fn apply_reports(&mut self, now: Instant, reports: &mut [PacketReport]) {
        if reports.is_empty() {
            return;
        }
        reports.sort_unstable_by_key(|report| report.id);
        let (mut lost, mut counted) = (0usize, 0usize);
        for report in reports.iter() {
            if let Some(arrival) = report.arrival {
                self.received
                    .push_back((arrival.as_micros() as u64, report.size as u32));
                self.received_bytes += report.size as u64;
            }
            // A probe overfills a link that cannot carry it on purpose; its losses say so
            // through the probe's own verdict, not through the loss-based cut.
            let probing = self.ring[report.id as usize % SEND_LOG_SLOTS]
                .is_some_and(|record| record.id == report.id as u32 && record.probe);
            if !probing {
                counted += 1;
                lost += usize::from(!report.arrived);
            }
            if report.arrival.is_some()
                && let Some(trend) = self.slope.accumulate(report)
            {
                self.usage = self.detector.update(trend.at, trend.estimate_ms);
                if self.usage == Usage::Over
                    && let Some(probe) = &mut self.probe
                {
                    probe.overused = true;
                }
            }
        }
        let sample = if counted == 0 {
            self.average_loss.unwrap_or(0.0)
        } else {
            lost as f64 / counted as f64
        };
        let average = self
            .average_loss
            .map_or(sample, |previous| 0.8 * previous + 0.2 * sample);
        self.average_loss = Some(average);
        let newest = self.received.iter().map(|(at, _)| *at).max();
        while let (Some(&(at, size)), Some(newest)) = (self.received.front(), newest) {
            if Duration::from_micros(newest.saturating_sub(at)) <= RATE_WINDOW {
                break;
            }
            self.received.pop_front();
            self.received_bytes -= size as u64;
        }
        let received_bps = self.received_rate_bps();
        self.control(now, received_bps, average.min(sample));
        self.finish_probe(now);
    }

    /// What arrived over the window, measured on the viewer's clock: bytes after the first
    /// arrival over the time since it. `None` until the window spans enough time to say.
    fn received_rate_bps(&self) -> Option<f64> {
        let (first_at, first_size) = *self.received.front()?;
        let last_at = self.received.iter().map(|(at, _)| *at).max()?;
        let span = Duration::from_micros(last_at.saturating_sub(first_at));
        (span >= RATE_WINDOW / 4)
            .then(|| (self.received_bytes - first_size as u64) as f64 * 8.0 / span.as_secs_f64())
    }

    /// The AIMD step: down to a fraction of what arrives on congestion, up while the path is
    /// quiet, never far above what arrives.
    fn control(&mut self, now: Instant, received_bps: Option<f64>, loss: f64) {
        let since = self.last_change.map_or(Duration::from_millis(200), |last| {
            now.saturating_duration_since(last)
        });
        match self.usage {
            Usage::Over => {
                if let Some(received) = received_bps
                    && since >= Duration::from_millis(100)
                {
                    self.target_bps = self.target_bps.min(received * DECREASE_FACTOR);
                    self.ceiling_bps = Some(received);
                    self.last_change = Some(now);
                }
            }
            Usage::Under => {}
            Usage::Normal => {
                if since >= Duration::from_millis(100) {
                    let near_ceiling = self
                        .ceiling_bps
                        .is_some_and(|ceiling| self.target_bps > ceiling * 0.85);
                    let increased = if near_ceiling {
                        self.target_bps + 12_000.0 * since.as_secs_f64() / 0.2
                    } else {
                        self.target_bps * INCREASE_PER_SECOND.powf(since.as_secs_f64().min(1.0))
                    };
                    // The cap stops growth past what arrives; it never lowers an estimate a
                    // probe has proven.
                    let cap =
                        received_bps.map_or(f64::INFINITY, |received| received * RECEIVED_RATE_CAP);
                    self.target_bps = self.target_bps.max(increased.min(cap));
                    self.last_change = Some(now);
                }
            }
        }
        // Loss cuts in proportion, once per interval, but never below what the path delivers:
        // sending far above a link's rate loses most packets, and that fraction measures the
        // overshoot, not the link.
        if loss > HIGH_LOSS
            && self
                .last_loss_cut
                .is_none_or(|last| now.saturating_duration_since(last) >= LOSS_INTERVAL)
        {
            let floor = received_bps.map_or(MIN_BITRATE_BPS, |received| received * DECREASE_FACTOR);
            // Under sustained loss the path carries what arrives and no more. Without this bound,
            // an estimate grown on a wider link before it narrowed comes down a few per cent per
            // cut, and the viewer loses packets for seconds: a tail-drop queue a little short of
            // the sending rate shows loss and little delay growth.
            let cut = (self.target_bps * (1.0 - 0.5 * loss))
                .max(floor)
                .min(received_bps.unwrap_or(f64::INFINITY));
            self.target_bps = self.target_bps.min(cut);
            self.last_loss_cut = Some(now);
            self.last_change = Some(now);
        }
        self.target_bps = self.target_bps.clamp(MIN_BITRATE_BPS, self.max_bps);
    }

    /// Once a probe's feedback is in: a cluster that arrived at about the probed rate without
    /// delay growth lifts the estimate to the rate the receiver saw.
    fn finish_probe(&mut self, now: Instant) {
        let Some(probe) = self.probe else {
            return;
        };
        if now < probe.ends {
            return;
        }
        let complete = probe.last_id.is_some_and(|last| {
            self.ring[last as usize % SEND_LOG_SLOTS]
                .is_some_and(|record| record.id != last as u32 || record.acknowledged)
        });
        let timed_out = now >= probe.ends + Duration::from_secs(1);
        if !complete && !timed_out {
            return;
        }
        self.probe = None;
        let measured = self.probe_rate_measured(&probe);
        let success = measured.is_some_and(|measured| measured >= probe.rate_bps * PROBE_SUCCESS);
        if let (true, Some(measured)) = (success, measured) {
            self.target_bps = self
                .target_bps
                .max(measured.min(probe.rate_bps))
                .min(self.max_bps);
            self.ceiling_bps = None;
            self.last_change = Some(now);
        }
        self.probe_result = Some(success);
    }

    /// The rate a probe cluster arrived at, unless it caused congestion or too little of it
    /// arrived to say.
    fn probe_rate_measured(&self, probe: &Probe) -> Option<f64> {
        if probe.overused || probe.last_id.is_none_or(|last| last < probe.first_id) {
            return None;
        }
        let span = probe.last_arrival?.saturating_sub(probe.first_arrival?);
        (span >= PROBE_DURATION / 3)
            .then(|| probe.bytes_after_first as f64 * 8.0 / span.as_secs_f64())
    }
}

/// The viewer's own ceiling on quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preference {
    #[default]
    Auto,
    High,
    Medium,
    Low,
}

/// Why the layer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchReason {
    Bandwidth,
    Preference,
    Publisher,
}

/// A change of layer: `None` is audio only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub layer: Option<usize>,
    pub reason: SwitchReason,
}

/// How long the estimate must stay below the current layer before stepping down.
pub const DOWN_HOLD: Duration = Duration::from_secs(1);
/// How long the estimate must cover the next layer before stepping up, once congestion has been
/// seen on this link.
pub const UP_HOLD: Duration = Duration::from_secs(5);
/// The same before any congestion: right after joining, the viewer should reach its layer fast.
pub const FIRST_UP_HOLD: Duration = Duration::from_millis(500);
/// A layer fits when the estimate covers its bitrate times this (room for audio and repairs).
pub const HEADROOM: f64 = 1.15;
/// Between two probes; doubled after each failed one, up to [`MAX_PROBE_INTERVAL`].
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait between probes of a link that keeps failing them.
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(8);
/// After a failed probe, the estimate alone does not move the viewer up to the layer it
/// tested for at least this long, and not before the next probe's verdict.
pub const FAILED_PROBE_HOLD: Duration = Duration::from_secs(4);
/// From a probe's start to its verdict: the cluster, then the feedback on its last packet.
const PROBE_VERDICT_WAIT: Duration = Duration::from_secs(1);
/// The longest a layer the viewer fell from for congestion waits before the estimate alone
/// takes it up there again (a successful probe of it ends the wait).
pub const MAX_FALL_HOLD: Duration = Duration::from_secs(60);
/// A viewer leaves the lowest layer (for audio only) when the estimate falls under its bitrate
/// times this: well under one cut of the estimate (0.85), so a single spurious cut never stops
/// a viewer's video.
pub const LOWEST_LAYER_FLOOR: f64 = 0.7;
/// A probe goes this far above the layer it tests, so its result covers the layer with room.
pub const PROBE_OVERSHOOT: f64 = 1.2;

/// Chooses a viewer's simulcast layer from its estimate. Layers are indexed from the lowest.
#[derive(Debug, Clone)]
pub struct LayerChooser {
    bitrates_bps: Vec<f64>,
    current: Option<usize>,
    preference: Preference,
    below_since: Option<Instant>,
    above_since: Option<Instant>,
    congested_once: bool,
    last_probe: Option<Instant>,
    failed_probes: u32,
    /// The layer the last probe tested.
    probed_layer: Option<usize>,
    /// The layer a viewer starts on.
    start: usize,
    /// A probe of this layer failed, then: the viewer is not moved up to it for
    /// [`FAILED_PROBE_HOLD`] (see [`LayerChooser::probe_finished`]).
    failed_layer: Option<(usize, Instant)>,
    /// How long `failed_layer` is held: after a failed probe, until the next probe's verdict
    /// (at least [`FAILED_PROBE_HOLD`]); after a fall from the layer for congestion, [`UP_HOLD`]
    /// doubled for each earlier fall, up to [`MAX_FALL_HOLD`].
    failed_hold: Duration,
    /// Falls for congestion so far.
    falls: u32,
    /// See [`LayerChooser::set_down_only`].
    down_only: u64,
    /// See [`LayerChooser::allow_audio_only`].
    audio_only_allowed: bool,
    /// The layer the last probe proved the link carries: the viewer may climb to it without
    /// waiting for the estimate to hold there.
    proven: Option<usize>,
}

impl LayerChooser {
    /// `bitrates_bps` from the lowest layer to the highest. The viewer starts on the lowest, the
    /// fastest to start and the one every link is likeliest to carry.
    pub fn new(bitrates_bps: Vec<f64>) -> Self {
        let current = (!bitrates_bps.is_empty()).then_some(0);
        Self {
            bitrates_bps,
            current,
            preference: Preference::Auto,
            below_since: None,
            above_since: None,
            congested_once: false,
            last_probe: None,
            failed_probes: 0,
            probed_layer: None,
            failed_layer: None,
            failed_hold: FAILED_PROBE_HOLD,
            falls: 0,
            down_only: 0,
            audio_only_allowed: true,
            start: 0,
            proven: None,
        }
    }

    pub fn current(&self) -> Option<usize> {
        self.current
    }

    fn ceiling(&self) -> Option<usize> {
        let top = self.bitrates_bps.len().checked_sub(1)?;
        Some(match self.preference {
            Preference::Auto | Preference::High => top,
            Preference::Medium => top.min(1),
            Preference::Low => 0,
        })
    }

    /// The viewer asked for another ceiling. Applies at once when it lowers the layer; a higher
    /// ceiling is reached through the estimate like any step up.
    pub fn set_preference(&mut self, preference: Preference) -> Option<Switch> {
        self.preference = preference;
        let ceiling = self.ceiling()?;
        if self.current.is_some_and(|current| current > ceiling) {
            self.current = Some(ceiling);
            self.above_since = None;
            return Some(Switch {
                layer: self.current,
                reason: SwitchReason::Preference,
            });
        }
        None
    }

    /// Layers (bit i: layer i) the viewer may step down to but not climb to: see
    /// [`LayerChooser::set_down_only`].
    fn down_only(&self, layer: usize) -> bool {
        layer < 64 && self.down_only & (1 << layer) != 0
    }

    /// Whether the estimate may take the viewer below the lowest layer, to audio only (on by
    /// default). An estimate that has not yet been measured against the link (it starts low
    /// and grows with what arrives) must not stop a viewer's video.
    pub fn allow_audio_only(&mut self, allowed: bool) {
        self.audio_only_allowed = allowed;
    }

    /// Marks layers the viewer only steps down to, never climbs to (a lower frame rate of a
    /// bigger picture is a way down from that picture, not a way up from a smaller one).
    pub fn set_down_only(&mut self, mask: u64) {
        self.down_only = mask;
    }

    /// The next layer a climb may take.
    fn next_up(&self) -> usize {
        let from = self.current.map_or(0, |current| current + 1);
        (from..self.bitrates_bps.len())
            .find(|&l| !self.down_only(l))
            .unwrap_or(from)
    }

    /// Puts the chooser on `layer` as the caller knows it: where layers were added or removed
    /// below the current one, its index moves while the layer it stands for does not.
    pub fn relocate(&mut self, layer: usize) {
        if let Some(current) = self.current {
            // A probe's verdict names an index: it moves with the rungs.
            self.proven = self.proven.and_then(|p| (p + layer).checked_sub(current));
            self.current = Some(layer);
        }
    }

    /// The layer a viewer starts on (the lowest unless set; a ladder of rungs may start above
    /// its cheapest one).
    pub fn set_start(&mut self, index: usize) {
        self.start = index;
    }

    /// The publisher's layers changed (one stopped or came back).
    pub fn set_layers(&mut self, bitrates_bps: Vec<f64>) -> Option<Switch> {
        self.bitrates_bps = bitrates_bps;
        self.clamp_to_layers()
    }

    /// [`LayerChooser::set_layers`] from a slice, into the chooser's own storage (no
    /// allocation once it has held as many).
    pub fn set_layers_from(&mut self, bitrates_bps: &[f64]) -> Option<Switch> {
        self.bitrates_bps.clear();
        self.bitrates_bps.extend_from_slice(bitrates_bps);
        self.clamp_to_layers()
    }

    fn clamp_to_layers(&mut self) -> Option<Switch> {
        let ceiling = self.ceiling();
        let clamped = match (self.current, ceiling) {
            (Some(current), Some(ceiling)) => Some(current.min(ceiling)),
            (None, Some(ceiling)) if !self.congested_once => Some(self.start.min(ceiling)),
            (current, Some(_)) => current,
            (_, None) => None,
        };
        (clamped != self.current).then(|| {
            self.current = clamped;
            Switch {
                layer: clamped,
                reason: SwitchReason::Publisher,
            }
        })
    }

    /// The rate to probe at now, if the next layer up is worth trying.
    pub fn probe_rate(&mut self, now: Instant, estimate_bps: f64) -> Option<f64> {
        let next = self.next_up();
        if next > self.ceiling()? {
            return None;
        }
        let wanted = self.bitrates_bps[next] * HEADROOM;
        if !wanted.is_finite() {
            // A layer whose rate is unknown (not being sent): nothing to probe for.
            return None;
        }
        if (estimate_bps >= wanted && !self.held(now, next)) || !self.probe_due(now) {
            return None;
        }
        self.last_probe = Some(now);
        self.probed_layer = Some(next);
        Some(wanted * PROBE_OVERSHOOT)
    }

    /// The wait between probes is over: [`PROBE_INTERVAL`], doubled after each failure.
    fn probe_due(&self, now: Instant) -> bool {
        self.last_probe
            .is_none_or(|last| now.saturating_duration_since(last) >= self.probe_interval())
    }

    fn probe_interval(&self) -> Duration {
        (PROBE_INTERVAL * 2u32.saturating_pow(self.failed_probes.min(8))).min(MAX_PROBE_INTERVAL)
    }

    /// How the last probe went: failures space the next ones out, a success resets that. A
    /// failed probe is the link's own answer about the layer it tested: until the next probe
    /// says otherwise, an estimate that creeps above that layer does not move the viewer up to
    /// it (where the estimate runs ahead of the link, moving up only to fall back costs the
    /// viewer a burst of loss and repairs each time).
    pub fn probe_finished(&mut self, now: Instant, success: bool) {
        self.failed_probes = if success { 0 } else { self.failed_probes + 1 };
        if success {
            self.failed_layer = None;
            self.proven = self.probed_layer;
            return;
        }
        self.proven = None;
        let Some(layer) = self.probed_layer else {
            return;
        };
        // Held until the next probe of it has had its say, so an estimate that creeps up
        // between probes (it may grow to one and a half times what arrives, padding included)
        // does not overrule this one. A probe's failure never shortens a longer hold of the
        // same layer after a fall.
        let hold = FAILED_PROBE_HOLD.max(self.probe_interval() + PROBE_VERDICT_WAIT);
        let same = self.failed_layer.is_some_and(|(l, _)| l == layer);
        self.failed_hold = if same {
            self.failed_hold.max(hold)
        } else {
            hold
        };
        self.failed_layer = Some((layer, now));
    }

    /// `layer` failed (a probe of it, or the viewer fell from it) less than its hold ago.
    fn held(&self, now: Instant, layer: usize) -> bool {
        self.failed_layer.is_some_and(|(failed, at)| {
            failed == layer && now.saturating_duration_since(at) < self.failed_hold
        })
    }

    /// Folds in the estimate now; returns the switch to make, if any.
    pub fn update(&mut self, now: Instant, estimate_bps: f64) -> Option<Switch> {
        let ceiling = self.ceiling()?;
        let fits = |layer: usize| estimate_bps >= self.bitrates_bps[layer] * HEADROOM;
        // The lowest layer is left for audio only when the estimate is clearly short of it: an
        // estimate runs a little under what a link carries, and no video is a big step down.
        let carried = |layer: usize| {
            let floor = if layer == 0 { LOWEST_LAYER_FLOOR } else { 1.0 };
            estimate_bps >= self.bitrates_bps[layer] * floor
        };
        let down = match self.current {
            Some(0) if !self.audio_only_allowed => false,
            Some(current) => !carried(current),
            None => false,
        };
        if down {
            self.above_since = None;
            let since = *self.below_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= DOWN_HOLD {
                self.congested_once = true;
                self.below_since = None;
                let current = self.current.expect("down implies a layer");
                // The estimate ran ahead of the link (it grows to one and a half times what
                // arrives before the link's queue shows): the layer it fell from waits longer
                // after each fall, so a link a little short of a layer is not tried again
                // every few seconds at the cost of a burst of loss each time.
                self.failed_layer = Some((current, now));
                self.proven = None;
                self.failed_hold = (UP_HOLD * 2u32.pow(self.falls.min(6))).min(MAX_FALL_HOLD);
                self.falls += 1;
                let floor = (!self.audio_only_allowed).then_some(0);
                let target = (0..current).rev().find(|&layer| carried(layer)).or(floor);
                self.current = target;
                return Some(Switch {
                    layer: target,
                    reason: SwitchReason::Bandwidth,
                });
            }
            return None;
        }
        self.below_since = None;
        let next = self.next_up();
        if next > ceiling || !fits(next) || self.held(now, next) {
            self.above_since = None;
            return None;
        }
        let since = *self.above_since.get_or_insert(now);
        let hold = if self.proven == Some(next) {
            // A probe of this layer just arrived whole: the link's own answer, no need to wait
            // for the estimate to say it again.
            Duration::ZERO
        } else if self.congested_once {
            UP_HOLD
        } else {
            FIRST_UP_HOLD
        };
        if now.saturating_duration_since(since) >= hold {
            self.above_since = None;
            self.proven = None;
            // Up to the highest layer that has fitted, not one step at a time: on a ladder of
            // frame rates and sizes one step is often a small one.
            let top = (next..=ceiling)
                .filter(|&layer| !self.down_only(layer))
                .take_while(|&layer| fits(layer) && !self.held(now, layer))
                .last()
                .unwrap_or(next);
            self.current = Some(top);
            return Some(Switch {
                layer: self.current,
                reason: SwitchReason::Bandwidth,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        RecvDelta, RunLengthChunk, StatusChunkTypeTcc,
    };

    fn run_of(symbol: SymbolTypeTcc, run_length: u16) -> PacketStatusChunk {
        PacketStatusChunk::RunLengthChunk(RunLengthChunk {
            type_tcc: StatusChunkTypeTcc::RunLengthChunk,
            packet_status_symbol: symbol,
            run_length,
        })
    }

    fn feedback(base: u16, chunks: Vec<PacketStatusChunk>, deltas: usize) -> TransportLayerCc {
        TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: base,
            packet_status_count: u16::MAX,
            reference_time: 1,
            fb_pkt_count: 0,
            packet_chunks: chunks,
            recv_deltas: (0..deltas)
                .map(|_| RecvDelta {
                    type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                    delta: 1_000,
                })
                .collect(),
        }
    }

    #[test]
    fn feedback_claiming_more_packets_than_can_be_in_flight_is_refused_without_expanding_it() {
        let mut estimator = Estimator::new(10e6);
        let huge = feedback(
            0,
            vec![run_of(SymbolTypeTcc::PacketNotReceived, 8191); 8],
            0,
        );
        assert_eq!(
            estimator.on_twcc(Instant::now(), &huge),
            Err(FeedbackError::TooManyStatuses(8 * 8191))
        );
        assert_eq!(estimator.estimate_bps(), INITIAL_BITRATE_BPS);
    }

    #[test]
    fn feedback_with_fewer_deltas_than_arrivals_is_refused() {
        let mut estimator = Estimator::new(10e6);
        let now = Instant::now();
        for _ in 0..10 {
            estimator.stamp(now, 1_200);
        }
        let short = feedback(
            0,
            vec![run_of(SymbolTypeTcc::PacketReceivedSmallDelta, 10)],
            3,
        );
        assert_eq!(
            estimator.on_twcc(now, &short),
            Err(FeedbackError::MissingDeltas)
        );
    }

    #[test]
    fn feedback_about_packets_never_sent_changes_nothing() {
        let mut estimator = Estimator::new(10e6);
        let now = Instant::now();
        for _ in 0..10 {
            estimator.stamp(now, 1_200);
        }
        // Numbers 1,000..1,100 were never stamped: nothing to pair, no loss counted.
        let stranger = feedback(
            1_000,
            vec![run_of(SymbolTypeTcc::PacketNotReceived, 100)],
            0,
        );
        estimator
            .on_twcc(now + Duration::from_millis(100), &stranger)
            .unwrap();
        assert_eq!(estimator.average_loss(), None);
        assert_eq!(estimator.estimate_bps(), INITIAL_BITRATE_BPS);
    }

    #[test]
    fn sustained_loss_brings_an_estimate_grown_on_a_wider_link_down_to_what_arrives_at_once() {
        // The estimate grew on a wide link; the link narrows to a tail-drop queue a little short
        // of the sending rate: every eighth packet lost, arrivals evenly spaced (no delay growth).
        let mut estimator = Estimator::new(10e6);
        estimator.target_bps = 4e6;
        let spacing = Duration::from_millis(16);
        let mut sent_at = Instant::now();
        for report in 0..16u32 {
            for _ in 0..4 {
                estimator.stamp(sent_at, 1_200);
                sent_at += spacing;
            }
            // Four packets a report, one 64 ms reference tick apart; every other report has
            // its last packet lost.
            let lost = report % 2 == 1;
            let arrived = if lost { 3 } else { 4 };
            let mut chunks = vec![run_of(SymbolTypeTcc::PacketReceivedSmallDelta, arrived)];
            if lost {
                chunks.push(run_of(SymbolTypeTcc::PacketNotReceived, 1));
            }
            let fb = TransportLayerCc {
                base_sequence_number: (report * 4) as u16,
                packet_status_count: 4,
                reference_time: 1 + report,
                packet_chunks: chunks,
                recv_deltas: (0..arrived)
                    .map(|i| RecvDelta {
                        type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                        delta: if i == 0 { 0 } else { 16_000 },
                    })
                    .collect(),
                ..feedback(0, vec![], 0)
            };
            estimator.on_twcc(sent_at, &fb).unwrap();
        }
        // About 525 kbit/s arrives (600 sent); a cut of a few per cent each 300 ms from 4 Mbit/s
        // would still be above 2 Mbit/s after these 16 reports.
        let estimate = estimator.estimate_bps();
        assert!(
            estimate <= 600e3,
            "estimate {estimate}, loss {:?}",
            estimator.average_loss()
        );
        assert!(estimate >= 300e3, "estimate {estimate}");
    }

    #[test]
    fn the_same_feedback_twice_is_counted_once() {
        let mut estimator = Estimator::new(10e6);
        let now = Instant::now();
        for _ in 0..10 {
            estimator.stamp(now, 1_200);
        }
        let lost = feedback(0, vec![run_of(SymbolTypeTcc::PacketNotReceived, 10)], 0);
        estimator.on_twcc(now, &lost).unwrap();
        let first = estimator.average_loss();
        assert_eq!(first, Some(1.0));
        let arrived = feedback(
            0,
            vec![run_of(SymbolTypeTcc::PacketReceivedSmallDelta, 10)],
            10,
        );
        estimator.on_twcc(now, &arrived).unwrap();
        estimator.on_twcc(now, &arrived).unwrap();
        // The late arrivals count once (loss falls to 0.8), the repeat adds nothing.
        assert_eq!(estimator.average_loss(), Some(0.8));
    }

    #[test]
    fn remb_is_the_estimate_until_twcc_feedback_arrives() {
        let mut estimator = Estimator::new(10e6);
        estimator.on_remb(1_234_000.0);
        assert_eq!(estimator.estimate_bps(), 1_234_000.0);
        estimator.on_remb(f64::NAN);
        assert_eq!(estimator.estimate_bps(), 1_234_000.0);
    }

    #[test]
    fn a_lower_preference_applies_at_once_and_a_higher_one_waits_for_the_estimate() {
        let now = Instant::now();
        let mut chooser = LayerChooser::new(vec![150e3, 500e3, 2.5e6]);
        for step in 0..10 {
            chooser.update(now + Duration::from_millis(100 * step), 5e6);
        }
        // Up to the highest layer the estimate fits, in one step.
        assert_eq!(chooser.current(), Some(2));
        assert_eq!(
            chooser.set_preference(Preference::Low),
            Some(Switch {
                layer: Some(0),
                reason: SwitchReason::Preference
            })
        );
        assert_eq!(chooser.set_preference(Preference::High), None);
        assert_eq!(chooser.current(), Some(0));
    }

    #[test]
    fn a_probe_that_arrives_whole_lets_the_viewer_climb_at_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut chooser = LayerChooser::new(vec![150e3, 500e3]);
        chooser.update(at(0), 1e6);
        chooser.update(at(600), 1e6);
        assert_eq!(chooser.current(), Some(1));
        // Congestion: down to the lowest layer.
        chooser.update(at(1_000), 200e3);
        chooser.update(at(2_100), 200e3);
        assert_eq!(chooser.current(), Some(0));
        // A probe of the top layer fails; the estimate then creeps above the layer, and the
        // viewer stays down: the failed probe holds the layer, then the estimate must hold 5 s.
        let rate = chooser.probe_rate(at(8_000), 200e3).expect("a probe");
        assert!(rate >= 500e3 * HEADROOM, "{rate}");
        chooser.probe_finished(at(8_500), false);
        for ms in (9_000..12_000).step_by(100) {
            chooser.update(at(ms), 700e3);
        }
        assert_eq!(chooser.current(), Some(0), "climbed before the next probe");
        // The next probe (4 s after the first, the interval doubled) arrives whole: up at once,
        // without the 5 s an estimate must otherwise hold after congestion.
        assert!(
            chooser.probe_rate(at(11_900), 700e3).is_none(),
            "the next probe is not due"
        );
        assert!(chooser.probe_rate(at(12_000), 700e3).is_some());
        chooser.probe_finished(at(12_900), true);
        assert_eq!(
            chooser.update(at(13_000), 700e3),
            Some(Switch {
                layer: Some(1),
                reason: SwitchReason::Bandwidth
            })
        );
    }

    #[test]
    fn a_publisher_that_drops_its_top_layer_moves_its_viewers_down() {
        let mut chooser = LayerChooser::new(vec![150e3, 500e3, 2.5e6]);
        let now = Instant::now();
        for step in 0..30 {
            chooser.update(now + Duration::from_millis(100 * step), 5e6);
        }
        assert_eq!(chooser.current(), Some(2));
        assert_eq!(
            chooser.set_layers(vec![150e3, 500e3]),
            Some(Switch {
                layer: Some(1),
                reason: SwitchReason::Publisher
            })
        );
    }
}
