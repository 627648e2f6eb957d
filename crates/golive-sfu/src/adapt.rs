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

use std::time::{Duration, Instant};

use crate::bwe::{Estimator, FeedbackError, LayerChooser};
use crate::simulcast::Layer;

/// The estimate never goes above this: more than any one broadcast needs.
pub const MAX_VIEWER_BITRATE_BPS: f64 = 20_000_000.0;
/// How often a viewer's layer choice is revisited. Feedback comes about every 100 ms.
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(100);
/// A viewer that negotiated feedback but sent none this long after its first packet is no
/// longer held to the estimate.
pub const FEEDBACK_GRACE: Duration = Duration::from_secs(3);

pub(crate) struct ViewerBwe {
    estimator: Estimator,
    chooser: LayerChooser,
    feedback_seen: bool,
    first_sent_at: Option<Instant>,
    next_update: Option<Instant>,
}

impl ViewerBwe {
    pub(crate) fn new() -> Self {
        Self {
            estimator: Estimator::new(MAX_VIEWER_BITRATE_BPS),
            chooser: LayerChooser::new(Vec::new()),
            feedback_seen: false,
            first_sent_at: None,
            next_update: None,
        }
    }

    /// A datagram of `size_bytes` leaves for the viewer now: its transport-wide sequence number.
    pub(crate) fn stamp(&mut self, now: Instant, size_bytes: usize) -> u16 {
        if self.first_sent_at.is_none() {
            self.first_sent_at = Some(now);
            self.next_update = Some(now + UPDATE_INTERVAL);
        }
        self.estimator.stamp(now, size_bytes)
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

    pub(crate) fn on_remb(&mut self, bitrate_bps: f64) {
        self.estimator.on_remb(bitrate_bps);
        self.feedback_seen = true;
    }

    pub(crate) fn estimate_bps(&self) -> f64 {
        self.estimator.estimate_bps()
    }

    /// When [`ViewerBwe::update`] is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.next_update
    }

    /// Revisits the choice, if due, with the stream's layers' bitrates (lowest first). Returns
    /// the highest layer the estimate allows (`None`: no limit), when it is due.
    pub(crate) fn update(&mut self, now: Instant, bitrates_bps: Vec<f64>) -> Option<Option<Layer>> {
        if self.next_update.is_none_or(|t| t > now) {
            return None;
        }
        self.next_update = Some(now + UPDATE_INTERVAL);
        if !self.feedback_seen {
            let waited = self
                .first_sent_at
                .is_some_and(|t| now.saturating_duration_since(t) >= FEEDBACK_GRACE);
            return Some((!waited).then_some(Layer::LOWEST));
        }
        if bitrates_bps.is_empty() {
            return Some(Some(Layer::LOWEST));
        }
        // The measured rates move all the time; the chooser only clamps to their count here.
        self.chooser.set_layers(bitrates_bps);
        self.chooser.update(now, self.estimator.estimate_bps());
        // No layer at all (audio only) is not offered yet: the lowest is the floor.
        let layer = self.chooser.current().unwrap_or(0);
        Some(Some(Layer(layer.min(usize::from(u8::MAX)) as u8)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_feedback_the_lowest_layer_holds_until_the_grace_ends() {
        let t0 = Instant::now();
        let mut b = ViewerBwe::new();
        assert_eq!(b.update(t0, vec![1e5, 2e5, 4e5]), None, "nothing sent yet");
        b.stamp(t0, 1000);
        assert_eq!(b.update(t0, vec![1e5, 2e5, 4e5]), None, "not due");
        let t1 = t0 + UPDATE_INTERVAL;
        assert_eq!(b.update(t1, vec![1e5, 2e5, 4e5]), Some(Some(Layer::LOWEST)));
        let t2 = t0 + FEEDBACK_GRACE;
        assert_eq!(b.update(t2, vec![1e5, 2e5, 4e5]), Some(None));
        assert_eq!(b.poll_timeout(), Some(t2 + UPDATE_INTERVAL));
    }

    #[test]
    fn a_remb_caps_the_layer_at_what_it_carries() {
        let t0 = Instant::now();
        let mut b = ViewerBwe::new();
        b.stamp(t0, 1000);
        b.on_remb(250_000.0);
        // The chooser climbs one layer per hold while the estimate covers the next one.
        let mut t = t0;
        let mut last = None;
        for _ in 0..40 {
            t += UPDATE_INTERVAL;
            if let Some(ceiling) = b.update(t, vec![100_000.0, 200_000.0, 400_000.0]) {
                last = ceiling;
            }
        }
        assert_eq!(last, Some(Layer(1)));
    }
}
