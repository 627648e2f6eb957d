//! The one golive client: what the load tester, the core simulation and the end-to-end tests
//! share, so each of them is only its own I/O loop around it, as quinn's async layer is around
//! quinn-proto.
//!
//! - [`peer`]: [`ClientPeer`], a sans-IO WebRTC peer on `rtc` that makes the offer, as a
//!   browser does, as a viewer or a publisher. It never touches a socket, a thread or the
//!   clock: a driver feeds it datagrams and the time, and drains what it wants sent and what
//!   happened. The load tester drives hundreds per thread with `mio`, the simulation drives them
//!   against the SFU core in memory on a simulated clock, the end-to-end tests one per tokio
//!   task.
//! - [`media`]: the synthetic VP8 and Opus a publisher sends, each payload stamped with its
//!   source, number and send time, and filled so a viewer can prove it arrived byte for byte.
//! - [`pacer`]: a browser's send pacer, so a publisher's frames leave in 5 ms bursts at 2.5
//!   times the bitrate, as a browser's do, rather than all at once.
//! - [`simulcast`]: a publisher's three layers (rids q, h, f), each its own SSRC, numbering and
//!   source, offered and sent as a browser does (RFC 8853 offer, MID/RID header extensions).
//! - [`verify`]: what a viewer keeps of each packet, and the check of a received track against
//!   what its publisher sent.
//! - [`signal`] and [`http`] (feature `tokio`): the WebSocket signalling client and the
//!   HTTP/1.1 client for WHIP and WHEP.
//! - [`harness`]: the real `golive` binary as a child process on free ports.
//!
//! It depends on the wire (`golive-proto`) and on `rtc`, never on the server or its core: a
//! client that could reach into them would not test them.

pub mod harness;
#[cfg(feature = "tokio")]
pub mod http;
pub mod media;
pub mod pacer;
pub mod peer;
#[cfg(feature = "tokio")]
pub mod signal;
pub mod simulcast;
pub mod verify;

pub use harness::{ServerProcess, golive_binary};
pub use media::{
    Clock, MediaKind, MediaPlan, Numbering, Stamp, SyntheticPacket, SyntheticSource, TemporalTag,
    Vp8Temporal,
};
pub use pacer::{Pacer, Pacing};
pub use peer::{
    ClientPeer, Feedback, IceTiming, KeyframeRequestKind, PayloadTypes, PeerConfig, PeerError,
    PeerEvent, PublisherStats, Role, SrtpOffer, Transmit, VideoCodec,
};
#[cfg(feature = "tokio")]
pub use signal::{Closed, FrameCounts, Incoming, SignalClient, SignalError};
pub use simulcast::{
    LayerStats, SIMULCAST_RIDS, Simulcast, SimulcastError, SimulcastLayer, simulcast_offer,
};
pub use verify::{PictureRun, ReceivedPacket, TrackRun, check_track, check_vp8_pictures};
