//! A simulcast broadcaster for end-to-end tests: three layers (rids q, h, f), each its own SSRC,
//! sequence numbers, timestamps and stamped synthetic payloads, sent to a real server over UDP.
//!
//! The client peer's own sender offers one video stream, so its offer is rewritten into a
//! simulcast one (RFC 8853: the video section's SSRC lines out; MID/RID extmaps, `a=rid:<id>
//! send` lines and `a=simulcast:send` in), and each layer's packets go out through the peer's
//! SRTP with MID and RID header extensions, as a browser sends them. Audio goes out once, from
//! the lowest layer's source. A keyframe request naming a layer's SSRC makes that layer send a
//! keyframe. This is the smallest such publisher the relay tests need; the core simulation has
//! the same one for its sans-IO world.

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use golive_client::peer::random_u32;
use golive_client::{
    ClientPeer, Clock, MediaKind, MediaPlan, Numbering, PayloadTypes, PeerConfig, PeerEvent, Role,
    SyntheticPacket, SyntheticSource, VideoCodec,
};
use rtc::peer_connection::state::RTCPeerConnectionState;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{CONNECT_TIMEOUT, GoliveServer, SignalClient, publish_message};

/// The rids of the layers, lowest first, as browsers name them.
pub const RIDS: [&str; 3] = ["q", "h", "f"];
/// Video payload bytes per packet of each layer: a keyframe is three packets, a delta frame one.
pub const LAYER_PACKET_BYTES: [usize; 3] = [200, 500, 1000];
/// Header extension ids for MID and RID (RFC 8852), apart from those the client's offer uses.
const MID_EXT_ID: u8 = 9;
const RID_EXT_ID: u8 = 10;
const UDP_BUFFER_BYTES: usize = 2048;
const IDLE_WAKEUP: Duration = Duration::from_millis(100);

/// What one layer sent and was asked.
#[derive(Debug, Clone)]
pub struct LayerRecord {
    /// The id stamped into every payload of the layer's source.
    pub source_id: u32,
    pub ssrc: u32,
    /// Its video packets as sent (payloads dropped: the stamps say what they were).
    pub sent: Vec<SyntheticPacket>,
    /// The video payload bytes it sent.
    pub payload_bytes: u64,
    /// When a keyframe request naming the layer's SSRC arrived.
    pub keyframe_requests: Vec<Instant>,
}

struct Layer {
    rid: &'static str,
    ssrc: u32,
    source: SyntheticSource,
    /// Stopped (as a browser stops an upper layer its uplink cannot carry), with the sequence
    /// number to resume at.
    paused: Option<u16>,
}

enum Command {
    SetSending(usize, bool),
}

/// A simulcast broadcaster whose loop runs on a tokio task; dropped, it stops.
pub struct SimulcastPublisher {
    pub signal: SignalClient,
    record: Arc<Mutex<Vec<LayerRecord>>>,
    commands: mpsc::UnboundedSender<Command>,
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for SimulcastPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulcastPublisher").finish_non_exhaustive()
    }
}

/// Rewrites a client publisher's offer into a simulcast one; returns it and the video mid.
fn simulcast_offer(offer: &str) -> Result<(String, String)> {
    let lines = || {
        let mut s = format!(
            "a=extmap:{MID_EXT_ID} urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
             a=extmap:{RID_EXT_ID} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
        );
        for rid in RIDS {
            s += &format!("a=rid:{rid} send\r\n");
        }
        s + &format!("a=simulcast:send {}\r\n", RIDS.join(";"))
    };
    let mut out = String::new();
    let mut in_video = false;
    let mut mid = None;
    for line in offer.lines() {
        if line.starts_with("m=") {
            if in_video {
                out += &lines();
            }
            in_video = line.starts_with("m=video");
        }
        if in_video {
            if line.starts_with("a=ssrc:") || line.starts_with("a=ssrc-group:") {
                continue;
            }
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_owned());
            }
        }
        out += line;
        out += "\r\n";
    }
    if in_video {
        out += &lines();
    }
    Ok((out, mid.context("the offer has no video mid")?))
}

impl SimulcastPublisher {
    /// Publishes `stream` on `server` and waits until the media connection is up.
    pub async fn publish(server: &GoliveServer, stream: &str) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let clock = Clock::system();
        let gop_frames = 15;
        let base = MediaPlan {
            video_fps: 15,
            gop_frames,
            keyframe_bytes: 3 * LAYER_PACKET_BYTES[0],
            delta_frame_bytes: LAYER_PACKET_BYTES[0],
            max_payload_bytes: LAYER_PACKET_BYTES[0],
            audio_payload_bytes: 100,
        };
        // The peer's own source stays silent: the layers send instead.
        let mut own = SyntheticSource::new(random_u32(), base, clock);
        own.set_sending(false);
        let audio_ssrc = random_u32();
        let config = PeerConfig {
            video_codec: VideoCodec::Vp8,
            ..PeerConfig::default()
        };
        let role = Role::Publisher {
            video_ssrc: random_u32(),
            audio_ssrc,
            source: own,
        };
        let mut peer = ClientPeer::new(Instant::now(), socket.local_addr()?, &config, role)?;
        let (offer, mid) = simulcast_offer(peer.offer_sdp())?;
        let mut signal = SignalClient::connect(&server.ws_url()).await?;
        signal.send(&publish_message(stream, &offer)).await?;
        let answer = signal.expect_answer().await?;
        peer.accept_answer(Instant::now(), &answer)
            .context("applying the server's answer")?;
        let layers: Vec<Layer> = RIDS
            .iter()
            .enumerate()
            .map(|(i, rid)| {
                let bytes = LAYER_PACKET_BYTES[i];
                let plan = MediaPlan {
                    keyframe_bytes: 3 * bytes,
                    delta_frame_bytes: bytes,
                    max_payload_bytes: bytes,
                    ..base
                };
                // Unrelated numbers and clocks per layer, as an encoder's streams have.
                let numbering = Numbering {
                    video_seq: 1000 + 20_000 * i as u16,
                    audio_seq: 7,
                    video_ts: 5_000_000 * i as u32,
                    audio_ts: 0,
                };
                Layer {
                    rid,
                    ssrc: random_u32(),
                    source: SyntheticSource::with_numbering(random_u32(), plan, clock, numbering),
                    paused: None,
                }
            })
            .collect();
        let record = Arc::new(Mutex::new(
            layers
                .iter()
                .map(|l| LayerRecord {
                    source_id: l.source.id(),
                    ssrc: l.ssrc,
                    sent: Vec::new(),
                    payload_bytes: 0,
                    keyframe_requests: Vec::new(),
                })
                .collect(),
        ));
        let (state_tx, mut state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (stop, stop_rx) = oneshot::channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let io = Io {
            peer,
            socket,
            layers,
            mid,
            audio_ssrc,
            record: record.clone(),
            state_tx,
            connected: false,
        };
        tokio::spawn(io.run(stop_rx, commands_rx));
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            state_rx.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await;
        if !matches!(connected, Ok(Ok(_))) {
            bail!("the simulcast publisher did not connect within {CONNECT_TIMEOUT:?}");
        }
        Ok(Self {
            signal,
            record,
            commands,
            _stop: stop,
        })
    }

    /// What every layer sent and was asked so far, lowest first.
    pub fn snapshot(&self) -> Vec<LayerRecord> {
        self.lock().clone()
    }

    /// Stops or resumes one layer, as a browser does: it resumes where its sequence numbers
    /// stopped, with a keyframe.
    pub fn set_layer_sending(&self, layer: usize, on: bool) -> Result<()> {
        self.commands
            .send(Command::SetSending(layer, on))
            .map_err(|_| anyhow!("the publisher's loop has ended"))
    }

    /// Waits for a keyframe request naming `layer`'s SSRC that came at or after `since`.
    pub async fn wait_keyframe_request(
        &self,
        layer: usize,
        since: Instant,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.lock()[layer]
                .keyframe_requests
                .iter()
                .any(|t| *t >= since)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("no keyframe request for layer {layer} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<LayerRecord>> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Io {
    peer: ClientPeer,
    socket: UdpSocket,
    layers: Vec<Layer>,
    mid: String,
    audio_ssrc: u32,
    record: Arc<Mutex<Vec<LayerRecord>>>,
    state_tx: watch::Sender<RTCPeerConnectionState>,
    connected: bool,
}

impl Io {
    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut buf = vec![0u8; UDP_BUFFER_BYTES];
        loop {
            let now = Instant::now();
            self.send_media(now);
            self.drain(now).await;
            let deadline = self
                .layers
                .iter()
                .filter(|_| self.connected)
                .filter_map(|l| l.source.poll_timeout())
                .chain(self.peer.poll_timeout())
                .min()
                .unwrap_or(now + IDLE_WAKEUP)
                .min(now + IDLE_WAKEUP);
            tokio::select! {
                biased;
                _ = &mut stop => break,
                Some(Command::SetSending(i, on)) = commands.recv() => {
                    if let Some(l) = self.layers.get_mut(i) {
                        match (on, l.paused) {
                            (false, None) => l.paused = Some(l.source.next_video_seq()),
                            (true, Some(seq)) => {
                                l.paused = None;
                                l.source.set_next_video_seq(seq);
                                l.source.request_keyframe();
                            }
                            _ => {}
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.max(now).into()) => {
                    let _ = self.peer.handle_timeout(Instant::now());
                }
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        let data = BytesMut::from(&buf[..n]);
                        let _ = self.peer.handle_datagram(Instant::now(), from, data);
                    }
                }
            }
        }
        let _ = self.peer.close();
        self.drain(Instant::now()).await;
    }

    async fn drain(&mut self, now: Instant) {
        while let Some(t) = self.peer.poll_transmit() {
            let _ = self.socket.send_to(&t.data, t.to).await;
        }
        while let Some(ev) = self.peer.poll_event() {
            if let PeerEvent::State(s) = ev {
                self.connected |= s == RTCPeerConnectionState::Connected;
                let _ = self.state_tx.send(s);
            }
        }
        let asked = self.peer.take_keyframe_request_ssrcs();
        if asked.is_empty() {
            return;
        }
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        for ssrc in asked {
            if let Some(i) = self.layers.iter().position(|l| l.ssrc == ssrc) {
                self.layers[i].source.request_keyframe();
                record[i].keyframe_requests.push(now);
            }
        }
    }

    /// Every layer's media that is due: video with its SSRC and MID/RID extensions, and the
    /// lowest layer's audio.
    fn send_media(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        let pt = PayloadTypes::default();
        let mut batch = Vec::new();
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.source.start(now);
            if layer.source.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            batch.clear();
            layer.source.produce(now, &mut batch);
            for p in batch.drain(..) {
                let mut header = rtc::rtp::Header {
                    version: 2,
                    marker: p.marker,
                    sequence_number: p.seq,
                    timestamp: p.ts,
                    ..Default::default()
                };
                match p.kind {
                    MediaKind::Video if layer.paused.is_none() => {
                        header.payload_type = pt.vp8;
                        header.ssrc = layer.ssrc;
                        let mid = Bytes::from(self.mid.clone());
                        let rid = Bytes::from_static(layer.rid.as_bytes());
                        if header.set_extension(MID_EXT_ID, mid).is_err()
                            || header.set_extension(RID_EXT_ID, rid).is_err()
                        {
                            continue;
                        }
                    }
                    MediaKind::Audio if i == 0 => {
                        header.payload_type = pt.opus;
                        header.ssrc = self.audio_ssrc;
                    }
                    _ => continue,
                }
                let packet = rtc::rtp::Packet {
                    header,
                    payload: p.payload.clone(),
                };
                if self.peer.send_raw_rtp(now, packet).is_ok() && p.kind == MediaKind::Video {
                    record[i].payload_bytes += p.payload.len() as u64;
                    let mut sent = p;
                    sent.payload = Bytes::new();
                    record[i].sent.push(sent);
                }
            }
        }
    }
}
