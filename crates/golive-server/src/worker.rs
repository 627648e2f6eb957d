//! Media workers: one OS thread each, owning one UDP socket and one sans-IO [`Sfu`].
//!
//! Signalling sessions talk to a worker through its command channel; the worker tells a
//! session about its peer (connected, failed) through the session's event channel. A
//! broadcaster's packets reach viewers on other workers as `Arc<SourcePacket>` through a
//! bounded channel per worker: shared, never copied, and dropped (counted) rather than
//! queued without bound when a worker falls behind.

use golive_proto::StreamName;
use golive_sfu::{
    Answer, MediaOptions, Output, PeerId, Sfu, SfuConfig, SfuError, SfuStats, SourcePacket,
    SrtpPolicy, StreamMedia,
};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::session::SessionEvent;

/// Packets from other workers waiting for this one; beyond this they are dropped.
const MEDIA_QUEUE_PACKETS: usize = 4096;
/// Commands from signalling waiting for this worker.
const COMMAND_QUEUE: usize = 1024;
/// Largest datagram read from the socket.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read in one wake before commands and timers get their turn.
const MAX_READS_PER_WAKE: usize = 256;
/// What these many datagrams produced is sent together: a lean viewer's packets of one read
/// batch (a frame's, from a bursting publisher) leave in one GSO send, and the first of them
/// waits for at most this many fan-outs.
const READS_PER_FLUSH: usize = 8;
/// Socket buffers asked for (the kernel caps them at net.core.rmem_max / wmem_max). The default
/// ~208 KiB overflowed while one broadcaster packet was being fanned out to hundreds of viewers,
/// and every viewer then lost the packets dropped (BENCHMARKS.md).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// The worker wakes at least this often even when nothing is due.
const IDLE_WAKE: Duration = Duration::from_secs(1);

pub type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

pub enum Command {
    Publish {
        id: PeerId,
        stream: StreamName,
        offer: String,
        events: mpsc::UnboundedSender<SessionEvent>,
        reply: Reply<Answer>,
    },
    Watch {
        id: PeerId,
        stream: StreamName,
        media: Arc<StreamMedia>,
        offer: String,
        events: mpsc::UnboundedSender<SessionEvent>,
        reply: Reply<Answer>,
    },
    Candidate {
        id: PeerId,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
        reply: Reply<()>,
    },
    Remove {
        id: PeerId,
    },
    /// The worker's totals, for `/metrics`.
    Stats {
        reply: oneshot::Sender<WorkerStats>,
    },
}

/// A worker's totals since it started.
#[derive(Debug, Default, Clone)]
pub struct WorkerStats {
    pub sfu: SfuStats,
    pub datagrams_in: u64,
    pub bytes_in: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub datagrams_send_failed: u64,
    pub media_queue_dropped: u64,
    pub peers_connected: usize,
    pub peers_connecting: usize,
}

/// Messages between workers.
enum Peer2Peer {
    Media(Arc<SourcePacket>),
    KeyframeRequest(StreamName),
}

/// The handle signalling uses to reach a worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub index: usize,
    pub addr: SocketAddr,
    commands: mpsc::Sender<Command>,
}

impl WorkerHandle {
    pub async fn send(&self, cmd: Command) -> Result<(), SfuError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| SfuError::Internal("media worker stopped".into()))
    }

    /// Sends the command `make` builds around a reply channel, and waits for the reply.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await
            .unwrap_or_else(|_| Err(SfuError::Internal("worker dropped a reply".into())))
    }

    pub async fn stats(&self) -> Option<WorkerStats> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats { reply }).await.ok()?;
        rx.await.ok()
    }
}

/// Binds every worker's socket and starts their threads.
pub fn start_workers(
    count: usize,
    bind_ip: std::net::IpAddr,
    first_port: u16,
    advertised_ip: std::net::IpAddr,
    srtp: SrtpPolicy,
    media: MediaOptions,
) -> io::Result<Vec<WorkerHandle>> {
    let mut sockets = Vec::with_capacity(count);
    for i in 0..count {
        let port = if first_port == 0 {
            0
        } else {
            first_port.checked_add(i as u16).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "UDP port range overflows 65535",
                )
            })?
        };
        let socket = bind_media_socket(SocketAddr::new(bind_ip, port))?;
        sockets.push(socket);
    }
    let mut handles = Vec::with_capacity(count);
    let mut media_txs = Vec::with_capacity(count);
    let mut media_rxs = Vec::with_capacity(count);
    let mut cmd_rxs = Vec::with_capacity(count);
    for (i, socket) in sockets.iter().enumerate() {
        let (ctx, crx) = mpsc::channel(COMMAND_QUEUE);
        let (mtx, mrx) = mpsc::channel(MEDIA_QUEUE_PACKETS);
        let port = socket.local_addr()?.port();
        handles.push(WorkerHandle {
            index: i,
            addr: SocketAddr::new(advertised_ip, port),
            commands: ctx,
        });
        media_txs.push(mtx);
        media_rxs.push(mrx);
        cmd_rxs.push(crx);
    }
    for (((i, socket), crx), mrx) in sockets.into_iter().enumerate().zip(cmd_rxs).zip(media_rxs) {
        let others: Vec<mpsc::Sender<Peer2Peer>> = media_txs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, tx)| tx.clone())
            .collect();
        let config = SfuConfig {
            advertised_addr: handles[i].addr,
            srtp,
            share_media: count > 1,
        };
        let media = media.clone();
        std::thread::Builder::new()
            .name(format!("golive-worker-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                rt.block_on(async move {
                    let socket = match UdpSocket::from_std(socket) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(worker = i, "cannot register UDP socket: {e}");
                            return;
                        }
                    };
                    Worker {
                        index: i,
                        sfu: Sfu::with_options(config, media),
                        socket,
                        sessions: HashMap::new(),
                        connected: HashSet::new(),
                        others,
                        stats: WorkerStats::default(),
                        gso: true,
                        failed_batches: Vec::new(),
                    }
                    .run(crx, mrx)
                    .await;
                });
            })?;
    }
    Ok(handles)
}

struct Worker {
    index: usize,
    sfu: Sfu,
    socket: UdpSocket,
    /// Where to tell each peer's session about it.
    sessions: HashMap<PeerId, mpsc::UnboundedSender<SessionEvent>>,
    /// Peers whose ICE and DTLS are up.
    connected: HashSet<PeerId>,
    others: Vec<mpsc::Sender<Peer2Peer>>,
    /// Socket-level totals (the SFU keeps the rest).
    stats: WorkerStats,
    /// The kernel takes UDP GSO sends (cleared at the first refusal).
    gso: bool,
    /// Viewers a batch could not be sent to, reported once the batches are drained.
    failed_batches: Vec<PeerId>,
}

impl Worker {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut media: mpsc::Receiver<Peer2Peer>,
    ) {
        tracing::debug!(worker = self.index, addr = ?self.socket.local_addr().ok(), "worker started");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let now = Instant::now();
            let deadline = self
                .sfu
                .poll_timeout()
                .unwrap_or(now + IDLE_WAKE)
                .min(now + IDLE_WAKE);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.on_datagram(from, &buf[..n]);
                        // Take what else is queued before the next timeout scan, sending what
                        // every few datagrams produced: a lean viewer's packets from them leave
                        // in one GSO send, and latency stays flat.
                        for i in 1..=MAX_READS_PER_WAKE {
                            let Ok((n, from)) = self.socket.try_recv_from(&mut buf) else {
                                break;
                            };
                            if i % READS_PER_FLUSH == 0 {
                                self.flush();
                            }
                            self.on_datagram(from, &buf[..n]);
                        }
                    }
                    Err(e) => {
                        // ICMP port unreachable from a vanished peer shows up here on Linux.
                        tracing::trace!(worker = self.index, "recv_from: {e}");
                    }
                },
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    None => break,
                },
                Some(m) = media.recv() => {
                    let now = Instant::now();
                    match m {
                        Peer2Peer::Media(p) => self.sfu.handle_media(now, &p),
                        Peer2Peer::KeyframeRequest(s) => self.sfu.handle_keyframe_request(now, &s),
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.sfu.handle_timeout(Instant::now());
                }
            }
            self.flush();
        }
        tracing::debug!(worker = self.index, "worker stopped");
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        self.sfu.handle_datagram(Instant::now(), from, data);
    }

    fn handle_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Publish {
                id,
                stream,
                offer,
                events,
                reply,
            } => {
                let r = self.sfu.add_publisher(now, id, stream, &offer);
                if r.is_ok() {
                    self.sessions.insert(id, events);
                }
                let _ = reply.send(r);
            }
            Command::Watch {
                id,
                stream,
                media,
                offer,
                events,
                reply,
            } => {
                let r = self.sfu.add_viewer(now, id, stream, &media, &offer);
                if r.is_ok() {
                    self.sessions.insert(id, events);
                }
                let _ = reply.send(r);
            }
            Command::Candidate {
                id,
                candidate,
                sdp_mid,
                sdp_mline_index,
                reply,
            } => {
                let _ = reply.send(self.sfu.add_remote_candidate(
                    id,
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                ));
            }
            Command::Remove { id } => {
                self.sfu.remove_peer(id);
                self.sessions.remove(&id);
                self.connected.remove(&id);
            }
            Command::Stats { reply } => {
                let mut stats = self.stats.clone();
                stats.sfu = self.sfu.stats().clone();
                stats.peers_connected = self.connected.len();
                stats.peers_connecting = self.sfu.peer_count().saturating_sub(self.connected.len());
                let _ = reply.send(stats);
            }
        }
    }

    /// Sends what the SFU produced and acts on its outputs.
    fn flush(&mut self) {
        while let Some(t) = self.sfu.poll_transmit() {
            match self.socket.try_send_to(&t.data, t.to) {
                Ok(n) => {
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += n as u64;
                }
                Err(e) => {
                    // A full socket buffer is loss, like any on the network; never block the
                    // worker (and every other peer on it) for one destination. The SFU makes a
                    // viewer that keeps failing skip to a keyframe.
                    self.stats.datagrams_send_failed += 1;
                    self.sfu.handle_send_failed(Instant::now(), t.peer);
                    tracing::trace!(worker = self.index, to = %t.to, "send_to: {e}");
                }
            }
        }
        let mut failed = std::mem::take(&mut self.failed_batches);
        while let Some(b) = self.sfu.poll_batch() {
            let segments = b.data.len().div_ceil(b.segment_size.max(1)) as u64;
            match send_batch(&self.socket, &mut self.gso, &b) {
                Ok(()) => {
                    self.stats.datagrams_out += segments;
                    self.stats.bytes_out += b.data.len() as u64;
                }
                Err(e) => {
                    // As for a single datagram: loss, never a wait.
                    self.stats.datagrams_send_failed += segments;
                    failed.push(b.peer);
                    tracing::trace!(worker = self.index, to = %b.to, "batch send: {e}");
                }
            }
        }
        for peer in failed.drain(..) {
            self.sfu.handle_send_failed(Instant::now(), peer);
        }
        self.failed_batches = failed;
        while let Some(out) = self.sfu.poll_output() {
            match out {
                Output::Connected(id) => {
                    self.connected.insert(id);
                    if let Some(tx) = self.sessions.get(&id) {
                        let _ = tx.send(SessionEvent::PeerConnected(id));
                    }
                }
                Output::Failed(id) => {
                    self.connected.remove(&id);
                    if let Some(tx) = self.sessions.remove(&id) {
                        let _ = tx.send(SessionEvent::PeerFailed(id));
                    }
                }
                Output::Media(p) => self.share_with_others(|| Peer2Peer::Media(p.clone())),
                Output::VideoStarted(id) => {
                    if let Some(tx) = self.sessions.get(&id) {
                        let _ = tx.send(SessionEvent::VideoStarted(id));
                    }
                }
                Output::KeyframeRequest(s) => {
                    self.share_with_others(|| Peer2Peer::KeyframeRequest(s.clone()))
                }
            }
        }
    }

    fn share_with_others(&mut self, msg: impl Fn() -> Peer2Peer) {
        for tx in &self.others {
            if tx.try_send(msg()).is_err() {
                self.stats.media_queue_dropped += 1;
            }
        }
    }
}

/// Sends one lean viewer's batch: one `sendmsg` with a `UDP_SEGMENT` control message (the kernel
/// cuts it into `segment_size` datagrams), or one datagram per segment where GSO is refused.
fn send_batch(socket: &UdpSocket, gso: &mut bool, b: &golive_sfu::Batch<'_>) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
    use std::os::fd::AsRawFd;
    if *gso && b.data.len() > b.segment_size {
        let addr = SockaddrStorage::from(b.to);
        let segment = u16::try_from(b.segment_size).unwrap_or(u16::MAX);
        let iov = [io::IoSlice::new(b.data)];
        let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
        match sendmsg(
            socket.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            Some(&addr),
        ) {
            Ok(_) => return Ok(()),
            // No GSO here (kernel, device or socket type): send one by one from now on.
            Err(
                nix::errno::Errno::EIO | nix::errno::Errno::EINVAL | nix::errno::Errno::ENOPROTOOPT,
            ) => {
                tracing::info!("UDP GSO refused; sending one datagram per syscall");
                *gso = false;
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    for d in b.data.chunks(b.segment_size.max(1)) {
        socket.try_send_to(d, b.to)?;
    }
    Ok(())
}

/// Binds a worker's UDP socket, non-blocking, with large buffers.
fn bind_media_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (what, r) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)),
    ] {
        if let Err(e) = r {
            tracing::warn!("cannot enlarge the UDP {what} buffer: {e}");
        }
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    let got = socket.recv_buffer_size().unwrap_or(0);
    if got < SOCKET_BUFFER_BYTES {
        tracing::info!(
            bytes = got,
            "UDP receive buffer smaller than asked; raise net.core.rmem_max for many viewers"
        );
    }
    Ok(socket.into())
}
