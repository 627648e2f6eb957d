//! The test client library of golive's end-to-end tests: golive-client driven by tokio.
//!
//! Each test starts its own `golive` process ([`GoliveServer`]) and talks to it the way real
//! clients do: signalling over the WebSocket ([`SignalClient`], `golive-proto` types), media over
//! WebRTC ([`TestPeer`]: golive-client's sans-IO peer on a tokio task, one UDP socket on
//! 127.0.0.1 per peer).
//!
//! The publisher sends golive-client's synthetic VP8 and Opus ([`media`]): well-formed enough for
//! the server's keyframe detection, each payload stamped and numbered, so a viewer can check it
//! got a contiguous, byte-for-byte identical run of what was sent. Peers record what they send
//! and receive in a [`Record`] that the test reads while they run.
//!
//! [`Session`] ties a signalling socket to its peer for the common flows (publish, watch).

pub mod http;
pub mod peer;
pub mod server;
pub mod verify;

pub use golive_client::media;
pub use golive_client::signal::{self, Closed, SignalClient};
pub use golive_client::{MediaKind, VideoCodec};
pub use peer::{OfferedPeer, Record, TestPeer};
pub use server::GoliveServer;

use anyhow::{Context, Result};
use golive_proto::ClientMessage;
use std::future::Future;
use std::time::Duration;

/// Longest any end-to-end test may run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a peer may take to connect (ICE + DTLS over loopback take milliseconds).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a test body under [`TEST_TIMEOUT`], panicking with a clear message when it hangs and
/// on any error it returns.
pub async fn run_test<F: Future<Output = Result<()>>>(name: &str, body: F) {
    init_logging();
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Err(_) => panic!("{name}: did not finish within {TEST_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("{name}: {e:?}"),
        Ok(Ok(())) => {}
    }
}

/// Environment variable holding a `tracing` filter for the test clients' own logs (the `rtc`
/// stack logs through `log`), e.g. `GOLIVE_E2E_LOG=rtc=debug`. The server reads `RUST_LOG`.
pub const CLIENT_LOG_ENV: &str = "GOLIVE_E2E_LOG";

/// Installs a log subscriber for the client side when [`CLIENT_LOG_ENV`] is set; idempotent.
pub fn init_logging() {
    if let Ok(filter) = std::env::var(CLIENT_LOG_ENV) {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A signalling socket and, once answered, its WebRTC peer: one broadcaster or one viewer.
#[derive(Debug)]
pub struct Session {
    pub signal: SignalClient,
    pub peer: TestPeer,
}

impl Session {
    /// Connects a publisher to `stream` and waits until its media connection is up.
    pub async fn publish(server: &GoliveServer, stream: &str) -> Result<Self> {
        let offered = TestPeer::publisher().await?;
        let publish = ClientMessage::Publish {
            stream: stream.to_owned(),
            sdp: offered.sdp().to_owned(),
            key: None,
            title: Some("golive e2e".to_owned()),
            name: None,
            record: None,
        };
        Self::open(server, offered, publish)
            .await
            .with_context(|| format!("publisher of {stream}"))
    }

    /// Connects a publisher whose VP8 has `layers` temporal layers
    /// ([`TestPeer::publisher_with_temporal_layers`]) to `stream`, and waits until its media
    /// connection is up.
    pub async fn publish_temporal(server: &GoliveServer, stream: &str, layers: u8) -> Result<Self> {
        let offered = TestPeer::publisher_with_temporal_layers(layers).await?;
        let publish = publish_message(stream, offered.sdp());
        Self::open(server, offered, publish)
            .await
            .with_context(|| format!("publisher of {stream} with {layers} temporal layers"))
    }

    /// Connects a simulcast publisher ([`TestPeer::simulcast_publisher`]) to `stream` and waits
    /// until its media connection is up.
    pub async fn publish_simulcast(server: &GoliveServer, stream: &str) -> Result<Self> {
        let offered = TestPeer::simulcast_publisher().await?;
        let publish = publish_message(stream, offered.sdp());
        Self::open(server, offered, publish)
            .await
            .with_context(|| format!("simulcast publisher of {stream}"))
    }

    /// Connects a VP8 + Opus viewer to `stream` and waits until its media connection is up.
    pub async fn watch(server: &GoliveServer, stream: &str) -> Result<Self> {
        let offered = TestPeer::viewer(VideoCodec::Vp8).await?;
        let watch = watch_message(stream, offered.sdp());
        Self::open(server, offered, watch)
            .await
            .with_context(|| format!("viewer of {stream}"))
    }

    /// Sends `request` (carrying `offered`'s offer) on a new socket, applies the answer and
    /// waits for the media connection.
    async fn open(
        server: &GoliveServer,
        offered: OfferedPeer,
        request: ClientMessage,
    ) -> Result<Self> {
        let mut signal = SignalClient::connect(&server.ws_url()).await?;
        signal.send(&request).await?;
        let answer = signal.expect_answer().await?;
        let peer = offered.connect(&answer)?;
        peer.wait_connected(CONNECT_TIMEOUT).await?;
        Ok(Self { signal, peer })
    }
}

/// A `watch` message.
pub fn watch_message(stream: &str, sdp: &str) -> ClientMessage {
    ClientMessage::Watch {
        stream: stream.to_owned(),
        sdp: sdp.to_owned(),
        name: None,
    }
}

/// A `publish` message without key or title.
pub fn publish_message(stream: &str, sdp: &str) -> ClientMessage {
    ClientMessage::Publish {
        stream: stream.to_owned(),
        sdp: sdp.to_owned(),
        key: None,
        title: None,
        name: None,
        record: None,
    }
}
