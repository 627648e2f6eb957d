//! A viewer's adaptation to its link: the bandwidth estimate its feedback gives (TWCC, or REMB
//! where it offers no TWCC) and the simulcast layer that estimate allows.
//!
//! Every datagram of a viewer that negotiated TWCC is stamped with a transport-wide sequence
//! number, recorded in its [`Estimator`]; its feedback goes into that estimator; on the
//! worker's timers, every [`UPDATE_INTERVAL`], its [`LayerChooser`] turns the estimate and the
//! layers'
//! measured bitrates into the highest layer the link carries. That layer caps the one the
//! viewer's preference allows. A viewer that negotiated feedback starts on the lowest layer and
//! climbs as the estimate allows; one whose feedback never comes is treated, after
//! [`FEEDBACK_GRACE`], like a viewer without any: its preference alone decides.
//!
//! # Probing
//!
//! An estimate grows only with what is sent, and a viewer on a low layer sends little: grown
//! by its AIMD steps alone (at most 1.5 times the received rate, 8 % a second), an estimate
//! that fell on a congested link takes tens of seconds to cover the top layer again once the
//! link frees up. So while the estimate sits below the next layer the viewer is allowed, the
//! [`LayerChooser`] asks for a probe at about that layer's rate; the viewer's datagrams are
//! then topped up with padding to that rate for a short cluster
//! ([`crate::bwe::PROBE_DURATION`]), every padding packet stamped like media. When the
//! feedback shows the cluster arrived at the probed rate without delay growth, the estimate
//! jumps there and the viewer moves up to the layer at once; a failed probe spaces out the next
//! ones ([`crate::bwe::PROBE_INTERVAL`], doubling up to [`crate::bwe::MAX_PROBE_INTERVAL`]) and
//! keeps the viewer below the layer it tested until the next probe's verdict (at least
//! [`crate::bwe::FAILED_PROBE_HOLD`]): on a link that carries a little less than that layer, an
//! estimate creeping above it would otherwise move the viewer up only to lose packets and fall
//! back, again and again.
//!
//! Padding goes on the viewer's RTX stream (RFC 4588 §4: an RTX packet without an original
//! sequence number is padding), as libwebrtc sends it: receivers count it for their
//! transport-wide feedback and drop it, and the media stream's sequence numbers are
//! untouched. A viewer that negotiated no RTX is not probed: padding on its media SSRC would
//! take sequence numbers from the line its NACKs are answered by.

use std::time::{Duration, Instant};

use crate::bwe::{Estimator, FeedbackError, LayerChooser};
use crate::simulcast::{Allowance, Layer, Rung};
use crate::stream::Ladder;

/// The estimate never goes above this: more than any one broadcast needs.
pub const MAX_VIEWER_BITRATE_BPS: f64 = 20_000_000.0;
/// How often a viewer's layer choice is revisited. Feedback comes about every 100 ms.
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(100);
/// A viewer that negotiated feedback but sent none this long after its first packet is no
/// longer held to the estimate.
pub const FEEDBACK_GRACE: Duration = Duration::from_secs(3);
/// How often padding is topped up while a probe cluster is sent: 20 steps in a cluster.
pub const PADDING_INTERVAL: Duration = Duration::from_millis(5);
/// The padding one probe packet carries: libwebrtc's largest padding packet (RTP padding is at
/// most 255 bytes, its last byte the count).
pub const PADDING_PACKET_BYTES: usize = 224;
/// At most this many padding packets go out in one step (about 7 Mbit/s at
/// [`PADDING_INTERVAL`]), so a late timer does not turn into one burst.
const MAX_PADDING_PACKETS_PER_STEP: u64 = 20;

/// A probe cluster in flight: the padding rate that tops the viewer's sending up to the probed
/// rate, and the padding sent so far.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    started: Instant,
    padding_bps: f64,
    padding_bytes: u64,
}
/// The weight of the newest interval in the smoothed sending rate.
const SENT_RATE_WEIGHT: f64 = 0.3;

pub(crate) struct ViewerBwe {
    estimator: Estimator,
    chooser: LayerChooser,
    feedback_seen: bool,
    first_sent_at: Option<Instant>,
    next_update: Option<Instant>,
    /// Probes may be sent (TWCC feedback, an RTX stream for the padding, and probing on).
    probing: bool,
    cluster: Option<Cluster>,
    next_padding: Option<Instant>,
    /// Bytes stamped since the last update, and the smoothed sending rate they make: media
    /// goes in bursts (a keyframe is many packets at once), so padding is paced against this
    /// rate rather than against what the last few milliseconds sent.
    window_bytes: u64,
    last_update: Option<Instant>,
    sent_bps: f64,
    /// The rung the chooser is on, as of the last update.
    rung: Option<Rung>,
}

/// How a probe went, once judged, for the caller's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeEvent {
    Succeeded,
    Failed,
}

impl ViewerBwe {
    /// `probing`: this viewer may be probed (see the module docs).
    pub(crate) fn new(probing: bool) -> Self {
        Self {
            estimator: Estimator::new(MAX_VIEWER_BITRATE_BPS),
            chooser: LayerChooser::new(Vec::with_capacity(crate::stream::MAX_RUNGS)),
            feedback_seen: false,
            first_sent_at: None,
            next_update: None,
            probing,
            cluster: None,
            next_padding: None,
            window_bytes: 0,
            last_update: None,
            sent_bps: 0.0,
            rung: None,
        }
    }

    /// A datagram of `size_bytes` leaves for the viewer now: its transport-wide sequence number.
    pub(crate) fn stamp(&mut self, now: Instant, size_bytes: usize) -> u16 {
        if self.first_sent_at.is_none() {
            self.first_sent_at = Some(now);
            self.next_update = Some(now + UPDATE_INTERVAL);
        }
        self.window_bytes += size_bytes as u64;
        self.estimator.stamp(now, size_bytes)
    }

    /// How many padding packets of [`PADDING_PACKET_BYTES`] to send now, while a probe cluster
    /// runs: what tops the viewer's sending rate up to the probed rate. Ends the cluster when
    /// its time is over.
    pub(crate) fn padding_due(&mut self, now: Instant) -> u64 {
        if self.cluster.is_none() {
            return 0;
        }
        if self.estimator.probe_active(now).is_none() {
            self.cluster = None;
            self.next_padding = None;
            return 0;
        }
        if self.next_padding.is_some_and(|t| t > now) {
            return 0;
        }
        self.next_padding = Some(now + PADDING_INTERVAL);
        let Some(cluster) = &mut self.cluster else {
            return 0;
        };
        // Up to the end of the next step, so the cluster's rate holds through it.
        let elapsed = (now + PADDING_INTERVAL).saturating_duration_since(cluster.started);
        let wanted = (cluster.padding_bps * elapsed.as_secs_f64() / 8.0) as u64;
        let per_packet = (PADDING_PACKET_BYTES + crate::forwarder::DATAGRAM_OVERHEAD_BYTES) as u64;
        let packets = (wanted.saturating_sub(cluster.padding_bytes) / per_packet)
            .min(MAX_PADDING_PACKETS_PER_STEP);
        cluster.padding_bytes += packets * per_packet;
        packets
    }

    pub(crate) fn on_twcc(
        &mut self,
        now: Instant,
        feedback: &rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc,
    ) -> Result<(), FeedbackError> {
        self.estimator.on_twcc(now, feedback)?;
        self.feedback_seen = true;
        Ok(())
    }

    /// A probe just judged by the feedback taken, if any: the chooser spaces out the next one
    /// after a failure.
    pub(crate) fn take_probe_result(&mut self, now: Instant) -> Option<ProbeEvent> {
        let success = self.estimator.take_probe_result()?;
        self.chooser.probe_finished(now, success);
        Some(if success {
            ProbeEvent::Succeeded
        } else {
            ProbeEvent::Failed
        })
    }

    pub(crate) fn on_remb(&mut self, bitrate_bps: f64) {
        self.estimator.on_remb(bitrate_bps);
        self.feedback_seen = true;
    }

    pub(crate) fn estimate_bps(&self) -> f64 {
        self.estimator.estimate_bps()
    }

    /// When [`ViewerBwe::update`] or [`ViewerBwe::padding_due`] is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let padding = self.cluster.and(self.next_padding);
        [self.next_update, padding].into_iter().flatten().min()
    }

    /// Revisits the choice, if due, with what the stream offers (its [`Ladder`]). Returns what
    /// the estimate allows, when it is due. `allowed`: the highest layer the viewer's preference
    /// and the publisher allow; a probe starts (see [`ViewerBwe::probe_started`]) only when the
    /// estimate sits below a rung under that layer's top.
    pub(crate) fn update(
        &mut self,
        now: Instant,
        ladder: &Ladder,
        allowed: Layer,
    ) -> Option<Allowance> {
        if self.next_update.is_none_or(|t| t > now) {
            return None;
        }
        self.next_update = Some(now + UPDATE_INTERVAL);
        if let Some(last) = self.last_update.replace(now) {
            let span = now.saturating_duration_since(last).as_secs_f64();
            if span > 0.0 {
                let sample = self.window_bytes as f64 * 8.0 / span;
                self.sent_bps += SENT_RATE_WEIGHT * (sample - self.sent_bps);
            }
        }
        self.window_bytes = 0;
        let lowest = Allowance::Rung(Rung::full(Layer::LOWEST));
        if !self.feedback_seen {
            let waited = self
                .first_sent_at
                .is_some_and(|t| now.saturating_duration_since(t) >= FEEDBACK_GRACE);
            return Some(if waited { Allowance::Unlimited } else { lowest });
        }
        if ladder.is_empty() {
            return Some(lowest);
        }
        // The measured rates move all the time; the chooser only clamps to their count here.
        // A viewer starts on the whole lowest layer, not on its lowest frame rate.
        self.chooser.set_start(ladder.top_of(Layer::LOWEST));
        // Rungs come and go as the stream's temporal layers are measured: the chooser stays on
        // the rung it chose (or the next one down that is left), not on its old index.
        if let Some(rung) = self.rung {
            self.chooser.relocate(ladder.at_or_below(rung));
        }
        // A lower frame rate is a step down from its layer, never a step up to it: a viewer
        // climbs from one whole layer to the next (or back to the whole of its own).
        self.chooser
            .set_down_only(ladder.down_only(self.rung.map(|r| r.layer)));
        self.chooser.set_layers_from(ladder.bitrates());
        // Audio only needs an estimate measured against the link: TWCC feedback that has cut
        // it for congestion. A REMB is the viewer's own estimate, which starts low and grows.
        self.chooser
            .allow_audio_only(self.estimator.twcc_seen() && self.estimator.has_cut());
        self.chooser.update(now, self.estimator.estimate_bps());
        let rung = self.chooser.current();
        if self.probing
            && self.estimator.twcc_seen()
            && self.cluster.is_none()
            && rung.is_none_or(|r| r < ladder.top_of(allowed))
            && let Some(rate_bps) = self.chooser.probe_rate(now, self.estimator.estimate_bps())
            && self.estimator.start_probe(now, rate_bps)
        {
            self.cluster = Some(Cluster {
                started: now,
                padding_bps: (rate_bps - self.sent_bps).max(0.0),
                padding_bytes: 0,
            });
            self.next_padding = Some(now);
        }
        self.rung = rung.and_then(|r| ladder.rung(r));
        Some(match self.rung {
            Some(r) => Allowance::Rung(r),
            None => Allowance::AudioOnly,
        })
    }

    /// A probe cluster started at `now` (the caller counts it).
    pub(crate) fn probe_started(&self, now: Instant) -> bool {
        self.cluster.is_some_and(|c| c.started == now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_feedback_the_lowest_layer_holds_until_the_grace_ends() {
        let t0 = Instant::now();
        let mut b = ViewerBwe::new(false);
        assert_eq!(
            b.update(t0, &Ladder::of_layers(&[1e5, 2e5, 4e5]), Layer(2)),
            None,
            "nothing sent yet"
        );
        b.stamp(t0, 1000);
        assert_eq!(
            b.update(t0, &Ladder::of_layers(&[1e5, 2e5, 4e5]), Layer(2)),
            None,
            "not due"
        );
        let t1 = t0 + UPDATE_INTERVAL;
        assert_eq!(
            b.update(t1, &Ladder::of_layers(&[1e5, 2e5, 4e5]), Layer(2)),
            Some(Allowance::Rung(Rung::full(Layer::LOWEST)))
        );
        let t2 = t0 + FEEDBACK_GRACE;
        assert_eq!(
            b.update(t2, &Ladder::of_layers(&[1e5, 2e5, 4e5]), Layer(2)),
            Some(Allowance::Unlimited)
        );
        assert_eq!(b.poll_timeout(), Some(t2 + UPDATE_INTERVAL));
    }

    #[test]
    fn a_remb_caps_the_layer_at_what_it_carries() {
        let t0 = Instant::now();
        let mut b = ViewerBwe::new(false);
        b.stamp(t0, 1000);
        b.on_remb(250_000.0);
        // The chooser climbs to the highest layer the estimate covers.
        let mut t = t0;
        let mut last = Allowance::Unlimited;
        for _ in 0..40 {
            t += UPDATE_INTERVAL;
            if let Some(ceiling) = b.update(
                t,
                &Ladder::of_layers(&[100_000.0, 200_000.0, 400_000.0]),
                Layer(2),
            ) {
                last = ceiling;
            }
        }
        assert_eq!(last, Allowance::Rung(Rung::full(Layer(1))));
    }
}
