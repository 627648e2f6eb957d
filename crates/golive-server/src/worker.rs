//! Media workers: one OS thread each, owning one UDP socket and one sans-IO [`Sfu`].
//!
//! Signalling sessions talk to a worker through its command channel; the worker tells a peer's
//! owner what became of the peer ([`PeerEvent`]: connected, failed) through the [`PeerEvents`]
//! channel the owner gave it with the peer. A
//! broadcaster's packets reach viewers on other workers as `Arc<SourcePacket>` through a
//! bounded channel per worker: shared, never copied, and dropped (counted) rather than
//! queued without bound when a worker falls behind.
//!
//! Supervision: a panic in a worker (a bug, say in the WebRTC stack on a crafted datagram) ends
//! that worker's peers and nothing else. The thread catches it, tells every session it served
//! (`error` `internal`, then the usual loss of its media connection), and starts the worker again
//! empty on the same socket, with the same channels, so the port in every answer stays right and
//! the other workers' queues to it stay connected. While it is down, [`WorkerHandle::is_alive`]
//! says so: new peers go to the other workers and `/healthz` answers 503.

use golive_proto::StreamName;
use golive_sfu::bwe::{Preference, SwitchReason};
use golive_sfu::{
    Answer, Layer, MediaOptions, Output, PeerId, Sfu, SfuConfig, SfuError, SfuStats, SourcePacket,
    SrtpPolicy, StreamMedia,
};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::recording::RecordingTaps;

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
/// A worker that panicked is started again after this pause, doubled for each panic that comes
/// sooner than [`RESTART_STABLE`] after the last restart, up to [`RESTART_PAUSE_MAX`]. A fresh
/// worker holds no peers, so a quick restart loses nothing; the pause only keeps a worker that
/// panics again at once (on the same datagram, resent) from spinning and flooding the log.
const RESTART_PAUSE_MIN: Duration = Duration::from_millis(50);
const RESTART_PAUSE_MAX: Duration = Duration::from_secs(5);
/// A worker that ran this long before panicking starts again after the shortest pause.
const RESTART_STABLE: Duration = Duration::from_secs(60);

pub type Reply<T> = oneshot::Sender<Result<T, SfuError>>;

/// What became of a peer, for whoever added it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// ICE and DTLS are up: media flows.
    Connected(PeerId),
    /// The viewer's first video went out: its time to first frame ends.
    VideoStarted(PeerId),
    /// The media connection failed, went silent or never came up; the peer is gone.
    Failed(PeerId),
    /// The worker serving the peer panicked (a bug) and starts again empty: the peer is gone.
    WorkerFailed(PeerId),
    /// The viewer's video moved to simulcast layer `layer` of the `layers` its stream has sent
    /// so far, for `reason` (`None`: its video stopped, audio only).
    LayerChanged {
        peer: PeerId,
        layer: Option<Layer>,
        layers: usize,
        reason: SwitchReason,
    },
}

impl PeerEvent {
    pub fn peer(self) -> PeerId {
        match self {
            PeerEvent::Connected(id)
            | PeerEvent::VideoStarted(id)
            | PeerEvent::Failed(id)
            | PeerEvent::WorkerFailed(id)
            | PeerEvent::LayerChanged { peer: id, .. } => id,
        }
    }
}

/// Where a worker delivers one peer's events. Unbounded, yet bounded in practice: each is
/// reported once per peer, and a peer's sender is dropped with its `Failed` or `WorkerFailed`.
/// Only `LayerChanged` repeats, once per switch: a viewer switches only when its preference (a
/// client message, under the per-connection rate limit), its bandwidth estimate (which holds a
/// second or more before it moves) or the broadcaster's layers change, and then only at a
/// keyframe.
pub type PeerEvents = mpsc::UnboundedSender<PeerEvent>;

pub enum Command {
    Publish {
        id: PeerId,
        stream: StreamName,
        offer: String,
        events: PeerEvents,
        reply: Reply<Answer>,
    },
    /// A viewer of `stream`, or (`relay`) another node that pulls `stream` from this one: a
    /// relay peer, sent every simulcast layer.
    Watch {
        id: PeerId,
        stream: StreamName,
        media: Arc<StreamMedia>,
        offer: String,
        relay: bool,
        events: PeerEvents,
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
    /// A viewer's own ceiling on its simulcast layer.
    Quality {
        id: PeerId,
        preference: Preference,
        reply: Reply<()>,
    },
    /// A recording lost packets: ask the stream's broadcaster (if here) for a keyframe.
    KeyframeRequest {
        stream: StreamName,
    },
    /// The worker's totals, for `/metrics`.
    Stats {
        reply: oneshot::Sender<WorkerStats>,
    },
}

/// A worker's totals since it (last) started.
#[derive(Debug, Default, Clone)]
pub struct WorkerStats {
    /// How many times the worker had been restarted when these were taken: totals start again
    /// from zero at each restart.
    pub incarnation: u64,
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
    KeyframeRequest(StreamName, Option<Layer>),
}

/// What the worker thread publishes about itself, read by signalling and `/healthz` without
/// asking the worker (which may be busy, or down).
#[derive(Debug, Default)]
struct Status {
    /// Between a panic and the restart.
    down: AtomicBool,
    restarts: AtomicU64,
    /// Media peers on the worker (connecting or connected).
    peers: AtomicUsize,
}

/// Whether a worker can take peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Alive,
    /// It panicked; it is started again empty in a moment.
    Restarting,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Alive => "alive",
            WorkerState::Restarting => "restarting",
        }
    }
}

/// One worker as `/healthz` and `/metrics` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHealth {
    pub index: usize,
    pub state: WorkerState,
    pub peers: usize,
    pub restarts: u64,
}

/// The handle signalling uses to reach a worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub index: usize,
    pub addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    status: Arc<Status>,
    /// The worker's queue of media from other workers, which a relay feeds too.
    media: mpsc::Sender<Peer2Peer>,
    /// Where keyframe requests for streams without a local broadcaster also go (relays).
    keyframe_listener: Arc<KeyframeListener>,
}

/// Cluster mode: told of every keyframe request a worker makes for a stream whose broadcaster
/// is not on any worker of this node (it may be a relayed stream). Set once.
pub type KeyframeListener = std::sync::OnceLock<mpsc::UnboundedSender<(StreamName, Option<Layer>)>>;

impl WorkerHandle {
    pub fn state(&self) -> WorkerState {
        if self.status.down.load(Ordering::Relaxed) {
            WorkerState::Restarting
        } else {
            WorkerState::Alive
        }
    }

    pub fn is_alive(&self) -> bool {
        self.state() == WorkerState::Alive
    }

    pub fn health(&self) -> WorkerHealth {
        WorkerHealth {
            index: self.index,
            state: self.state(),
            peers: self.status.peers.load(Ordering::Relaxed),
            restarts: self.status.restarts.load(Ordering::Relaxed),
        }
    }

    pub async fn send(&self, cmd: Command) -> Result<(), SfuError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| SfuError::Internal("media worker stopped".into()))
    }

    /// A handle to no worker thread, alive or down, for tests of how workers are chosen.
    #[cfg(test)]
    pub(crate) fn detached(index: usize, alive: bool) -> Self {
        let (commands, _) = mpsc::channel(1);
        let (media, _) = mpsc::channel(1);
        let status = Status::default();
        status.down.store(!alive, Ordering::Relaxed);
        Self {
            index,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            commands,
            status: Arc::new(status),
            media,
            keyframe_listener: Arc::default(),
        }
    }

    /// A packet of a stream this node relays from another node: the worker takes it as it
    /// takes a packet of a broadcaster on another worker (keyframe cache, NACK history,
    /// fan-out). False when the worker's queue is full: the packet is dropped, as loss.
    pub fn relay_media(&self, packet: Arc<SourcePacket>) -> bool {
        self.media.try_send(Peer2Peer::Media(packet)).is_ok()
    }

    /// Sets where keyframe requests for streams without a local broadcaster go (the same
    /// listener for every worker of the node; the first call wins).
    pub fn listen_keyframe_requests(&self, tx: mpsc::UnboundedSender<(StreamName, Option<Layer>)>) {
        let _ = self.keyframe_listener.set(tx);
    }

    /// Sends the command `make` builds around a reply channel, and waits for the reply.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply)).await?;
        rx.await
            .unwrap_or_else(|_| Err(SfuError::Internal("worker dropped a reply".into())))
    }

    /// Sends without waiting (from outside the runtime); a full queue drops the command.
    pub fn try_send(&self, cmd: Command) -> bool {
        self.commands.try_send(cmd).is_ok()
    }

    /// The worker's totals; `None` while it is down (it would answer only after the restart).
    pub async fn stats(&self) -> Option<WorkerStats> {
        if !self.is_alive() {
            return None;
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Stats { reply }).await.ok()?;
        rx.await.ok()
    }
}

/// Who besides the other workers takes what a worker shares.
#[derive(Default)]
pub struct Sharing {
    /// The recorder, tapping local broadcasters' packets.
    pub taps: Option<Arc<RecordingTaps>>,
    /// Cluster mode: relays feed the workers and hear their viewers' keyframe requests.
    pub relays: bool,
}

/// Binds every worker's socket and starts their threads.
pub fn start_workers(
    count: usize,
    bind_ip: std::net::IpAddr,
    first_port: u16,
    advertised_ip: std::net::IpAddr,
    srtp: SrtpPolicy,
    media: MediaOptions,
    sharing: Sharing,
) -> io::Result<Vec<WorkerHandle>> {
    let Sharing { taps, relays } = sharing;
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
    let keyframe_listener = Arc::new(KeyframeListener::new());
    for (i, socket) in sockets.iter().enumerate() {
        let (ctx, crx) = mpsc::channel(COMMAND_QUEUE);
        let (mtx, mrx) = mpsc::channel(MEDIA_QUEUE_PACKETS);
        let port = socket.local_addr()?.port();
        handles.push(WorkerHandle {
            index: i,
            addr: SocketAddr::new(advertised_ip, port),
            commands: ctx,
            status: Arc::new(Status::default()),
            media: mtx.clone(),
            keyframe_listener: keyframe_listener.clone(),
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
            // Recording taps the shared packets too, on the broadcaster's worker; a relay
            // needs the keyframe requests of streams whose broadcaster is on no worker here.
            share_media: count > 1 || taps.is_some() || relays,
        };
        let thread = WorkerThread {
            index: i,
            socket,
            config,
            media: media.clone(),
            others,
            commands: crx,
            from_others: mrx,
            status: handles[i].status.clone(),
            taps: taps.clone(),
            batch_path: if UDP_GSO_DISABLED.load(Ordering::Relaxed) {
                BatchPath::Mmsg
            } else {
                BatchPath::Gso
            },
            keyframe_listener: keyframe_listener.clone(),
        };
        std::thread::Builder::new()
            .name(format!("golive-worker-{i}"))
            .spawn(move || thread.supervise())?;
    }
    Ok(handles)
}

/// A test hook, compiled into debug builds only: with `--test-worker-panic <TOKEN>` (a hidden
/// flag that release builds do not have), a datagram whose payload is exactly `TOKEN` makes the
/// worker that reads it panic, as a crafted datagram that hit a bug would.
#[cfg(debug_assertions)]
pub static TEST_PANIC_TOKEN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Set before [`start_workers`] (`--no-udp-gso`): lean viewers' batches go by `sendmmsg` from
/// the start, as on a kernel that refuses GSO, so that path can be tested on one that takes it.
pub static UDP_GSO_DISABLED: AtomicBool = AtomicBool::new(false);

/// How a lean viewer's batch leaves the worker's socket. A worker starts at the top and moves
/// down at the first refusal, for good: the refusal is the kernel's, device's or socket's, and
/// every later send would meet it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchPath {
    /// One `sendmsg` with a `UDP_SEGMENT` control message: the kernel cuts the datagrams.
    Gso,
    /// One `sendmmsg` carrying every datagram of the batch: one syscall still, the kernel's
    /// work per datagram as for `send_to`.
    Mmsg,
    /// One `send_to` per datagram (no `sendmmsg` either).
    OneByOne,
}

/// Whether any worker has sent a batch by `sendmmsg` yet (it says so once in the log).
static MMSG_USED: AtomicBool = AtomicBool::new(false);

/// `sendmmsg` sends at most this many datagrams per call (a batch holds at most 64, the
/// kernel's UDP_MAX_SEGMENTS).
const MAX_MMSG: usize = 64;

/// Everything a worker thread keeps across restarts: its socket (so its port, which every
/// answer it gave names, stays), its channels, and its status.
struct WorkerThread {
    index: usize,
    socket: std::net::UdpSocket,
    config: SfuConfig,
    media: MediaOptions,
    others: Vec<mpsc::Sender<Peer2Peer>>,
    commands: mpsc::Receiver<Command>,
    from_others: mpsc::Receiver<Peer2Peer>,
    status: Arc<Status>,
    /// Where local broadcasters' packets go to be recorded (kept across restarts).
    taps: Option<Arc<RecordingTaps>>,
    /// What the socket was found to take, kept across restarts.
    batch_path: BatchPath,
    keyframe_listener: Arc<KeyframeListener>,
}

/// How one run of a worker ended.
enum Exit {
    /// Signalling dropped every handle: the server is going away.
    Stopped,
    Panicked(String),
}

impl WorkerThread {
    /// Runs the worker, and starts it again empty each time it panics, until the server stops.
    fn supervise(mut self) {
        // Zero until the first panic.
        let mut pause = Duration::ZERO;
        loop {
            let started = Instant::now();
            match self.run_once() {
                Exit::Stopped => break,
                Exit::Panicked(what) => {
                    let restarts = self.status.restarts.load(Ordering::Relaxed);
                    pause = if pause.is_zero() || started.elapsed() >= RESTART_STABLE {
                        RESTART_PAUSE_MIN
                    } else {
                        (pause * 2).min(RESTART_PAUSE_MAX)
                    };
                    tracing::error!(
                        worker = self.index,
                        restarts,
                        "media worker panicked ({what}); its peers were told, it starts again \
                         empty in {pause:?}"
                    );
                    std::thread::sleep(pause);
                    self.status.down.store(false, Ordering::Relaxed);
                }
            }
        }
        tracing::debug!(worker = self.index, "worker stopped");
    }

    /// One life of the worker: a fresh runtime and SFU on the kept socket.
    fn run_once(&mut self) -> Exit {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return self.failed(format!("cannot build its runtime: {e}")),
        };
        // Each life registers its own handle on the socket with its own runtime; the socket
        // itself (and its port) stays open across lives.
        let socket = match self
            .socket
            .try_clone()
            .and_then(|s| rt.block_on(async { UdpSocket::from_std(s) }))
        {
            Ok(s) => s,
            Err(e) => return self.failed(format!("cannot register its UDP socket: {e}")),
        };
        let mut worker = Worker {
            index: self.index,
            sfu: Sfu::with_options(self.config.clone(), self.media.clone()),
            socket,
            owners: HashMap::new(),
            connected: HashSet::new(),
            others: self.others.clone(),
            stats: WorkerStats {
                incarnation: self.status.restarts.load(Ordering::Relaxed),
                ..WorkerStats::default()
            },
            status: self.status.clone(),
            taps: self.taps.clone(),
            batch_path: self.batch_path,
            mmsg: nix::sys::socket::MultiHeaders::preallocate(MAX_MMSG, None),
            keyframe_listener: self.keyframe_listener.clone(),
            failed_batches: Vec::new(),
        };
        let (commands, from_others) = (&mut self.commands, &mut self.from_others);
        let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
            rt.block_on(worker.run(commands, from_others))
        }));
        self.batch_path = worker.batch_path;
        let exit = match ran {
            Ok(()) => Exit::Stopped,
            Err(panic) => {
                // Taken down first, so that no new peer is sent here while the owners are
                // told and the worker restarts.
                let exit = self.failed(panic_message(panic.as_ref()));
                worker.tell_owners_it_failed();
                exit
            }
        };
        self.status.peers.store(0, Ordering::Relaxed);
        // The SFU that panicked is dropped here; should dropping it panic too, it is the same
        // failure, and must not end the thread.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || {
            drop(worker);
            drop(rt);
        }));
        exit
    }

    /// Marks the worker down (until [`WorkerThread::supervise`] restarts it) and counts it.
    fn failed(&self, what: String) -> Exit {
        self.status.down.store(true, Ordering::Relaxed);
        self.status.restarts.fetch_add(1, Ordering::Relaxed);
        Exit::Panicked(what)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

struct Worker {
    index: usize,
    sfu: Sfu,
    socket: UdpSocket,
    /// Where to tell each peer's owner about it.
    owners: HashMap<PeerId, PeerEvents>,
    /// Peers whose ICE and DTLS are up.
    connected: HashSet<PeerId>,
    others: Vec<mpsc::Sender<Peer2Peer>>,
    /// Socket-level totals (the SFU keeps the rest).
    stats: WorkerStats,
    /// How lean viewers' batches are sent (see [`BatchPath`]).
    batch_path: BatchPath,
    /// `sendmmsg`'s message headers, made once.
    mmsg: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    /// Viewers a batch could not be sent to, reported once the batches are drained.
    failed_batches: Vec<PeerId>,
    status: Arc<Status>,
    /// Where local broadcasters' packets go to be recorded.
    taps: Option<Arc<RecordingTaps>>,
    keyframe_listener: Arc<KeyframeListener>,
}

impl Worker {
    async fn run(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        media: &mut mpsc::Receiver<Peer2Peer>,
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
                        Peer2Peer::KeyframeRequest(s, layer) => {
                            self.sfu.handle_keyframe_request(now, &s, layer)
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    self.sfu.handle_timeout(Instant::now());
                }
            }
            self.flush();
            let peers = self.sfu.peer_count();
            if peers != self.status.peers.load(Ordering::Relaxed) {
                self.status.peers.store(peers, Ordering::Relaxed);
            }
        }
    }

    /// After a panic: every peer's owner hears that the worker failed, which ends the peer as
    /// any lost connection does (a viewer's WHEP resource goes, a broadcaster's viewers wait for
    /// it for the grace period).
    fn tell_owners_it_failed(&mut self) {
        for (id, tx) in self.owners.drain() {
            let _ = tx.send(PeerEvent::WorkerFailed(id));
        }
        self.connected.clear();
    }

    fn on_datagram(&mut self, from: SocketAddr, data: &[u8]) {
        #[cfg(debug_assertions)]
        if TEST_PANIC_TOKEN.get().is_some_and(|t| t.as_slice() == data) {
            panic!(
                "test hook: a datagram from {from} asked worker {} to panic",
                self.index
            );
        }
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
                    self.owners.insert(id, events);
                }
                let _ = reply.send(r);
            }
            Command::Watch {
                id,
                stream,
                media,
                offer,
                relay,
                events,
                reply,
            } => {
                let r = if relay {
                    self.sfu.add_relay(now, id, stream, &media, &offer)
                } else {
                    self.sfu.add_viewer(now, id, stream, &media, &offer)
                };
                if r.is_ok() {
                    self.owners.insert(id, events);
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
                self.owners.remove(&id);
                self.connected.remove(&id);
            }
            Command::Quality {
                id,
                preference,
                reply,
            } => {
                let _ = reply.send(self.sfu.set_viewer_preference(now, id, preference));
            }
            Command::KeyframeRequest { stream } => {
                self.sfu.handle_keyframe_request(now, &stream, None)
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
            let segments = b.data.len().div_ceil(b.segment_size.max(1));
            let sent = send_batch(&self.socket, &mut self.batch_path, &mut self.mmsg, &b);
            let sent_segments = match &sent {
                Ok(n) => *n,
                Err(_) => 0,
            };
            self.stats.datagrams_out += sent_segments as u64;
            self.stats.bytes_out += (sent_segments * b.segment_size).min(b.data.len()) as u64;
            if sent_segments < segments {
                // As for a single datagram: loss, never a wait.
                self.stats.datagrams_send_failed += (segments - sent_segments) as u64;
                failed.push(b.peer);
                match sent {
                    Err(e) => tracing::trace!(worker = self.index, to = %b.to, "batch send: {e}"),
                    Ok(n) => tracing::trace!(
                        worker = self.index,
                        to = %b.to,
                        "batch send: {n} of {segments} datagrams went"
                    ),
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
                    self.tell(PeerEvent::Connected(id));
                }
                Output::Failed(id) => {
                    self.connected.remove(&id);
                    self.tell(PeerEvent::Failed(id));
                    self.owners.remove(&id);
                }
                Output::Media(p) => {
                    if let Some(taps) = &self.taps {
                        taps.tap(&p);
                    }
                    self.share_with_others(|| Peer2Peer::Media(p.clone()))
                }
                Output::VideoStarted(id) => self.tell(PeerEvent::VideoStarted(id)),
                Output::KeyframeRequest(s, layer) => {
                    if let Some(tx) = self.keyframe_listener.get() {
                        let _ = tx.send((s.clone(), layer));
                    }
                    self.share_with_others(|| Peer2Peer::KeyframeRequest(s.clone(), layer))
                }
            }
        }
        while let Some(c) = self.sfu.poll_layer_change() {
            let layers = self.sfu.viewer_stream_layers(c.peer).unwrap_or(0);
            self.tell(PeerEvent::LayerChanged {
                peer: c.peer,
                layer: c.layer,
                layers,
                reason: c.reason,
            });
        }
    }

    /// Tells the peer's owner; one that has gone away (its session ended) is no concern here.
    fn tell(&self, event: PeerEvent) {
        if let Some(tx) = self.owners.get(&event.peer()) {
            let _ = tx.send(event);
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

/// Sends one lean viewer's batch and returns how many of its datagrams went: one `sendmsg`
/// with a `UDP_SEGMENT` control message (the kernel cuts it into `segment_size` datagrams);
/// where GSO is refused, one `sendmmsg` of them all; where that is refused too, one `send_to`
/// each. A refusal moves `path` down for good (and this batch is sent the next way); a full
/// socket buffer is loss, as on the network.
fn send_batch(
    socket: &UdpSocket,
    path: &mut BatchPath,
    mmsg: &mut nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    b: &golive_sfu::Batch<'_>,
) -> io::Result<usize> {
    use nix::errno::Errno;
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmmsg, sendmsg};
    use std::os::fd::AsRawFd;
    let segment_size = b.segment_size.max(1);
    let segments = b.data.len().div_ceil(segment_size);
    let addr = SockaddrStorage::from(b.to);
    if *path == BatchPath::Gso && segments > 1 {
        let segment = u16::try_from(segment_size).unwrap_or(u16::MAX);
        let iov = [io::IoSlice::new(b.data)];
        let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
        match sendmsg(
            socket.as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::empty(),
            Some(&addr),
        ) {
            Ok(_) => return Ok(segments),
            // No GSO here (kernel, device or socket type).
            Err(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP) => {
                tracing::info!("UDP GSO refused; sending each batch by sendmmsg");
                *path = BatchPath::Mmsg;
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    if *path == BatchPath::Mmsg && segments > 1 {
        let mut sent = 0;
        let mut chunks = b.data.chunks(segment_size).peekable();
        while chunks.peek().is_some() {
            let mut iovs: [[io::IoSlice<'_>; 1]; MAX_MMSG] = [[io::IoSlice::new(&[])]; MAX_MMSG];
            let mut n = 0;
            for (iov, chunk) in iovs.iter_mut().zip(chunks.by_ref().take(MAX_MMSG)) {
                *iov = [io::IoSlice::new(chunk)];
                n += 1;
            }
            let addrs = [Some(addr); MAX_MMSG];
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                socket.as_raw_fd(),
                mmsg,
                &iovs[..n],
                &addrs[..n],
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(results) => {
                    let went = results.count();
                    if !MMSG_USED.swap(true, Ordering::Relaxed) {
                        tracing::info!(
                            "first lean viewer batch sent by sendmmsg ({went} datagrams)"
                        );
                    }
                    sent += went;
                    if went < n {
                        // The socket buffer filled: the rest is loss.
                        return Ok(sent);
                    }
                }
                Err(Errno::ENOSYS | Errno::EINVAL | Errno::EOPNOTSUPP) if sent == 0 => {
                    tracing::info!("sendmmsg refused; sending one datagram per syscall");
                    *path = BatchPath::OneByOne;
                    break;
                }
                Err(e) if sent == 0 => return Err(io::Error::from(e)),
                Err(_) => return Ok(sent),
            }
        }
        if *path == BatchPath::Mmsg {
            return Ok(sent);
        }
    }
    let mut sent = 0;
    for d in b.data.chunks(segment_size) {
        match socket.try_send_to(d, b.to) {
            Ok(_) => sent += 1,
            Err(e) if sent == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(sent)
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
