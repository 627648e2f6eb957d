//! The bandwidth estimator and the layer chooser against simulated shaped links.
//!
//! Each link is a token bucket (a `tc tbf` qdisc in miniature): packets are serialised at the
//! link's rate behind a queue of at most 100 ms, anything beyond is dropped, and 20 ms of
//! propagation follow. The receiver answers every 100 ms with TWCC feedback built the way a
//! browser builds it and sent through the real wire format (marshalled, then unmarshalled by
//! rtc-rtcp, so deltas are quantised to 250 µs). The sender sends the chosen layer at its
//! bitrate, audio beside it, and padding while a probe runs. All time is simulated.
//!
//! Convergence times and the longest video gaps are printed (`-- --nocapture`); the assertions
//! are about which layer is reached by when, in simulated time.

use golive_sfu::bwe::{Estimator, LayerChooser, Preference, Switch};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    TransportLayerCc,
};
use rtc::shared::marshal::{Marshal, Unmarshal};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const LAYERS_BPS: [f64; 3] = [150_000.0, 500_000.0, 2_500_000.0];
const AUDIO_BPS: f64 = 40_000.0;
const VIDEO_PACKET: usize = 1_200;
const AUDIO_PACKET: usize = 100;
/// An RTP padding-only packet carries at most 255 bytes of padding.
const PADDING_PACKET: usize = 255;
const PROPAGATION: Duration = Duration::from_millis(20);
const QUEUE_LIMIT: Duration = Duration::from_millis(100);
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);
const TICK: Duration = Duration::from_millis(1);

/// The link's capacity over time: (from, bits per second).
type Schedule = Vec<(Duration, f64)>;

struct Link {
    schedule: Schedule,
    free_at: Duration,
}

impl Link {
    fn rate_at(&self, t: Duration) -> f64 {
        self.schedule
            .iter()
            .rev()
            .find(|(from, _)| *from <= t)
            .map(|(_, rate)| *rate)
            .expect("schedule starts at zero")
    }

    /// When a packet sent at `t` arrives, or `None` when the queue drops it.
    fn send(&mut self, t: Duration, size: usize) -> Option<Duration> {
        let rate = self.rate_at(t);
        let start = self.free_at.max(t);
        if start - t > QUEUE_LIMIT {
            return None;
        }
        self.free_at = start + Duration::from_secs_f64(size as f64 * 8.0 / rate);
        Some(self.free_at + PROPAGATION)
    }
}

/// What the receiver has seen since its last feedback.
#[derive(Default)]
struct Receiver {
    arrivals: Vec<(u16, Duration)>,
    feedback_count: u8,
    next_base: Option<u16>,
}

impl Receiver {
    /// Builds the TWCC feedback a browser would send: every number from the first unreported to
    /// the highest received, in order, lost ones marked.
    fn feedback(&mut self) -> Option<TransportLayerCc> {
        if self.arrivals.is_empty() {
            return None;
        }
        let mut arrivals = std::mem::take(&mut self.arrivals);
        let base = self.next_base.unwrap_or(arrivals[0].0);
        arrivals.sort_by_key(|(seq, _)| seq.wrapping_sub(base));
        let highest = arrivals.last().expect("not empty").0;
        let count = highest.wrapping_sub(base) as usize + 1;
        let reference_ticks = (arrivals[0].1.as_micros() / 64_000) as u32;
        let mut last_us = reference_ticks as i64 * 64_000;
        let mut chunks = Vec::new();
        let mut deltas = Vec::new();
        let mut next = arrivals.iter().peekable();
        for offset in 0..count {
            let seq = base.wrapping_add(offset as u16);
            let symbol = match next.peek() {
                Some((s, at)) if *s == seq => {
                    // Quantised to the wire's 250 µs ticks, as a browser does.
                    let at_us = (at.as_micros() as i64 / 250) * 250;
                    let delta = at_us - last_us;
                    last_us = at_us;
                    next.next();
                    let symbol = if (0..=63_750).contains(&delta) {
                        SymbolTypeTcc::PacketReceivedSmallDelta
                    } else {
                        SymbolTypeTcc::PacketReceivedLargeDelta
                    };
                    deltas.push(RecvDelta {
                        type_tcc_packet: symbol,
                        delta,
                    });
                    symbol
                }
                _ => SymbolTypeTcc::PacketNotReceived,
            };
            chunks.push(PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: symbol,
                run_length: 1,
            }));
        }
        self.next_base = Some(highest.wrapping_add(1));
        self.feedback_count = self.feedback_count.wrapping_add(1);
        let feedback = TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: base,
            packet_status_count: count as u16,
            reference_time: reference_ticks,
            fb_pkt_count: self.feedback_count,
            packet_chunks: chunks,
            recv_deltas: deltas,
        };
        let wire = feedback.marshal().expect("feedback marshals");
        Some(TransportLayerCc::unmarshal(&mut wire.clone()).expect("feedback parses"))
    }
}

struct Outcome {
    /// (simulated time, switch) in order.
    switches: Vec<(Duration, Switch)>,
    /// The layer being sent at each whole second.
    layer_at_second: Vec<Option<usize>>,
    /// The estimate at each whole second, in kbit/s.
    estimate_at_second: Vec<u64>,
    /// The longest gap between two video packets at the receiver after the first second.
    longest_video_gap: Duration,
    video_loss: f64,
}

fn run(schedule: Schedule, preference: Preference, seconds: u64) -> Outcome {
    let start = Instant::now();
    let mut link = Link {
        schedule,
        free_at: Duration::ZERO,
    };
    let mut estimator = Estimator::new(10_000_000.0);
    let mut chooser = LayerChooser::new(LAYERS_BPS.to_vec());
    chooser.set_preference(preference);
    let mut receiver = Receiver::default();
    let mut in_flight: VecDeque<(Duration, u16, bool)> = VecDeque::new();
    let mut feedback_in_flight: VecDeque<(Duration, TransportLayerCc)> = VecDeque::new();
    let mut video_credit = 0.0f64;
    let mut audio_credit = 0.0f64;
    let mut padding_credit = 0.0f64;
    let mut next_feedback = FEEDBACK_INTERVAL;
    let mut outcome = Outcome {
        switches: Vec::new(),
        layer_at_second: Vec::new(),
        estimate_at_second: Vec::new(),
        longest_video_gap: Duration::ZERO,
        video_loss: 0.0,
    };
    let (mut video_sent, mut video_arrived) = (0u64, 0u64);
    let mut last_video_arrival: Option<Duration> = None;
    let mut t = Duration::ZERO;
    let end = Duration::from_secs(seconds);
    while t < end {
        let now = start + t;
        if t.as_millis().is_multiple_of(1000) {
            outcome.layer_at_second.push(chooser.current());
            outcome
                .estimate_at_second
                .push((estimator.estimate_bps() / 1000.0) as u64);
        }
        // Send this millisecond's share.
        let video_bps = chooser.current().map_or(0.0, |layer| LAYERS_BPS[layer]);
        video_credit += video_bps * TICK.as_secs_f64() / 8.0;
        audio_credit += AUDIO_BPS * TICK.as_secs_f64() / 8.0;
        if let Some(probe_bps) = estimator.probe_active(now) {
            let padding_bps = (probe_bps - video_bps - AUDIO_BPS).max(0.0);
            padding_credit += padding_bps * TICK.as_secs_f64() / 8.0;
        } else {
            padding_credit = 0.0;
        }
        let mut send = |size: usize, video: bool, estimator: &mut Estimator| {
            let seq = estimator.stamp(now, size);
            if video {
                video_sent += 1;
            }
            if let Some(arrival) = link.send(t, size) {
                in_flight.push_back((arrival, seq, video));
            }
        };
        while video_credit >= VIDEO_PACKET as f64 {
            video_credit -= VIDEO_PACKET as f64;
            send(VIDEO_PACKET, true, &mut estimator);
        }
        while audio_credit >= AUDIO_PACKET as f64 {
            audio_credit -= AUDIO_PACKET as f64;
            send(AUDIO_PACKET, false, &mut estimator);
        }
        while padding_credit >= PADDING_PACKET as f64 {
            padding_credit -= PADDING_PACKET as f64;
            send(PADDING_PACKET, false, &mut estimator);
        }
        // Deliver what has arrived.
        while in_flight
            .front()
            .is_some_and(|(arrival, _, _)| *arrival <= t)
        {
            let (arrival, seq, video) = in_flight.pop_front().expect("peeked");
            receiver.arrivals.push((seq, arrival));
            if video {
                video_arrived += 1;
                if let Some(last) = last_video_arrival
                    && t > Duration::from_secs(1)
                {
                    outcome.longest_video_gap = outcome.longest_video_gap.max(arrival - last);
                }
                last_video_arrival = Some(arrival);
            }
        }
        if t >= next_feedback {
            next_feedback += FEEDBACK_INTERVAL;
            if let Some(feedback) = receiver.feedback() {
                feedback_in_flight.push_back((t + PROPAGATION, feedback));
            }
        }
        while feedback_in_flight.front().is_some_and(|(at, _)| *at <= t) {
            let (_, feedback) = feedback_in_flight.pop_front().expect("peeked");
            estimator
                .on_twcc(now, &feedback)
                .expect("well-formed feedback");
            if let Some(success) = estimator.take_probe_result() {
                chooser.probe_finished(now, success);
            }
            let estimate = estimator.estimate_bps();
            if let Some(switch) = chooser.update(now, estimate) {
                outcome.switches.push((t, switch));
            }
            if let Some(rate) = chooser.probe_rate(now, estimate) {
                estimator.start_probe(now, rate);
            }
        }
        t += TICK;
    }
    outcome.video_loss = 1.0 - video_arrived as f64 / video_sent.max(1) as f64;
    outcome
}

/// When the chooser last switched to `layer` and stayed there to the end, if it did.
fn settled_at(outcome: &Outcome, layer: Option<usize>) -> Option<Duration> {
    match outcome.switches.last() {
        Some((at, switch)) if switch.layer == layer => Some(*at),
        None if layer == Some(0) => Some(Duration::ZERO),
        _ => None,
    }
}

fn constant(bps: f64) -> Schedule {
    vec![(Duration::ZERO, bps)]
}

fn report(name: &str, outcome: &Outcome) {
    println!(
        "{name}: switches {:?}, layer per second {:?}, estimate per second (kbit/s) {:?}, longest video gap {:?}, video loss {:.2} %",
        outcome
            .switches
            .iter()
            .map(|(at, s)| (at.as_millis(), s.layer))
            .collect::<Vec<_>>(),
        outcome.layer_at_second,
        outcome.estimate_at_second,
        outcome.longest_video_gap,
        outcome.video_loss * 100.0
    );
}

#[test]
fn each_viewer_settles_on_the_layer_its_link_carries_within_five_seconds() {
    for (bps, layer) in [(200_000.0, 0usize), (800_000.0, 1), (5_000_000.0, 2)] {
        let outcome = run(constant(bps), Preference::Auto, 20);
        report(&format!("{} kbit/s link", bps / 1000.0), &outcome);
        let settled = settled_at(&outcome, Some(layer))
            .unwrap_or_else(|| panic!("a {bps} bit/s link did not settle on layer {layer}"));
        assert!(
            settled <= Duration::from_secs(5),
            "a {bps} bit/s link settled on layer {layer} only at {settled:?}"
        );
        assert!(
            outcome.longest_video_gap <= Duration::from_millis(500),
            "video stalled {:?} on a {bps} bit/s link",
            outcome.longest_video_gap
        );
    }
}

#[test]
fn a_link_that_falls_steps_down_within_two_seconds_and_comes_back_up() {
    let fall = Duration::from_secs(10);
    let recover = Duration::from_secs(20);
    let schedule = vec![
        (Duration::ZERO, 5_000_000.0),
        (fall, 500_000.0),
        (recover, 5_000_000.0),
    ];
    let outcome = run(schedule, Preference::Auto, 40);
    report("5 → 0.5 → 5 Mbit/s", &outcome);
    let top_before_fall = outcome.layer_at_second[fall.as_secs() as usize - 1];
    assert_eq!(top_before_fall, Some(2), "on the top layer before the fall");
    let down = outcome
        .switches
        .iter()
        .find(|(at, s)| *at >= fall && s.layer < Some(2))
        .map(|(at, _)| *at - fall)
        .expect("stepped down after the fall");
    println!("stepped down {down:?} after the fall");
    assert!(
        down <= Duration::from_secs(2),
        "stepped down only {down:?} after the fall"
    );
    let during = outcome.layer_at_second[recover.as_secs() as usize - 1];
    assert!(
        during.is_some_and(|layer| layer < 2),
        "below the top layer while the link carries 0.5 Mbit/s: {during:?}"
    );
    let up = outcome
        .switches
        .iter()
        .find(|(at, s)| *at >= recover && s.layer == Some(2))
        .map(|(at, _)| *at - recover)
        .expect("came back to the top layer after the link recovered");
    println!("back on the top layer {up:?} after the recovery");
    assert_eq!(outcome.layer_at_second.last(), Some(&Some(2)));
}

#[test]
fn a_viewer_who_prefers_low_stays_on_low_on_a_fast_link() {
    let outcome = run(constant(5_000_000.0), Preference::Low, 15);
    report("prefers low, 5 Mbit/s", &outcome);
    assert!(
        outcome.switches.is_empty(),
        "switched: {:?}",
        outcome.switches.len()
    );
    assert!(
        outcome
            .layer_at_second
            .iter()
            .all(|layer| *layer == Some(0))
    );
}

#[test]
fn a_link_below_the_lowest_layer_gets_audio_only_and_video_returns_when_it_can() {
    let schedule = vec![
        (Duration::ZERO, 100_000.0),
        (Duration::from_secs(15), 1_000_000.0),
    ];
    let outcome = run(schedule, Preference::Auto, 30);
    report("0.1 → 1 Mbit/s", &outcome);
    assert_eq!(
        outcome.layer_at_second[14], None,
        "audio only on a 100 kbit/s link"
    );
    assert!(
        outcome
            .layer_at_second
            .last()
            .is_some_and(|layer| layer.is_some()),
        "video came back"
    );
}
