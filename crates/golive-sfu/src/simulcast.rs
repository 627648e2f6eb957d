//! Simulcast (RFC 8853): a broadcaster may send its video as up to [`MAX_LAYERS`] encodings of
//! the same picture at different sizes and rates, each its own RTP stream (own SSRC, sequence
//! numbers and timestamps) named by a restriction id, the *rid*, in the offer (`a=rid:<id> send`,
//! `a=simulcast:send <ids>`) and in the packets' `rtp-stream-id` header extension.
//!
//! The SFU keeps every layer apart (its own duplicate filter, keyframe requests, keyframe cache
//! and NACK history) and sends each viewer exactly one layer at a time. A viewer moves to
//! another layer only at a keyframe of that layer, under one continuous SSRC, sequence number
//! and timestamp line (the header rewriter treats the new layer as a new source run).
//!
//! A broadcaster without simulcast has one layer, [`Layer::LOWEST`].

use crate::SfuError;
use crate::bwe::{Preference, SwitchReason};
use crate::temporal::ALL_TEMPORAL_LAYERS;
use crate::types::PeerId;

/// At most this many simulcast layers per broadcaster: browsers send three (quarter, half and
/// full size), and each layer costs the SFU a keyframe cache and a history.
pub const MAX_LAYERS: usize = 3;

/// A simulcast layer of a broadcaster's video, counted from the lowest (smallest) encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Layer(pub u8);

impl Layer {
    /// The lowest layer; the only one of a broadcaster without simulcast.
    pub const LOWEST: Layer = Layer(0);

    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A step of what a viewer may be sent: a simulcast layer, with the frames of its temporal
/// layers above `tid` dropped ([`crate::temporal::ALL_TEMPORAL_LAYERS`]: none dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rung {
    pub(crate) layer: Layer,
    pub(crate) tid: u8,
}

impl Rung {
    /// All of `layer`.
    pub(crate) fn full(layer: Layer) -> Self {
        Self {
            layer,
            tid: ALL_TEMPORAL_LAYERS,
        }
    }
}

/// What a viewer's bandwidth estimate allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Allowance {
    /// No estimate holds the viewer back: its preference alone decides.
    #[default]
    Unlimited,
    /// Up to this rung.
    Rung(Rung),
    /// Not even the lowest layer: audio only, until the estimate carries video again.
    AudioOnly,
}

/// A viewer's video moved to another layer (its first packet of the new layer was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerChange {
    pub peer: PeerId,
    /// The layer its video is on now; `None`: its video stopped, audio only (its link cannot
    /// carry the lowest layer), until a later change names a layer again.
    pub layer: Option<Layer>,
    pub reason: SwitchReason,
}

/// The conventional rids of browsers' simulcast, lowest first: quarter, half, full size.
const CONVENTIONAL_RIDS: [&str; 3] = ["q", "h", "f"];

/// The longest rid taken. RFC 8851 sets no bound; libwebrtc writes at most 16 characters, and
/// a bound keeps a hostile offer from making the SFU hold long strings.
const MAX_RID_LEN: usize = 16;

/// The rids of an offer's video section, lowest layer first.
///
/// `send_rids` are the ids of the section's `a=rid:<id> send` lines; `simulcast` the value of
/// its `a=simulcast:` attribute, if any. No rid line: no simulcast (an empty list). The order
/// of layers: the conventional names q < h < f when the rids are among them; otherwise the
/// order of `a=simulcast:send`, which browsers write in the order of the page's
/// `sendEncodings`, by convention from the smallest encoding up.
pub(crate) fn layer_rids(
    send_rids: &[String],
    simulcast: Option<&str>,
) -> Result<Vec<String>, SfuError> {
    if send_rids.is_empty() {
        return Ok(Vec::new());
    }
    for rid in send_rids {
        let valid = !rid.is_empty()
            && rid.len() <= MAX_RID_LEN
            && rid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(SfuError::BadSdp(format!(
                "the offer's rid {rid:?} is not 1 to {MAX_RID_LEN} letters, digits, '-' or '_'"
            )));
        }
    }
    let mut rids: Vec<String> = Vec::new();
    // The a=simulcast:send list first (its order), then any rid it does not name.
    let listed = simulcast
        .and_then(|s| {
            let mut words = s.split_whitespace();
            while let Some(direction) = words.next() {
                let list = words.next()?;
                if direction == "send" {
                    return Some(list);
                }
            }
            None
        })
        .into_iter()
        .flat_map(|list| list.split([';', ',']))
        .map(|id| id.trim_start_matches('~'));
    for id in listed.chain(send_rids.iter().map(String::as_str)) {
        if send_rids.iter().any(|r| r == id) && !rids.iter().any(|r| r == id) {
            rids.push(id.to_owned());
        }
    }
    if rids.len() > MAX_LAYERS {
        return Err(SfuError::BadSdp(format!(
            "the offer sends {} simulcast layers; golive takes at most {MAX_LAYERS}",
            rids.len()
        )));
    }
    if rids.iter().all(|r| CONVENTIONAL_RIDS.contains(&r.as_str())) {
        rids.sort_by_key(|r| CONVENTIONAL_RIDS.iter().position(|c| c == r));
    }
    Ok(rids)
}

/// Which layers a broadcaster sends: how many it has sent since it (re)started, and which of
/// them it sends now. A browser stops sending its upper layers when its own uplink or CPU
/// cannot carry them, and resumes them later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Availability {
    /// Layers seen, counted from the lowest (a layer above the lowest counts the ones below).
    pub(crate) seen: usize,
    /// Bit i: layer i is being sent.
    pub(crate) active: u8,
}

impl Availability {
    /// `n` layers, all being sent.
    #[cfg(test)]
    pub(crate) fn all(n: usize) -> Self {
        Self {
            seen: n,
            active: ((1u16 << n.min(8)) - 1) as u8,
        }
    }

    fn is_active(self, layer: usize) -> bool {
        layer < 8 && self.active & (1 << layer) != 0
    }

    /// The layer to be on under `cap`: the highest one being sent at or below it, else the
    /// lowest one being sent above it (some video beats none), else `cap` itself (nothing is
    /// being sent yet).
    fn choose(self, cap: Layer) -> Layer {
        let cap = cap.index();
        let below = (0..=cap).rev().find(|l| self.is_active(*l));
        let above = || (cap + 1..MAX_LAYERS).find(|l| self.is_active(*l));
        Layer(below.or_else(above).unwrap_or(cap) as u8)
    }
}

/// The highest layer a viewer's preference allows, of `layers` layers.
pub(crate) fn ceiling(preference: Preference, layers: usize) -> Layer {
    let top = layers.clamp(1, MAX_LAYERS) - 1;
    let layer = match preference {
        Preference::Auto | Preference::High => top,
        Preference::Medium => top.min(1),
        Preference::Low => 0,
    };
    Layer(layer as u8)
}

/// Which layer a viewer's video is on, and which it is moving to.
///
/// A viewer starts on the lowest layer (the quickest to start: the smallest keyframe, and the
/// one every link is likeliest to carry) and moves only at a keyframe of the layer it wants;
/// until that keyframe comes it stays on its current layer, so its picture never stops.
#[derive(Debug, Clone)]
pub(crate) struct ViewerLayers {
    preference: Preference,
    /// The layer whose packets the viewer is sent.
    current: Layer,
    /// The layer it should be on, and why; equal to `current` when no switch is pending.
    target: Layer,
    reason: SwitchReason,
    /// What the viewer's bandwidth estimate allows.
    estimate: Allowance,
    /// The viewer receives video at all: one that does not never needs a layer's keyframe.
    video: bool,
}

/// What one video packet of a layer means for a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerVerdict {
    /// Not the viewer's layer: skip it.
    Skip,
    /// The viewer's layer: send it.
    Send,
    /// A keyframe of the layer the viewer wants: it switches here, and this packet is its first
    /// of the new layer.
    Switch(SwitchReason),
}

impl Default for ViewerLayers {
    fn default() -> Self {
        Self {
            preference: Preference::Auto,
            current: Layer::LOWEST,
            target: Layer::LOWEST,
            reason: SwitchReason::Preference,
            estimate: Allowance::Unlimited,
            video: true,
        }
    }
}

impl ViewerLayers {
    /// The layers of a viewer that takes no video: always the lowest, never a move.
    pub(crate) fn audio_only() -> Self {
        Self {
            video: false,
            ..Self::default()
        }
    }

    /// The layers of a relay, which is sent every layer on a track of its own: the choice stays
    /// on the lowest and never moves (as for a viewer without video).
    pub(crate) fn fixed() -> Self {
        Self::audio_only()
    }

    pub(crate) fn current(&self) -> Layer {
        self.current
    }

    pub(crate) fn target(&self) -> Layer {
        self.target
    }

    /// Chooses the target from the preference, the estimate's ceiling and the `layers` the
    /// stream has. Returns the new target when it changed and is not the current layer (a
    /// keyframe of it must be asked for).
    pub(crate) fn retarget(&mut self, layers: Availability, reason: SwitchReason) -> Option<Layer> {
        if !self.video {
            return None;
        }
        let mut cap = ceiling(self.preference, layers.seen);
        match self.estimate {
            Allowance::Rung(r) => cap = cap.min(r.layer),
            Allowance::AudioOnly => cap = Layer::LOWEST,
            Allowance::Unlimited => {}
        }
        let target = layers.choose(cap);
        if target == self.target {
            return None;
        }
        self.target = target;
        self.reason = reason;
        (target != self.current).then_some(target)
    }

    /// The highest layer the viewer would be on with no estimate: what its preference allows
    /// among the layers being sent.
    pub(crate) fn allowed(&self, layers: Availability) -> Layer {
        if !self.video {
            return Layer::LOWEST;
        }
        layers.choose(ceiling(self.preference, layers.seen))
    }

    /// The viewer's own ceiling changed.
    pub(crate) fn set_preference(
        &mut self,
        preference: Preference,
        layers: Availability,
    ) -> Option<Layer> {
        self.preference = preference;
        self.retarget(layers, SwitchReason::Preference)
    }

    /// The bandwidth estimate allows `allowance` now. Returns the layer whose keyframe the
    /// viewer needs: a new target, or the layer its video resumes on after audio only.
    pub(crate) fn set_estimate(
        &mut self,
        allowance: Allowance,
        layers: Availability,
    ) -> Option<Layer> {
        if allowance == self.estimate {
            return None;
        }
        let resumed = self.estimate == Allowance::AudioOnly;
        self.estimate = allowance;
        let target = self.retarget(layers, SwitchReason::Bandwidth);
        if resumed && self.video {
            return Some(self.target);
        }
        target
    }

    /// The viewer gets no video for now (its estimate carries only audio).
    pub(crate) fn video_paused(&self) -> bool {
        self.video && self.estimate == Allowance::AudioOnly
    }

    /// The highest temporal layer (TID) of its current layer the viewer may be sent: what its
    /// estimate's rung allows once it is on that rung's layer; while it waits for a keyframe to
    /// step down for bandwidth, only the base layer (the link is short now, the keyframe takes
    /// a moment); otherwise all of them.
    pub(crate) fn temporal_cap(&self) -> u8 {
        match self.estimate {
            Allowance::Rung(r) if r.layer == self.current && self.target == self.current => r.tid,
            Allowance::Rung(_) | Allowance::AudioOnly
                if self.target < self.current && self.reason == SwitchReason::Bandwidth =>
            {
                0
            }
            _ => ALL_TEMPORAL_LAYERS,
        }
    }

    /// A video packet of `layer`, a keyframe start or not.
    pub(crate) fn offer(&mut self, layer: Layer, keyframe_start: bool) -> LayerVerdict {
        if layer == self.target && layer != self.current && keyframe_start {
            self.current = layer;
            return LayerVerdict::Switch(self.reason);
        }
        if layer == self.current {
            LayerVerdict::Send
        } else {
            LayerVerdict::Skip
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn conventional_rids_are_ordered_by_size_whatever_the_offer_order() {
        let r = layer_rids(&rids(&["f", "h", "q"]), Some("send f;h;q")).unwrap();
        assert_eq!(r, rids(&["q", "h", "f"]));
        let r = layer_rids(&rids(&["h", "q"]), None).unwrap();
        assert_eq!(r, rids(&["q", "h"]));
    }

    #[test]
    fn other_rids_follow_the_simulcast_attribute_then_the_rid_lines() {
        let r = layer_rids(&rids(&["hi", "lo", "mid"]), Some("send lo;~mid;hi")).unwrap();
        assert_eq!(r, rids(&["lo", "mid", "hi"]));
        let r = layer_rids(&rids(&["a", "b"]), Some("recv x send b")).unwrap();
        assert_eq!(r, rids(&["b", "a"]));
        assert!(layer_rids(&[], Some("send q;h")).unwrap().is_empty());
    }

    #[test]
    fn bad_or_too_many_rids_are_bad_sdp() {
        assert!(matches!(
            layer_rids(&rids(&["a", "b", "c", "d"]), None),
            Err(SfuError::BadSdp(_))
        ));
        assert!(matches!(
            layer_rids(&rids(&["q", "h h"]), None),
            Err(SfuError::BadSdp(_))
        ));
        assert!(matches!(
            layer_rids(&rids(&["q", &"x".repeat(17)]), None),
            Err(SfuError::BadSdp(_))
        ));
    }

    #[test]
    fn preference_caps_the_layer() {
        assert_eq!(ceiling(Preference::Auto, 3), Layer(2));
        assert_eq!(ceiling(Preference::High, 3), Layer(2));
        assert_eq!(ceiling(Preference::Medium, 3), Layer(1));
        assert_eq!(ceiling(Preference::Medium, 1), Layer(0));
        assert_eq!(ceiling(Preference::Low, 3), Layer(0));
        assert_eq!(ceiling(Preference::Auto, 0), Layer(0));
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_and_keeps_the_old_layer_until_then() {
        let mut v = ViewerLayers::default();
        assert_eq!(
            v.retarget(Availability::all(3), SwitchReason::Publisher),
            Some(Layer(2))
        );
        assert_eq!(v.offer(Layer(0), false), LayerVerdict::Send);
        assert_eq!(v.offer(Layer(2), false), LayerVerdict::Skip);
        assert_eq!(v.offer(Layer(1), true), LayerVerdict::Skip);
        assert_eq!(
            v.offer(Layer(2), true),
            LayerVerdict::Switch(SwitchReason::Publisher)
        );
        assert_eq!(v.current(), Layer(2));
        assert_eq!(v.offer(Layer(0), false), LayerVerdict::Skip);
        assert_eq!(v.offer(Layer(2), false), LayerVerdict::Send);
        // Down by preference, with the reason.
        assert_eq!(
            v.set_preference(Preference::Low, Availability::all(3)),
            Some(Layer(0))
        );
        assert_eq!(
            v.offer(Layer(0), true),
            LayerVerdict::Switch(SwitchReason::Preference)
        );
        // Back to where it is: nothing pending.
        assert_eq!(
            v.set_preference(Preference::Low, Availability::all(3)),
            None
        );
        assert_eq!(
            v.set_preference(Preference::Medium, Availability::all(3)),
            Some(Layer(1))
        );
        assert_eq!(
            v.set_preference(Preference::Low, Availability::all(3)),
            None
        );
        assert_eq!(v.offer(Layer(1), true), LayerVerdict::Skip);
        assert_eq!(v.offer(Layer(0), true), LayerVerdict::Send);
    }

    #[test]
    fn a_layer_that_stops_is_replaced_by_the_next_one_down_or_else_up() {
        let mut v = ViewerLayers::default();
        let all = Availability::all(3);
        assert_eq!(v.retarget(all, SwitchReason::Publisher), Some(Layer(2)));
        v.offer(Layer(2), true);
        let no_top = Availability {
            seen: 3,
            active: 0b011,
        };
        assert_eq!(v.retarget(no_top, SwitchReason::Publisher), Some(Layer(1)));
        let only_top = Availability {
            seen: 3,
            active: 0b100,
        };
        assert_eq!(v.set_preference(Preference::Low, only_top), None);
        assert_eq!(v.target(), Layer(2), "some video beats none");
        assert_eq!(v.retarget(all, SwitchReason::Publisher), Some(Layer(0)));
    }

    #[test]
    fn a_viewer_without_video_never_moves() {
        let mut v = ViewerLayers::audio_only();
        assert_eq!(
            v.retarget(Availability::all(3), SwitchReason::Publisher),
            None
        );
        assert_eq!(
            v.set_preference(Preference::High, Availability::all(3)),
            None
        );
        assert_eq!(v.target(), Layer::LOWEST);
    }

    #[test]
    fn the_estimate_caps_below_the_preference() {
        let mut v = ViewerLayers::default();
        assert_eq!(
            v.set_estimate(Allowance::Rung(Rung::full(Layer(0))), Availability::all(3)),
            None
        );
        assert_eq!(
            v.retarget(Availability::all(3), SwitchReason::Publisher),
            None
        );
        assert_eq!(
            v.set_estimate(Allowance::Rung(Rung::full(Layer(1))), Availability::all(3)),
            Some(Layer(1))
        );
        assert_eq!(
            v.offer(Layer(1), true),
            LayerVerdict::Switch(SwitchReason::Bandwidth)
        );
        assert_eq!(
            v.set_preference(Preference::Low, Availability::all(3)),
            Some(Layer(0))
        );
        // Without an estimate the preference alone decides.
        assert_eq!(
            v.set_estimate(Allowance::Unlimited, Availability::all(3)),
            None
        );
        assert_eq!(
            v.set_preference(Preference::Auto, Availability::all(3)),
            Some(Layer(2))
        );
    }
}
