//! Cluster mode (`--cluster-redis`): several golive nodes coordinated through Redis.
//!
//! Each node writes a heartbeat record with its load under an expiry ([`registry::NodeRecord`]),
//! so a node that dies is gone from every other node's view within [`NODE_TTL`]. The node where a
//! broadcaster lands takes the stream's lease (`SET NX PX`) before it claims the name in its own
//! directory, and keeps pushing the lease's expiry back while it holds the stream: one publisher
//! per stream name across the cluster, and `stream_busy` on every other node. Each node reads
//! every other node's record once per heartbeat and gives its directory the viewers the other
//! nodes have of each stream, so counts and `/api/streams` are cluster-wide.
//!
//! A viewer of a stream held by another node makes this node pull it once, as a relay
//! ([`relay`]): over WebRTC from the origin, or from a node that relays it already when the
//! origin serves as many relays as it may, so the nodes form a tree.
//!
//! Redis out of reach: the node keeps serving what it holds (its leases keep the names it
//! broadcasts once Redis is back, since it takes them again at once) and refuses what needs
//! the cluster (a new broadcast, a stream held elsewhere) with `cluster_unavailable`. It tries
//! again every heartbeat and rejoins by itself.
//!
//! Without `--cluster-redis` none of this exists and a node runs alone, exactly as before.

pub mod pubsub;
pub mod registry;
pub mod relay;
pub mod steer;
pub mod store;

use golive_proto::{EndReason, ErrorCode, ProtocolError, StreamName};
use prometheus::{IntCounter, IntGauge};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::directory::{Directory, StreamSummary};
use crate::metrics::Metrics;
use crate::session::Workers;
use registry::{NodeRecord, RECORD_VERSION, StreamLoad, View};
use store::{Acquire, Renew, Store, StoreError};

/// How often a node writes its heartbeat, renews its leases and reads the others' records.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A node whose heartbeat stops is gone from the registry after this long.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// A stream's lease outlives its holder by this long: another node may take the name then.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// After Redis (re)starts, nodes that hold broadcasts take their leases again within a heartbeat
/// or two. Until Redis has been up this long, no node takes a new lease, so a name held
/// somewhere cannot be given to a second broadcaster meanwhile.
pub const SETTLE: Duration = Duration::from_secs(3);
/// A lease this node took is given up when its stream has been out of the directory this long
/// (the time between the lease and the directory's claim, or after the broadcast ended).
const UNUSED_LEASE: Duration = Duration::from_secs(2);

/// The cluster settings, from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub redis_url: String,
    /// The base URL of this node (`http://host:port`); by default, the address it listens on.
    pub node_url: Option<String>,
    /// Nodes authenticate to each other with it (relays).
    pub secret: String,
    pub max_relays_per_stream: usize,
    /// Viewers this node takes at most, announced as its capacity.
    pub capacity: usize,
    /// A relay goes on this long after the node's last viewer of its stream left.
    pub relay_linger: std::time::Duration,
    /// How long a relayed stream's viewers wait for its source to come back (the broadcaster's
    /// reconnect grace, which also covers an origin that moves to another node).
    pub reconnect_grace: std::time::Duration,
    /// Past these, new viewers are sent to another node.
    pub steer: steer::Thresholds,
}

/// The cluster's own metrics, in the server's registry.
struct ClusterMetrics {
    members: IntGauge,
    redis_up: IntGauge,
    leases_lost: IntCounter,
    malformed_records: IntCounter,
    malformed_messages: IntCounter,
    redirects: IntCounter,
}

impl ClusterMetrics {
    fn new(m: &Metrics) -> Self {
        let r = m.registry();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        Self {
            members: gauge(
                "golive_cluster_members",
                "Nodes in the cluster (with a live heartbeat), this one included.",
            ),
            redis_up: gauge(
                "golive_cluster_redis_up",
                "1 while the cluster's Redis answers, 0 while it is out of reach.",
            ),
            leases_lost: counter(
                "golive_cluster_leases_lost_total",
                "Broadcasts ended because another node held their stream's lease.",
            ),
            malformed_records: counter(
                "golive_cluster_malformed_records_total",
                "Heartbeat records of other nodes that could not be read.",
            ),
            malformed_messages: counter(
                "golive_cluster_malformed_messages_total",
                "Messages from Redis (pub/sub, chat history) that could not be used and were skipped.",
            ),
            redirects: counter(
                "golive_cluster_redirects_total",
                "Viewers sent to another node (watch redirect, WHEP 307) because this one was past its capacity.",
            ),
        }
    }
}

/// This node's membership of the cluster.
pub struct Cluster {
    id: String,
    settings: Settings,
    /// This node's base URL, known once it listens.
    url: std::sync::OnceLock<String>,
    store: Store,
    up: AtomicBool,
    /// The leases this node holds, and when their stream was last seen in the directory.
    held: Mutex<HashMap<StreamName, Instant>>,
    view: Mutex<View>,
    /// Record keys already logged as malformed (each is logged once).
    logged: Mutex<HashSet<String>>,
    metrics: ClusterMetrics,
    /// The streams this node pulls from other nodes and serves to them.
    relays: relay::Relays,
    /// Times Redis went out of reach (the pub/sub listener subscribes again after one).
    outages: AtomicU64,
    malformed: pubsub::Malformed,
    /// This node's load at its last heartbeat, for steering.
    load: Mutex<steer::Load>,
}

fn unavailable() -> ProtocolError {
    ProtocolError::new(
        ErrorCode::ClusterUnavailable,
        "the cluster's coordination service (Redis) is out of reach; this node serves only \
         what it holds until it is back",
    )
}

fn busy(stream: &StreamName) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::StreamBusy,
        format!("stream \"{stream}\" is already live"),
    )
}

impl Cluster {
    /// Checks the settings and registers the metrics; [`Cluster::run`] joins the cluster.
    pub fn new(settings: Settings, metrics: &Metrics) -> anyhow::Result<Self> {
        if let Some(url) = &settings.node_url {
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--node-url must be an http:// or https:// URL, not {url:?}"
            );
        }
        anyhow::ensure!(
            !settings.secret.is_empty(),
            "cluster mode needs --cluster-secret (the same on every node)"
        );
        let store = Store::new(&settings.redis_url)
            .map_err(|e| anyhow::anyhow!("--cluster-redis {}: {e}", redact(&settings.redis_url)))?;
        Ok(Self {
            id: format!("{:016x}", rand::random::<u64>()),
            url: std::sync::OnceLock::new(),
            store,
            up: AtomicBool::new(false),
            held: Mutex::default(),
            view: Mutex::default(),
            logged: Mutex::default(),
            metrics: ClusterMetrics::new(metrics),
            relays: relay::Relays::new(&settings.secret, metrics),
            settings,
            outages: AtomicU64::new(0),
            malformed: pubsub::Malformed::new(),
            load: Mutex::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// This node's base URL (empty until [`Cluster::run`] starts).
    pub fn url(&self) -> &str {
        self.url.get().map_or("", String::as_str)
    }

    /// Whether Redis answered the last heartbeat.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Takes the lease of `stream` for a broadcaster about to go live on this node:
    /// `stream_busy` when another node holds it, `cluster_unavailable` without Redis.
    pub async fn acquire_origin(&self, stream: &StreamName) -> Result<(), ProtocolError> {
        let held_here = self.lock_held().contains_key(stream);
        let r = self.try_acquire(stream, held_here).await;
        match r {
            Ok(Acquire::Held) => {
                self.lock_held().insert(stream.clone(), Instant::now());
                Ok(())
            }
            Ok(Acquire::Busy(_)) => Err(busy(stream)),
            Err(e) => {
                self.went_down(&e);
                // A broadcaster coming back to the node that holds its stream keeps it.
                if held_here {
                    Ok(())
                } else {
                    Err(unavailable())
                }
            }
        }
    }

    async fn try_acquire(&self, stream: &StreamName, held_here: bool) -> Result<Acquire, Refusal> {
        if !held_here {
            let uptime = self.store.uptime().await.map_err(Refusal::Store)?;
            if uptime < SETTLE {
                return Err(Refusal::Settling);
            }
        }
        self.store
            .acquire(stream, &self.id, LEASE_TTL)
            .await
            .map_err(Refusal::Store)
    }

    /// Gives up the lease of `stream` when this node's directory no longer holds it (the
    /// broadcast ended, or its claim failed); a broadcast waiting for its broadcaster keeps it.
    pub fn release_if_unused(self: &Arc<Self>, stream: &StreamName, directory: &Directory) {
        if directory.holds(stream) {
            return;
        }
        if self.lock_held().remove(stream).is_none() {
            return;
        }
        let this = self.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            match this.store.release(&stream, &this.id).await {
                Ok(()) => this.forget_audience(&stream).await,
                // The lease expires by itself.
                Err(e) => this.went_down(&Refusal::Store(e)),
            }
        });
    }

    /// Why a stream that is not on this node cannot be watched here.
    pub fn not_here(&self, stream: &StreamName) -> ProtocolError {
        if !self.is_up() {
            return unavailable();
        }
        ProtocolError::new(
            ErrorCode::StreamNotFound,
            format!("stream \"{stream}\" is not live on this node"),
        )
    }

    /// Makes this node pull `stream` from the node that holds it (a relay), for a viewer here;
    /// `Ok` once the stream is in this node's directory.
    pub async fn pull(self: &Arc<Self>, stream: &StreamName) -> Result<(), ProtocolError> {
        if !self.is_up() {
            return Err(unavailable());
        }
        relay::pull(self, stream).await
    }

    /// A broadcaster of `stream` took its lease on this node: a relay of it here gives way.
    pub fn yield_relay(&self, stream: &StreamName, directory: &Directory) {
        self.relays
            .yield_to_broadcaster(stream, directory, self.settings.reconnect_grace);
    }

    /// Whether this node serves relays of `stream` to other nodes.
    pub fn serves_relays(&self, stream: &StreamName) -> bool {
        self.relays.served(stream) > 0
    }

    /// Where a new viewer goes instead, when this node is past its capacity: the signalling
    /// URL of the least-loaded node with room (`None`: watch here, when this node has room or
    /// no other node has).
    pub fn redirect_for_watch(&self, directory: &Directory) -> Option<String> {
        let mut load = *self.load.lock().unwrap_or_else(|p| p.into_inner());
        // The viewers now, not at the last heartbeat: a burst of joins must not all fit.
        load.viewers = directory.viewer_count() as u64;
        if !self.settings.steer.is_full(&load) || !self.is_up() {
            return None;
        }
        let url = {
            let view = self.lock_view();
            steer::least_loaded(&view.others, &self.id).map(|n| steer::ws_url(&n.url))?
        };
        self.metrics.redirects.inc();
        Some(url)
    }

    /// Every live stream of the cluster, with its viewers on every node. A stream this node
    /// relays is described as its origin describes it (title, start, thumbnail).
    pub fn streams(&self, directory: &Directory) -> Vec<StreamSummary> {
        let (relayed, own): (Vec<_>, Vec<_>) = directory
            .list()
            .into_iter()
            .partition(|s| self.relays.is_relayed(&s.stream));
        let view = self.lock_view();
        let mut out = view.streams(own);
        if relayed.is_empty() {
            return out;
        }
        let remote = view.remote_viewers();
        for mut r in relayed {
            match out.iter_mut().find(|o| o.stream == r.stream) {
                Some(o) => o.viewers += r.viewers,
                // The origin's record is gone (it died; the relay waits for the next origin).
                None => {
                    if let Ok(name) = StreamName::new(&r.stream) {
                        r.viewers += remote.get(&name).copied().unwrap_or(0);
                    }
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        crate::directory::rank(&mut out);
        out
    }

    /// Members of the cluster as this node last saw them, itself included.
    pub fn members(&self) -> usize {
        self.lock_view().members()
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, Instant>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn went_down(&self, why: &Refusal) {
        match why {
            Refusal::Settling => {}
            Refusal::Store(e) => self.store_failed(e),
        }
    }

    fn store_failed(&self, e: &StoreError) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "cluster: Redis is out of reach ({e}); serving what this node holds, \
                 refusing new cross-node joins until it is back"
            );
        }
        self.metrics.redis_up.set(0);
    }

    fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    fn came_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(node = %self.id, url = %self.url(), "cluster: joined through Redis");
        }
        self.metrics.redis_up.set(1);
    }

    /// Heartbeats until the process ends; `listening` is the HTTP address, this node's URL
    /// unless `--node-url` gave one.
    pub async fn run(
        self: Arc<Self>,
        directory: Arc<Directory>,
        workers: Arc<Workers>,
        listening: std::net::SocketAddr,
    ) {
        let url = (self.settings.node_url.clone()).unwrap_or_else(|| format!("http://{listening}"));
        let _ = self.url.set(url);
        relay::start(&self, directory.clone(), workers.clone());
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut egress = Egress::default();
        let mut cpu = steer::CpuSampler::default();
        loop {
            tick.tick().await;
            let egress_bps = egress.sample(&workers).await;
            let load = steer::Load {
                viewers: directory.viewer_count() as u64,
                egress_bps,
                cpu_percent: cpu.sample(),
            };
            *self.load.lock().unwrap_or_else(|p| p.into_inner()) = load;
            match self.beat(&directory, load).await {
                Ok(()) => self.came_up(),
                Err(e) => self.went_down(&Refusal::Store(e)),
            }
            self.metrics.members.set(self.members() as i64);
        }
    }

    /// One heartbeat: write this node's record, renew or give up its leases, read the others.
    async fn beat(&self, directory: &Directory, load: steer::Load) -> Result<(), StoreError> {
        let local = directory.list();
        let record = NodeRecord {
            v: RECORD_VERSION,
            id: self.id.clone(),
            url: self.url().to_owned(),
            viewers: local.iter().map(|s| s.viewers as u64).sum(),
            capacity: self.settings.capacity as u64,
            egress_bps: load.egress_bps,
            cpu_percent: load.cpu_percent,
            full: self.settings.steer.is_full(&load),
            streams: local
                .iter()
                .map(|s| StreamLoad {
                    stream: s.stream.clone(),
                    viewers: s.viewers as u64,
                    origin: !self.relays.is_relayed(&s.stream),
                    title: s.title.clone(),
                    live_since: Some(s.live_since.clone()),
                    hearts_per_minute: s.hearts_per_minute,
                    thumbnail: s.thumbnail.clone(),
                })
                .collect(),
        };
        self.store
            .heartbeat(&self.id, &record.to_json(), NODE_TTL)
            .await?;
        self.renew_leases(directory).await?;
        // Where other nodes may pull each stream held here from, and how many relays it serves.
        for s in &local {
            if let Ok(stream) = StreamName::new(&s.stream) {
                let served = self.relays.served(&stream);
                self.store
                    .set_relay_entry(&stream, &self.id, served, NODE_TTL)
                    .await?;
            }
        }
        let view = self.read_view().await?;
        directory.set_remote_viewers(view.remote_viewers());
        *self.lock_view() = view;
        Ok(())
    }

    async fn renew_leases(&self, directory: &Directory) -> Result<(), StoreError> {
        let now = Instant::now();
        let streams: Vec<(StreamName, Instant)> = {
            let mut held = self.lock_held();
            for (stream, seen) in held.iter_mut() {
                if directory.holds(stream) {
                    *seen = now;
                }
            }
            held.iter().map(|(s, t)| (s.clone(), *t)).collect()
        };
        for (stream, seen) in streams {
            if now.duration_since(seen) > UNUSED_LEASE {
                self.lock_held().remove(&stream);
                self.store.release(&stream, &self.id).await?;
                self.forget_audience(&stream).await;
                continue;
            }
            match self.store.renew(&stream, &self.id, LEASE_TTL).await? {
                Renew::Renewed => {}
                Renew::Retaken => {
                    tracing::info!(%stream, "cluster: lease taken again (Redis lost it)");
                }
                Renew::Lost => {
                    // Another node took the name while this one could not renew: only one
                    // broadcaster may be live, and the lease says which.
                    tracing::error!(%stream, "cluster: another node holds this stream's lease; ending the broadcast here");
                    self.metrics.leases_lost.inc();
                    self.lock_held().remove(&stream);
                    directory.end_stream(&stream, EndReason::BroadcasterLeft);
                }
            }
        }
        Ok(())
    }

    async fn read_view(&self) -> Result<View, StoreError> {
        let mut others = Vec::new();
        for (key, value) in self.store.nodes().await? {
            let parsed = match &value {
                redis::Value::BulkString(b) => NodeRecord::parse(b).map_err(|e| e.to_string()),
                other => Err(format!("not a string: {other:?}")),
            };
            match parsed {
                Ok(r) if r.id == self.id => {}
                Ok(r) => others.push(r),
                Err(e) => {
                    self.metrics.malformed_records.inc();
                    let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
                    if logged.insert(key.clone()) {
                        tracing::error!(%key, "cluster: ignoring a malformed node record: {e}");
                    }
                }
            }
        }
        Ok(View { others })
    }
}

/// Why a lease was not taken.
enum Refusal {
    Store(StoreError),
    /// Redis has just (re)started: the holders have not all taken their leases again yet.
    Settling,
}

/// The node's egress, from the workers' byte counters between two heartbeats.
#[derive(Default)]
struct Egress {
    last: Option<(u64, Instant)>,
}

impl Egress {
    async fn sample(&mut self, workers: &Workers) -> u64 {
        let bytes: u64 = workers
            .stats()
            .await
            .iter()
            .flatten()
            .map(|s| s.bytes_out)
            .sum();
        let now = Instant::now();
        let bps = match self.last {
            Some((b, t)) if now > t => {
                (bytes.saturating_sub(b) as f64 / now.duration_since(t).as_secs_f64()) as u64
            }
            _ => 0,
        };
        self.last = Some((bytes, now));
        bps
    }
}

/// A Redis URL for the log, without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_stay_out_of_the_log() {
        assert_eq!(
            redact("redis://:hunter2@redis:6379/0"),
            "redis://…@redis:6379/0"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/2"),
            "redis://127.0.0.1:6379/2"
        );
    }
}
