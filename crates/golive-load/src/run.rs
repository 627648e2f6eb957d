//! One load run: the publisher goes live, viewers join at the ramp rate and each stays for the
//! duration, a sampler reads the counters and `/proc` once a second, and at the end every
//! engine hands back its figures.

use anyhow::{Context, Result, bail};
use golive_client::peer::random_u32;
use golive_client::signal::{Closed, Incoming, connect_ws};
use golive_client::{
    Clock, FrameCounts, MediaPlan, Pacing, SignalClient, SignalError, SrtpOffer, http,
};
use golive_proto::{ClientMessage, EndReason, ErrorCode, QualityLayer, ServerMessage};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::{
    EngineHandle, EngineReport, OfferInfo, PeerKey, PublisherMedia, PublisherReport, ViewerOptions,
    ViewerReport,
};
use crate::procfs;
use crate::stats::Histogram;

/// The publisher's key; viewers are numbered from 0.
const PUBLISHER_KEY: PeerKey = u64::MAX;
/// How long a signalling step or a media connection may take before the viewer counts as a
/// join failure.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After the publisher connects, before the first viewer: time for its first keyframe to
/// reach the server, so early viewers are not measured waiting for a keyframe that is not
/// there yet.
const PUBLISHER_HEAD_START: Duration = Duration::from_millis(500);
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// How a peer signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// golive's WebSocket protocol (`/ws`): answer, chat, hearts, viewer counts, `ended`.
    Ws,
    /// HTTP: WHEP for viewers (`POST /whep/<stream>`), WHIP for the publisher
    /// (`POST /whip/<stream>`); `DELETE` of the session's Location ends it.
    Http,
}

/// One server (node) of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// As given on the command line, for the report.
    pub name: String,
    pub ws_url: String,
    /// The server's `host:port` for WHIP and WHEP.
    pub http: String,
}

#[derive(Debug, Clone)]
pub struct Options {
    /// At least one. The publisher goes to the first (the origin of a cluster); viewers are
    /// spread over all of them, round-robin: viewer `i` goes to `nodes[i % nodes.len()]`.
    pub nodes: Vec<Node>,
    /// How viewers, and how the publisher, signal.
    pub viewer_protocol: Protocol,
    pub publisher_protocol: Protocol,
    /// Hearts and chat messages each viewer sends per second on its WebSocket (0: none).
    pub heart_rate: f64,
    pub chat_rate: f64,
    pub stream: String,
    pub viewers: usize,
    /// Viewers joining per second.
    pub ramp: f64,
    /// How long each viewer stays.
    pub duration: Duration,
    pub bitrate_bps: u64,
    pub gop: Duration,
    pub publish: bool,
    pub server_pid: Option<u32>,
    pub threads: usize,
    pub srtp: SrtpOffer,
    /// How the publisher's video frames leave it.
    pub pacing: Pacing,
    /// SO_RCVBUF of each viewer socket; `None` keeps the system default.
    pub recv_buffer: Option<usize>,
    pub progress: bool,
    /// The publisher sends three simulcast layers (f at `bitrate_bps`).
    pub simulcast: bool,
    /// VP8 temporal layers of the publisher's video (of each simulcast layer), 1 to 3.
    pub temporal_layers: u8,
    /// Viewers offer transport-cc and answer with TWCC feedback.
    pub viewer_twcc: bool,
    /// A token bucket of this many kbit/s in each viewer's receive path.
    pub viewer_kbps: Option<u64>,
}

impl Options {
    /// Where the publisher publishes.
    pub fn origin(&self) -> &Node {
        &self.nodes[0]
    }

    /// The index into `nodes` of viewer `key`'s server.
    pub fn node_index(&self, key: PeerKey) -> usize {
        (key % self.nodes.len() as PeerKey) as usize
    }

    pub fn node_of(&self, key: PeerKey) -> &Node {
        &self.nodes[self.node_index(key)]
    }
}

/// One reading of the counters and of `/proc`.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    /// Viewers between their answer and their leave.
    pub active: usize,
    pub connected: i64,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub lost: u64,
    pub join_lost: u64,
    pub server_cpu_ticks: Option<u64>,
    pub server_rss_kb: Option<u64>,
    pub own_cpu_ticks: Option<u64>,
    /// Frames and bytes all our signalling sockets received so far.
    pub ws_messages_in: u64,
    pub ws_bytes_in: u64,
}

/// What the steady window averaged.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowRates {
    pub server_cpu_pct: Option<f64>,
    pub load_cpu_pct: Option<f64>,
    pub rx_mbps: Option<f64>,
    /// RTP packets all viewers received per second.
    pub rx_pps: Option<f64>,
    /// Signalling frames and bytes all our sockets received per second.
    pub ws_messages_per_s: Option<f64>,
    pub ws_bytes_per_s: Option<f64>,
    pub seconds: f64,
}

/// Everything a run produced, for the report.
#[derive(Debug)]
pub struct Outcome {
    pub options: Options,
    pub viewers: Vec<ViewerReport>,
    pub publisher: Option<PublisherReport>,
    pub latency: Histogram,
    pub samples: Vec<Sample>,
    /// Server RSS before the first viewer joined.
    pub server_rss_base_kb: Option<u64>,
    /// Why viewers failed to join, with how many failed that way.
    pub join_errors: HashMap<String, usize>,
    /// Viewers whose session the server ended early, by reason (`ended`, or a closed socket).
    pub ended_early: HashMap<String, usize>,
    /// Receive-buffer drops on our viewer sockets and on the server's media sockets.
    pub viewer_socket_drops: u64,
    pub server_socket_drops: u64,
    pub ws: Arc<FrameCounts>,
    /// WHEP/WHIP DELETEs that did not get a 2xx.
    pub delete_failures: usize,
    pub wall: Duration,
    /// Per WebSocket viewer that got `quality` notices: the last layer named, and how many.
    pub quality_notices: HashMap<PeerKey, (QualityLayer, u64)>,
}

/// What the tasks of a run share.
#[derive(Default)]
struct Shared {
    active: AtomicUsize,
    ended_early: Mutex<HashMap<String, usize>>,
    our_ports: Mutex<HashSet<u16>>,
    server_ports: Mutex<HashSet<u16>>,
    join_errors: Mutex<HashMap<String, usize>>,
    ws: Arc<FrameCounts>,
    delete_failures: AtomicUsize,
    quality_notices: Mutex<HashMap<PeerKey, (QualityLayer, u64)>>,
}

impl Shared {
    fn join_error(&self, e: &anyhow::Error) {
        let mut m = self.join_errors.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(format!("{e:#}")).or_default() += 1;
    }
}

pub async fn run(options: Options) -> Result<Outcome> {
    let clock = Clock::system();
    let shared = Arc::new(Shared::default());
    // The simulcast layers' sources are numbered from here, so viewers tell them apart by
    // the stamps of what they receive.
    let source_base = random_u32();
    let layer_sources: Vec<u32> = if options.simulcast && options.publish {
        (0..golive_client::SIMULCAST_RIDS.len() as u32)
            .map(|i| source_base.wrapping_add(i))
            .collect()
    } else {
        Vec::new()
    };
    let viewer_options = ViewerOptions {
        twcc: options.viewer_twcc,
        kbps: options.viewer_kbps,
        layer_sources,
    };
    let engines: Vec<EngineHandle> = (0..options.threads.max(1))
        .map(|i| {
            EngineHandle::spawn(
                format!("viewers-{i}"),
                clock,
                options.srtp,
                options.recv_buffer,
                Pacing::Burst,
                viewer_options.clone(),
            )
        })
        .collect::<Result<_>>()?;

    // The publisher, on an engine of its own so its pacing never waits behind viewers.
    let (stop_publisher, publisher_task, publisher_engine) = if options.publish {
        let engine = EngineHandle::spawn(
            "publisher".to_owned(),
            clock,
            options.srtp,
            None,
            options.pacing,
            ViewerOptions::default(),
        )?;
        let plan = if options.simulcast {
            PublisherMedia::Simulcast {
                top_bps: options.bitrate_bps,
                gop: options.gop,
                source_base,
                temporal_layers: options.temporal_layers,
            }
        } else {
            PublisherMedia::Single(
                MediaPlan::for_bitrate(options.bitrate_bps, options.gop)
                    .with_temporal_layers(options.temporal_layers),
            )
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = match options.publisher_protocol {
            Protocol::Ws => {
                let signal = start_publisher(&options, &engine, plan, &shared).await?;
                tokio::spawn(async move {
                    let mut signal = signal;
                    tokio::pin!(rx);
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            later = later(&mut signal) => match later {
                                Later::Other | Later::Quality(_) => {}
                                ended => {
                                    eprintln!("golive-load: the publisher's session ended: {ended:?}");
                                    return;
                                }
                            }
                        }
                    }
                    signal.leave().await;
                })
            }
            Protocol::Http => {
                let location = start_whip_publisher(&options, &engine, plan, &shared).await?;
                let http = options.origin().http.clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = rx.await;
                    if !http::delete(&http, &location, CONNECT_TIMEOUT).await {
                        shared.delete_failures.fetch_add(1, Ordering::Relaxed);
                    }
                })
            }
        };
        (Some(tx), Some(task), Some(engine))
    } else {
        (None, None, None)
    };

    let server_rss_base_kb = options.server_pid.and_then(|p| procfs::rss_kb(Some(p)));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let drops = Arc::new(Mutex::new((HashMap::new(), HashMap::new())));
    let sampler = {
        let engines = engines.clone();
        let shared = Arc::clone(&shared);
        let samples = Arc::clone(&samples);
        let drops = Arc::clone(&drops);
        let options = options.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut prev: Option<Sample> = None;
            loop {
                tick.tick().await;
                let s = sample(&engines, &shared, options.server_pid);
                record_drops(&shared, &drops);
                if options.progress {
                    eprintln!(
                        "{}",
                        progress_line(start, &s, prev.as_ref(), &engines, &options)
                    );
                }
                samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
                prev = Some(s);
            }
        })
    };

    // Viewers: one task each, started on the ramp's schedule.
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(options.viewers);
    for i in 0..options.viewers {
        let join_at = t0 + Duration::from_secs_f64(i as f64 / options.ramp);
        tokio::time::sleep_until(join_at.into()).await;
        let engine = engines[i % engines.len()].clone();
        let shared = Arc::clone(&shared);
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let key = i as PeerKey;
            let leave_at = join_at + options.duration;
            let r = match options.viewer_protocol {
                Protocol::Ws => viewer(&options, key, &engine, &shared, leave_at).await,
                Protocol::Http => whep_viewer(&options, key, &engine, &shared, leave_at).await,
            };
            if let Err(e) = r {
                shared.join_error(&e);
            }
            engine.remove(key);
        }));
    }
    if options.viewers == 0 {
        // Publish only (for another load tester's `--no-publish` viewers): stay on air.
        tokio::time::sleep(options.duration).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = t0.elapsed();
    // One last reading, so the figures include the very end.
    {
        let s = sample(&engines, &shared, options.server_pid);
        record_drops(&shared, &drops);
        samples.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
    sampler.abort();

    if let Some(tx) = stop_publisher {
        let _ = tx.send(());
    }
    if let Some(task) = publisher_task {
        let _ = task.await;
    }
    let mut latency = Histogram::default();
    let mut viewers = Vec::new();
    for e in &engines {
        let EngineReport {
            viewers: v,
            latency: l,
            ..
        } = e.finish().await?;
        viewers.extend(v);
        latency.merge(&l);
    }
    let publisher = match &publisher_engine {
        Some(e) => e.finish().await?.publisher,
        None => None,
    };
    viewers.sort_by_key(|v| v.key);
    let (ours, server) = {
        let d = drops.lock().unwrap_or_else(|e| e.into_inner());
        (d.0.values().sum(), d.1.values().sum())
    };
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let join_errors = shared
        .join_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Outcome {
        options,
        viewers,
        publisher,
        latency,
        samples,
        server_rss_base_kb,
        join_errors,
        ended_early: shared
            .ended_early
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        viewer_socket_drops: ours,
        server_socket_drops: server,
        ws: Arc::clone(&shared.ws),
        delete_failures: shared.delete_failures.load(Ordering::Relaxed),
        wall,
        quality_notices: std::mem::take(
            &mut *shared
                .quality_notices
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ),
    })
}

/// Publishes the stream and waits until the publisher's media connection is up.
async fn start_publisher(
    options: &Options,
    engine: &EngineHandle,
    plan: PublisherMedia,
    shared: &Shared,
) -> Result<SignalClient> {
    let mut signal = connect(options.origin(), shared).await?;
    let offer = engine.offer(PUBLISHER_KEY, Some(plan)).await?;
    let sent = Instant::now();
    signal
        .send(&client_message(serde_json::json!({
            "type": "publish",
            "stream": options.stream,
            "sdp": offer.sdp,
            "title": "golive-load",
        }))?)
        .await?;
    let answer = answer(&mut signal).await.context("publish")?;
    note_server_ports(shared, &answer);
    engine.answer(PUBLISHER_KEY, answer, sent).await?;
    publisher_connected(engine).await?;
    Ok(signal)
}

/// Publishes the stream over WHIP; returns the session's Location.
async fn start_whip_publisher(
    options: &Options,
    engine: &EngineHandle,
    plan: PublisherMedia,
    shared: &Shared,
) -> Result<String> {
    let offer = engine.offer(PUBLISHER_KEY, Some(plan)).await?;
    let sent = Instant::now();
    let path = format!("/whip/{}", options.stream);
    let origin = options.origin();
    let (answer, location) = http::post_offer(&origin.http, &path, &offer.sdp, CONNECT_TIMEOUT)
        .await
        .context("WHIP publish")?;
    note_server_ports(shared, &answer);
    if let Err(e) = engine.answer(PUBLISHER_KEY, answer, sent).await {
        http::delete(&origin.http, &location, CONNECT_TIMEOUT).await;
        return Err(e);
    }
    publisher_connected(engine).await?;
    Ok(location)
}

/// Waits until the publisher's media connection is up, and then its head start.
async fn publisher_connected(engine: &EngineHandle) -> Result<()> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while engine.counters.ever_connected.load(Ordering::Relaxed) == 0 {
        if Instant::now() > deadline {
            bail!("the publisher's media connection did not come up within {CONNECT_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(PUBLISHER_HEAD_START).await;
    Ok(())
}

/// A protocol message from its JSON shape, checked by `golive-proto`. Written as JSON rather
/// than as a struct literal so that optional fields the protocol grows (names, keys) need no
/// change here: the load tester sends only what it needs.
fn client_message(json: serde_json::Value) -> Result<ClientMessage> {
    ClientMessage::parse(&json.to_string()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A signalling socket to `node` whose frames count into the run's figures.
async fn connect(node: &Node, shared: &Shared) -> Result<SignalClient> {
    let ws = connect_ws(&node.ws_url, CONNECT_TIMEOUT).await?;
    Ok(SignalClient::from_ws(ws).with_counts(Arc::clone(&shared.ws)))
}

/// Sends `watch` and waits for its answer, following a full cluster node's `redirect` to the
/// node it names (at most [`http::MAX_REDIRECTS`] in a row): the socket that got the answer.
async fn watch_following(
    options: &Options,
    node: &Node,
    shared: &Shared,
    sdp: &str,
) -> Result<(SignalClient, String)> {
    let watch = client_message(serde_json::json!({
        "type": "watch",
        "stream": options.stream,
        "sdp": sdp,
    }))?;
    let mut signal = connect(node, shared).await?;
    for _ in 0..=http::MAX_REDIRECTS {
        signal.send(&watch).await?;
        match answer(&mut signal).await {
            Err(e) => match e.downcast_ref::<SignalError>() {
                Some(SignalError::Unexpected { got, .. }) => {
                    let ServerMessage::Redirect { url } = got.as_ref() else {
                        return Err(e);
                    };
                    let ws = connect_ws(url, CONNECT_TIMEOUT).await?;
                    signal.close().await;
                    signal = SignalClient::from_ws(ws).with_counts(Arc::clone(&shared.ws));
                }
                _ => return Err(e),
            },
            Ok(answer) => return Ok((signal, answer)),
        }
    }
    bail!("more than {} redirects in a row", http::MAX_REDIRECTS)
}

/// Waits for the answer to a publish or watch; a refusal is an error that says what to do.
async fn answer(signal: &mut SignalClient) -> Result<String> {
    match signal.expect_answer().await {
        Err(SignalError::Refused {
            code: ErrorCode::RateLimited,
            message,
        }) => bail!(
            "server refused: rate_limited: {message} (a load test comes from one address: raise \
             the server's --max-new-sessions-per-sec-per-ip and --max-sessions-per-ip)"
        ),
        other => Ok(other?),
    }
}

/// What the server said after the answer.
#[derive(Debug)]
enum Later {
    /// Anything else: viewer counts, chat, hearts (counted in [`FrameCounts`]).
    Other,
    /// The viewer's video moved to another simulcast layer.
    Quality(QualityLayer),
    Ended(EndReason),
    /// The socket closed; the server's close code and reason, if it gave them.
    Closed(Option<String>),
}

/// The next thing that matters after the answer.
async fn later(signal: &mut SignalClient) -> Later {
    match signal.next().await {
        Ok(Incoming::Message(ServerMessage::Ended { reason })) => Later::Ended(reason),
        Ok(Incoming::Message(ServerMessage::Quality { layer, .. })) => Later::Quality(layer),
        Ok(Incoming::Message(_)) => Later::Other,
        Ok(Incoming::Closed(Closed::Frame { code: None, .. })) => Later::Closed(None),
        Ok(Incoming::Closed(how)) => Later::Closed(Some(how.to_string())),
        Err(e) => Later::Closed(Some(e.to_string())),
    }
}

/// The UDP ports of the server's host candidates in an answer.
fn candidate_ports(sdp: &str) -> Vec<u16> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            (f.len() > 5 && f[1] == "1" && f[2].eq_ignore_ascii_case("udp"))
                .then(|| f[5].parse().ok())
                .flatten()
        })
        .collect()
}

fn note_server_ports(shared: &Shared, answer: &str) {
    shared
        .server_ports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(candidate_ports(answer));
}

/// A viewer's offer; its socket's receive-buffer drops count into the run's.
async fn viewer_offer(engine: &EngineHandle, key: PeerKey, shared: &Shared) -> Result<OfferInfo> {
    let offer = engine.offer(key, None).await?;
    shared
        .our_ports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(offer.local_addr.port());
    Ok(offer)
}

/// One viewer's session: watch, stay until `leave_at` (or until the server ends it), leave.
async fn viewer(
    options: &Options,
    key: PeerKey,
    engine: &EngineHandle,
    shared: &Shared,
    leave_at: Instant,
) -> Result<()> {
    let offer = viewer_offer(engine, key, shared).await?;
    let watch_sent = Instant::now();
    let (mut signal, answer) =
        watch_following(options, options.node_of(key), shared, &offer.sdp).await?;
    note_server_ports(shared, &answer);
    engine.answer(key, answer, watch_sent).await?;
    shared.active.fetch_add(1, Ordering::Relaxed);
    let stay = tokio::time::sleep_until(leave_at.into());
    tokio::pin!(stay);
    let mut jitter = Jitter::new(key);
    let mut next_heart = jitter.first(options.heart_rate);
    let mut next_chat = jitter.first(options.chat_rate);
    let mut chats = 0u64;
    let mut ended = None;
    loop {
        tokio::select! {
            _ = &mut stay => break,
            _ = sleep_until_opt(next_heart) => {
                next_heart = jitter.next(next_heart, options.heart_rate);
                if let Err(e) = signal.heart().await {
                    ended = Some(format!("sending a heart: {e:#}"));
                    break;
                }
            }
            _ = sleep_until_opt(next_chat) => {
                next_chat = jitter.next(next_chat, options.chat_rate);
                chats += 1;
                if let Err(e) = signal.chat(format!("golive-load viewer {key} says hello #{chats}")).await {
                    ended = Some(format!("sending chat: {e:#}"));
                    break;
                }
            }
            later = later(&mut signal) => match later {
                Later::Other => {}
                Later::Quality(layer) => {
                    let mut q = shared.quality_notices.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = q.entry(key).or_insert((layer, 0));
                    *entry = (layer, entry.1 + 1);
                }
                Later::Ended(reason) => {
                    ended = Some(format!("{reason:?}"));
                    break;
                }
                Later::Closed(reason) => {
                    ended = Some(match reason {
                        Some(r) => format!("WebSocket {r}"),
                        None => "WebSocket closed".to_owned(),
                    });
                    break;
                }
            }
        }
    }
    shared.active.fetch_sub(1, Ordering::Relaxed);
    if let Some(reason) = ended {
        *shared
            .ended_early
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }
    signal.leave().await;
    Ok(())
}

/// One viewer's session over WHEP: POST the offer, apply the 201's answer, stay until
/// `leave_at`, DELETE the session's Location. Time to first frame counts from the POST.
async fn whep_viewer(
    options: &Options,
    key: PeerKey,
    engine: &EngineHandle,
    shared: &Shared,
    leave_at: Instant,
) -> Result<()> {
    let node = options.node_of(key);
    let offer = viewer_offer(engine, key, shared).await?;
    let sent = Instant::now();
    let path = format!("/whep/{}", options.stream);
    // A full cluster node sends the player to another node (307): the session lives there.
    let (answer, authority, location) =
        http::post_offer_following(&node.http, &path, &offer.sdp, CONNECT_TIMEOUT).await?;
    note_server_ports(shared, &answer);
    let applied = engine.answer(key, answer, sent).await;
    if applied.is_ok() {
        shared.active.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(leave_at.into()).await;
        shared.active.fetch_sub(1, Ordering::Relaxed);
    }
    if !http::delete(&authority, &location, CONNECT_TIMEOUT).await {
        shared.delete_failures.fetch_add(1, Ordering::Relaxed);
    }
    applied
}

/// Sleeps until `t`, or forever for `None`.
async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// When a viewer's next heart or chat message goes out: the first at a random point of the
/// first period, then every period stretched or shrunk by up to half at random, so the mean
/// rate is as asked and a thousand viewers who joined together do not fire together.
struct Jitter(u64);

impl Jitter {
    fn new(key: PeerKey) -> Self {
        let seed = u64::from(random_u32()) << 32 ^ key.wrapping_mul(0x9E37_79B9);
        Self(seed | 1)
    }

    /// Uniform in [0, 1) (xorshift64*).
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn first(&mut self, rate: f64) -> Option<Instant> {
        (rate > 0.0).then(|| Instant::now() + Duration::from_secs_f64(self.unit() / rate))
    }

    fn next(&mut self, prev: Option<Instant>, rate: f64) -> Option<Instant> {
        let period = (0.5 + self.unit()) / rate;
        // From the planned time, not from now: a late send does not lower the rate.
        prev.map(|t| t + Duration::from_secs_f64(period))
    }
}

fn sample(engines: &[EngineHandle], shared: &Shared, server_pid: Option<u32>) -> Sample {
    let sum = |f: &dyn Fn(&EngineHandle) -> u64| engines.iter().map(f).sum::<u64>();
    Sample {
        at: Instant::now(),
        active: shared.active.load(Ordering::Relaxed),
        connected: engines
            .iter()
            .map(|e| e.counters.connected.load(Ordering::Relaxed))
            .sum(),
        rx_bytes: sum(&|e| e.counters.rx_bytes.load(Ordering::Relaxed)),
        rx_packets: sum(&|e| e.counters.rx_packets.load(Ordering::Relaxed)),
        lost: sum(&|e| e.counters.lost.load(Ordering::Relaxed)),
        join_lost: sum(&|e| e.counters.join_lost.load(Ordering::Relaxed)),
        server_cpu_ticks: server_pid.and_then(|p| procfs::cpu_ticks(Some(p))),
        server_rss_kb: server_pid.and_then(|p| procfs::rss_kb(Some(p))),
        own_cpu_ticks: procfs::cpu_ticks(None),
        ws_messages_in: shared.ws.messages_in.load(Ordering::Relaxed),
        ws_bytes_in: shared.ws.bytes_in.load(Ordering::Relaxed),
    }
}

type DropTables = (HashMap<u64, u64>, HashMap<u64, u64>);

/// Keeps the highest drop count seen per socket (sockets vanish from the table when closed).
fn record_drops(shared: &Shared, drops: &Mutex<DropTables>) {
    let ours = shared
        .our_ports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let server = shared
        .server_ports
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let now_ours = procfs::udp_drops(&ours);
    let now_server = procfs::udp_drops(&server);
    let mut d = drops.lock().unwrap_or_else(|e| e.into_inner());
    for (inode, n) in now_ours {
        let e = d.0.entry(inode).or_default();
        *e = (*e).max(n);
    }
    for (inode, n) in now_server {
        let e = d.1.entry(inode).or_default();
        *e = (*e).max(n);
    }
}

fn cpu_pct(ticks: (Option<u64>, Option<u64>), seconds: f64) -> Option<f64> {
    let (a, b) = ticks;
    let d = b?.checked_sub(a?)?;
    (seconds > 0.0).then(|| d as f64 / procfs::TICKS_PER_SECOND / seconds * 100.0)
}

fn progress_line(
    start: Instant,
    s: &Sample,
    prev: Option<&Sample>,
    engines: &[EngineHandle],
    options: &Options,
) -> String {
    let keyframes: u64 = engines
        .iter()
        .map(|e| e.counters.keyframes_complete.load(Ordering::Relaxed))
        .sum();
    let failed: u64 = engines
        .iter()
        .map(|e| e.counters.failed.load(Ordering::Relaxed))
        .sum();
    let mut line = format!(
        "[{:>4.0}s] viewers {}/{} connected {} failed {} keyframes {}",
        start.elapsed().as_secs_f64(),
        s.active,
        options.viewers,
        s.connected,
        failed,
        keyframes
    );
    if let Some(p) = prev {
        let dt = s.at.duration_since(p.at).as_secs_f64();
        if dt > 0.0 {
            line += &format!(
                " | rx {:.1} Mbit/s {:.1} kpkt/s lost {} (+{} at join)",
                (s.rx_bytes - p.rx_bytes) as f64 * 8.0 / dt / 1e6,
                (s.rx_packets - p.rx_packets) as f64 / dt / 1e3,
                s.lost - s.join_lost,
                s.join_lost
            );
            if s.ws_messages_in > p.ws_messages_in {
                line += &format!(
                    " | ws in {:.1} kmsg/s",
                    (s.ws_messages_in - p.ws_messages_in) as f64 / dt / 1e3
                );
            }
            if let Some(cpu) = cpu_pct((p.server_cpu_ticks, s.server_cpu_ticks), dt) {
                line += &format!(
                    " | server cpu {cpu:.0}% rss {:.0} MB",
                    s.server_rss_kb.unwrap_or(0) as f64 / 1024.0
                );
            }
            if let Some(cpu) = cpu_pct((p.own_cpu_ticks, s.own_cpu_ticks), dt) {
                line += &format!(" | load cpu {cpu:.0}%");
            }
        }
    }
    line
}

/// The window to average rates over: the samples taken while every viewer was in (joined
/// and not yet left); if there was no such moment, every sample with a viewer in.
pub fn steady_window(samples: &[Sample], viewers: usize) -> Option<(Sample, Sample)> {
    let pick = |full: bool| {
        let w: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                if full {
                    s.active >= viewers
                } else {
                    s.active > 0
                }
            })
            .collect();
        (w.len() >= 2).then(|| (*w[0], *w[w.len() - 1]))
    };
    pick(true).or_else(|| pick(false))
}

impl Outcome {
    /// Rates over the steady window.
    pub fn window_rates(&self) -> WindowRates {
        let Some((a, b)) = steady_window(&self.samples, self.options.viewers) else {
            return WindowRates::default();
        };
        let dt = b.at.duration_since(a.at).as_secs_f64();
        if dt <= 0.0 {
            return WindowRates::default();
        }
        WindowRates {
            server_cpu_pct: cpu_pct((a.server_cpu_ticks, b.server_cpu_ticks), dt),
            load_cpu_pct: cpu_pct((a.own_cpu_ticks, b.own_cpu_ticks), dt),
            rx_mbps: Some((b.rx_bytes - a.rx_bytes) as f64 * 8.0 / dt / 1e6),
            rx_pps: Some((b.rx_packets - a.rx_packets) as f64 / dt),
            ws_messages_per_s: Some((b.ws_messages_in - a.ws_messages_in) as f64 / dt),
            ws_bytes_per_s: Some((b.ws_bytes_in - a.ws_bytes_in) as f64 / dt),
            seconds: dt,
        }
    }

    pub fn server_rss_max_kb(&self) -> Option<u64> {
        self.samples.iter().filter_map(|s| s.server_rss_kb).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_ports_come_from_host_candidates() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40123 typ host\r\n\
                   a=end-of-candidates\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40124 typ host\r\n";
        assert_eq!(candidate_ports(sdp), vec![40123, 40124]);
    }
}
