//! What a worker knows of one stream: its local peers and what it remembers of the source
//! (keyframe cache, NACK history), whether the broadcaster is here or on another worker.

use std::time::Instant;

use crate::cache::{History, KeyframeCache};
use crate::codec::MediaKind;
use crate::rewrite::SourceEpoch;
use crate::simulcast::{Layer, MAX_LAYERS};
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
    /// The source epoch `layers` counts for: a new broadcaster may send fewer layers.
    pub(crate) layers_epoch: Option<SourceEpoch>,
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
            layers_epoch: None,
            last_media_at: None,
        }
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
