//! A WebRTC test peer: golive-client's sans-IO [`ClientPeer`] (always the offerer, as a browser
//! is to golive's ICE-lite server) with its tokio I/O loop: one UDP socket on 127.0.0.1, one
//! task.
//!
//! Life cycle: [`TestPeer::publisher`] or [`TestPeer::viewer`] gives an [`OfferedPeer`] whose
//! [`sdp`](OfferedPeer::sdp) goes into a `publish` or `watch`; [`OfferedPeer::connect`] takes the
//! server's answer and starts the loop. What the peer sees is recorded in a [`Record`] that the
//! test reads while the peer runs.

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::BytesMut;
use golive_client::peer::random_u32;
use golive_client::{
    ClientPeer, Clock, KeyframeRequestKind, MediaKind, MediaPlan, PeerConfig, PeerEvent,
    ReceivedPacket, Role, Simulcast, SyntheticPacket, SyntheticSource, VideoCodec,
};
use rtc::peer_connection::state::RTCPeerConnectionState;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Largest datagram we expect (DTLS and RTP stay under the 1500-byte MTU).
const UDP_BUFFER_BYTES: usize = 2048;
/// How long the loop sleeps when the peer has no deadline.
const IDLE_WAKEUP: Duration = Duration::from_secs(1);
/// A peer that fails on every packet must not eat the memory.
const MAX_ERRORS: usize = 1000;

/// The publisher's media: 15 fps, a keyframe every second (three packets) and on request,
/// delta frames of two packets, 20 ms Opus packets.
fn media_plan() -> MediaPlan {
    MediaPlan {
        video_fps: 15,
        gop_frames: 15,
        keyframe_bytes: 3_000,
        delta_frame_bytes: 1_400,
        max_payload_bytes: 1_000,
        audio_payload_bytes: 100,
        temporal_layers: 1,
    }
}

/// A keyframe request (RTCP PLI or FIR) the publisher received.
#[derive(Debug, Clone, Copy)]
pub struct KeyframeRequest {
    pub kind: KeyframeRequestKind,
    pub at: Instant,
}

/// A keyframe request (PLI or FIR) that named one layer of a simulcast publisher.
#[derive(Debug, Clone, Copy)]
pub struct LayerKeyframeRequest {
    /// The layer, lowest first.
    pub layer: usize,
    pub at: Instant,
}

/// Everything a peer observed, shared between its loop and the test.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// What a publisher handed to its senders.
    pub sent: Vec<SyntheticPacket>,
    pub received: Vec<ReceivedPacket>,
    pub keyframe_requests: Vec<KeyframeRequest>,
    /// A simulcast publisher's keyframe requests, each naming one layer's SSRC.
    pub layer_keyframe_requests: Vec<LayerKeyframeRequest>,
    pub states: Vec<(Instant, RTCPeerConnectionState)>,
    /// A simulcast publisher's layers' source ids, lowest layer first (empty otherwise).
    pub layer_sources: Vec<u32>,
    /// Problems inside the peer (a failed send, an undecodable datagram...). The tests assert
    /// this stays empty where it matters; the peer itself never panics on them.
    pub errors: Vec<String>,
}

impl Record {
    pub fn received_of(&self, kind: MediaKind) -> Vec<&ReceivedPacket> {
        self.received.iter().filter(|p| p.kind == kind).collect()
    }

    /// A simulcast publisher's video packets of `layer` as handed to its sender.
    pub fn sent_of_layer(&self, layer: usize) -> impl Iterator<Item = &SyntheticPacket> {
        let source = self.layer_sources.get(layer).copied();
        self.sent
            .iter()
            .filter(move |p| p.kind == MediaKind::Video && Some(p.stamp.source_id) == source)
    }

    /// The video payload bytes each layer of a simulcast publisher sent, lowest layer first.
    pub fn layer_payload_bytes(&self) -> Vec<u64> {
        (0..self.layer_sources.len())
            .map(|l| self.sent_of_layer(l).map(|p| p.payload.len() as u64).sum())
            .collect()
    }

    fn note_error(&mut self, error: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(error);
        }
    }
}

/// A peer with its offer made, waiting for the server's answer.
pub struct OfferedPeer {
    peer: ClientPeer,
    socket: UdpSocket,
}

impl std::fmt::Debug for OfferedPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedPeer")
            .field("peer", &self.peer)
            .finish()
    }
}

/// A connected (or connecting) peer whose loop runs on a tokio task.
pub struct TestPeer {
    publisher: bool,
    record: Arc<Mutex<Record>>,
    state_rx: watch::Receiver<RTCPeerConnectionState>,
    stop_tx: Option<oneshot::Sender<()>>,
    command_tx: mpsc::UnboundedSender<Command>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPeer")
            .field("publisher", &self.publisher)
            .field("state", &*self.state_rx.borrow())
            .finish()
    }
}

/// What a test can ask of a running peer's loop.
#[derive(Debug)]
enum Command {
    SendPli,
    /// Stop or resume one simulcast layer.
    SetLayerSending(usize, bool),
}

impl TestPeer {
    /// A publisher: sendonly VP8 and Opus tracks.
    pub async fn publisher() -> Result<OfferedPeer> {
        Self::publisher_with_temporal_layers(1).await
    }

    /// A publisher whose VP8 has `layers` temporal layers (1 to 3: L1T1, L1T2, L1T3), with the
    /// extended payload descriptor on every video packet when more than one.
    pub async fn publisher_with_temporal_layers(layers: u8) -> Result<OfferedPeer> {
        let clock = Clock::system();
        let plan = media_plan().with_temporal_layers(layers);
        let role = Role::Publisher {
            video_ssrc: random_u32(),
            audio_ssrc: random_u32(),
            source: SyntheticSource::new(random_u32(), plan, clock),
        };
        OfferedPeer::new(VideoCodec::Vp8, role).await
    }

    /// A simulcast publisher: three layers (rids q, h, f; 1/16, 1/5 and all of the top layer's
    /// packet size), each its own SSRC and source, sent as a browser sends them. Its
    /// [`Record::sent`] holds every layer's video; [`Record::layer_sources`] tells them apart.
    pub async fn simulcast_publisher() -> Result<OfferedPeer> {
        let mut offered = Self::publisher().await?;
        let plans = golive_client::simulcast::LAYER_BITRATE_DIVISORS.map(|div| {
            let top = media_plan();
            let div = div as usize;
            MediaPlan {
                keyframe_bytes: (top.keyframe_bytes / div).max(64),
                delta_frame_bytes: (top.delta_frame_bytes / div).max(64),
                ..top
            }
        });
        let layers = Simulcast::with_plans(plans, Clock::system(), random_u32(), random_u32());
        offered
            .peer
            .set_simulcast(layers)
            .context("making the offer a simulcast one")?;
        Ok(offered)
    }

    /// A viewer: recvonly audio and video, able to receive `codec` video.
    pub async fn viewer(codec: VideoCodec) -> Result<OfferedPeer> {
        OfferedPeer::new(codec, Role::Viewer).await
    }

    pub fn is_publisher(&self) -> bool {
        self.publisher
    }

    /// A copy of everything observed so far.
    pub fn snapshot(&self) -> Record {
        self.lock().clone()
    }

    /// Runs `f` on the record without copying it.
    pub fn with_record<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.lock())
    }

    /// Makes a viewer send an RTCP PLI for its video track, as a decoder that lost a picture
    /// would. Fails if the peer is not a viewer or its loop has ended.
    pub fn send_pli(&self) -> Result<()> {
        ensure!(!self.publisher, "only a viewer sends PLI");
        self.command_tx
            .send(Command::SendPli)
            .map_err(|_| anyhow!("the peer's loop has ended"))
    }

    /// Stops or resumes one layer of a simulcast publisher, as a browser stops an upper layer
    /// its uplink cannot carry: the layer resumes where its sequence numbers stopped, with a
    /// keyframe. Fails if the peer is not a simulcast publisher or its loop has ended; a layer
    /// that does not exist shows in [`Record::errors`].
    pub fn set_layer_sending(&self, layer: usize, on: bool) -> Result<()> {
        ensure!(
            self.publisher && !self.lock().layer_sources.is_empty(),
            "only a simulcast publisher has layers to stop"
        );
        self.command_tx
            .send(Command::SetLayerSending(layer, on))
            .map_err(|_| anyhow!("the peer's loop has ended"))
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state_rx.borrow()
    }

    /// Waits until the peer connection is `connected`; `failed` or `closed` first is an error.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.state_rx.clone();
        let wait = rx.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        });
        let state = *tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| {
                let states: Vec<_> = self.lock().states.iter().map(|(_, s)| *s).collect();
                anyhow!("not connected within {timeout:?}; states: {states:?}")
            })?
            .context("the peer's loop ended")?;
        if state != RTCPeerConnectionState::Connected {
            bail!(
                "peer connection went {state} before connecting; errors: {:?}",
                self.lock().errors
            );
        }
        Ok(())
    }

    /// Waits until at least `count` packets of `kind` were received (viewer) or sent
    /// (publisher).
    pub async fn wait_packets(
        &self,
        kind: MediaKind,
        count: usize,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.with_record(|r| {
                if self.publisher {
                    r.sent.iter().filter(|p| p.kind == kind).count()
                } else {
                    r.received_of(kind).len()
                }
            });
            if have >= count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {have} of {count} {kind:?} packets within {timeout:?} (state {}, errors {:?})",
                    self.state(),
                    self.lock().errors
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a keyframe request (PLI or FIR) that reached this publisher at or after
    /// `since`, and returns it.
    pub async fn wait_keyframe_request_since(
        &self,
        since: Instant,
        timeout: Duration,
    ) -> Result<KeyframeRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let found =
                self.with_record(|r| r.keyframe_requests.iter().find(|k| k.at >= since).copied());
            if let Some(request) = found {
                return Ok(request);
            }
            if Instant::now() >= deadline {
                // Describe every request by when it came relative to `since`.
                let seen: Vec<String> = self.with_record(|r| {
                    r.keyframe_requests
                        .iter()
                        .map(|k| match since.checked_duration_since(k.at) {
                            Some(before) => format!("{:?} {before:?} before", k.kind),
                            None => format!("{:?} {:?} after", k.kind, k.at - since),
                        })
                        .collect()
                });
                bail!("no PLI/FIR within {timeout:?}; requests seen: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a keyframe request naming simulcast `layer`'s SSRC that reached this publisher
    /// at or after `since`.
    pub async fn wait_layer_keyframe_request_since(
        &self,
        layer: usize,
        since: Instant,
        timeout: Duration,
    ) -> Result<LayerKeyframeRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.with_record(|r| {
                r.layer_keyframe_requests
                    .iter()
                    .find(|k| k.layer == layer && k.at >= since)
                    .copied()
            });
            if let Some(request) = found {
                return Ok(request);
            }
            if Instant::now() >= deadline {
                let seen: Vec<usize> = self
                    .with_record(|r| r.layer_keyframe_requests.iter().map(|k| k.layer).collect());
                bail!(
                    "no keyframe request for layer {layer} within {timeout:?}; layers asked: {seen:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the loop, closing the peer connection.
    pub async fn close(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl OfferedPeer {
    async fn new(video_codec: VideoCodec, role: Role) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("binding the peer's UDP socket")?;
        let config = PeerConfig {
            video_codec,
            report_sent: true,
            ..PeerConfig::default()
        };
        let peer = ClientPeer::new(Instant::now(), socket.local_addr()?, &config, role)?;
        Ok(Self { peer, socket })
    }

    /// The offer to send in `publish` / `watch`.
    pub fn sdp(&self) -> &str {
        self.peer.offer_sdp()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.peer.local_addr()
    }

    /// Applies the server's answer and starts the loop.
    pub fn connect(mut self, answer_sdp: &str) -> Result<TestPeer> {
        self.peer
            .accept_answer(Instant::now(), answer_sdp)
            .context("applying the server's answer")?;
        let publisher = self.peer.is_publisher();
        let layer_sources = self
            .peer
            .simulcast()
            .map(|s| s.layers().iter().map(|l| l.source.id()).collect())
            .unwrap_or_default();
        let record = Arc::new(Mutex::new(Record {
            layer_sources,
            ..Record::default()
        }));
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let io = Io {
            peer: self.peer,
            socket: self.socket,
            record: Arc::clone(&record),
            state_tx,
        };
        let task = tokio::spawn(io.run(stop_rx, command_rx));
        Ok(TestPeer {
            publisher,
            record,
            state_rx,
            stop_tx: Some(stop_tx),
            command_tx,
            task: Some(task),
        })
    }
}

/// The tokio I/O loop around one [`ClientPeer`].
struct Io {
    peer: ClientPeer,
    socket: UdpSocket,
    record: Arc<Mutex<Record>>,
    state_tx: watch::Sender<RTCPeerConnectionState>,
}

impl Io {
    async fn run(
        mut self,
        mut stop_rx: oneshot::Receiver<()>,
        mut command_rx: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut buf = vec![0u8; UDP_BUFFER_BYTES];
        loop {
            self.drain().await;
            let now = Instant::now();
            let deadline = self.peer.poll_timeout().unwrap_or(now + IDLE_WAKEUP);
            if deadline <= now {
                let result = self.peer.handle_timeout(now);
                self.note(result, "handle_timeout");
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut stop_rx => break,
                Some(command) = command_rx.recv() => self.obey(command),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let result = self.peer.handle_timeout(Instant::now());
                    self.note(result, "handle_timeout");
                }
                res = self.socket.recv_from(&mut buf) => match res {
                    Ok((n, from)) => {
                        let data = BytesMut::from(&buf[..n]);
                        let result = self.peer.handle_datagram(Instant::now(), from, data);
                        self.note(result, "handle_datagram");
                    }
                    Err(e) => self.lock().note_error(format!("UDP receive: {e}")),
                },
            }
        }
        let result = self.peer.close();
        self.note(result, "close");
        self.drain().await;
    }

    fn obey(&mut self, command: Command) {
        match command {
            Command::SendPli => {
                let result = self.peer.send_pli(Instant::now());
                self.note(result, "sending PLI");
            }
            Command::SetLayerSending(layer, on) => {
                let known = self
                    .peer
                    .simulcast_mut()
                    .is_some_and(|s| s.set_layer_sending(layer, on));
                if !known {
                    let error = format!("no simulcast layer {layer} to stop or resume");
                    self.lock().note_error(error);
                }
            }
        }
    }

    /// Sends what the peer wants sent and records what it tells.
    async fn drain(&mut self) {
        while let Some(t) = self.peer.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.data, t.to).await {
                self.lock().note_error(format!("UDP send to {}: {e}", t.to));
            }
        }
        let publisher = self.peer.is_publisher();
        while let Some(event) = self.peer.poll_event() {
            let mut record = self.lock();
            match event {
                PeerEvent::State(state) => {
                    record.states.push((Instant::now(), state));
                    let _ = self.state_tx.send(state);
                }
                PeerEvent::Rtp { kind, .. } if publisher => {
                    record.note_error(format!("the publisher received {kind:?} RTP"));
                }
                PeerEvent::Rtp {
                    kind, at, packet, ..
                } => {
                    record
                        .received
                        .push(ReceivedPacket::inspect(kind, at, &packet));
                }
                PeerEvent::KeyframeRequest { kind, at } => {
                    record.keyframe_requests.push(KeyframeRequest { kind, at });
                }
                PeerEvent::LayerKeyframeRequest { layer, at } => {
                    record
                        .layer_keyframe_requests
                        .push(LayerKeyframeRequest { layer, at });
                }
                PeerEvent::Sent(packet) => record.sent.push(packet),
                PeerEvent::SendFailed { kind, error } => {
                    record.note_error(format!("sending {kind:?}: {error}"));
                }
            }
        }
    }

    fn note<E: std::fmt::Display>(&self, result: Result<(), E>, what: &str) {
        if let Err(e) = result {
            self.lock().note_error(format!("{what}: {e}"));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}
