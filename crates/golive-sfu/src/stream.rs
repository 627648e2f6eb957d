//! What a worker knows of one stream: its local peers and what it remembers of the source
//! (keyframe cache, NACK history), whether the broadcaster is here or on another worker.

use std::time::Instant;

use crate::cache::{History, KeyframeCache};
use crate::types::PeerId;

pub(crate) struct LocalStream {
    pub(crate) publisher: Option<PeerId>,
    pub(crate) viewers: Vec<PeerId>,
    /// Video packets since the last keyframe, for viewers that join.
    pub(crate) cache: KeyframeCache,
    /// Recent packets per kind, for viewers' NACKs (allocated with the first packet).
    pub(crate) history: [Option<History>; 2],
    pub(crate) last_media_at: Option<Instant>,
}

impl LocalStream {
    pub(crate) fn new() -> Self {
        Self {
            publisher: None,
            viewers: Vec::new(),
            cache: KeyframeCache::default(),
            history: [None, None],
            last_media_at: None,
        }
    }

    pub(crate) fn is_unused(&self) -> bool {
        self.publisher.is_none() && self.viewers.is_empty()
    }
}
