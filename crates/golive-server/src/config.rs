//! The server's configuration: command-line flags, each with an environment twin, and an
//! optional TOML file (`--config`). Precedence: flag, then environment, then file, then the
//! built-in default. The defaults run a development server on 127.0.0.1 with nothing to set.
//! `docs/config.md` lists every setting.

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "golive",
    version,
    about = "golive: a WebRTC SFU for live broadcasting"
)]
pub struct Config {
    /// HTTP address (pages, WebSocket signalling, health).
    #[arg(long, env = "GOLIVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// IP the media UDP sockets bind to. Default: the IP of --listen.
    #[arg(long, env = "GOLIVE_UDP_BIND")]
    pub udp_bind: Option<IpAddr>,

    /// First UDP port for media; worker i binds this port + i. 0: an ephemeral port each.
    #[arg(long, env = "GOLIVE_UDP_PORT", default_value_t = 0)]
    pub udp_port: u16,

    /// The IP advertised in ICE candidates (for a server behind 1:1 NAT). Default: the UDP bind IP.
    #[arg(long, env = "GOLIVE_PUBLIC_IP")]
    pub public_ip: Option<IpAddr>,

    /// Media workers, each with its own thread and UDP socket. Default: one per core.
    #[arg(long, env = "GOLIVE_WORKERS")]
    pub workers: Option<usize>,

    /// Also offer SRTP AES_CM_128_HMAC_SHA1_80 (for old clients); by default only AES-GCM,
    /// which costs a quarter as much per packet.
    #[arg(long, env = "GOLIVE_SRTP_LEGACY", default_value_t = false)]
    pub srtp_legacy: bool,

    /// STUN/TURN servers offered to WHIP/WHEP clients in `Link` headers (comma-separated URLs
    /// such as `stun:stun.example.net:3478` or `turn:turn.example.net:3478?transport=udp`). The
    /// server itself is ICE-lite and needs none.
    #[arg(long = "ice-server", env = "GOLIVE_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,

    /// File of `stream=key` lines: publishing a stream then needs its key (re-read on SIGHUP).
    /// Without it anyone may publish any free stream name (development mode).
    #[arg(long, env = "GOLIVE_KEYS_FILE")]
    pub keys_file: Option<std::path::PathBuf>,

    /// Hearts are gathered per stream and sent this often (milliseconds); 0 sends each heart
    /// at once (for comparison only: it costs one message per heart per member).
    #[arg(long, env = "GOLIVE_HEARTS_BATCH_MS", default_value_t = 250)]
    pub hearts_batch_ms: u64,

    /// Most streams live at once; more publishes are refused with `server_full`.
    #[arg(long, env = "GOLIVE_MAX_STREAMS", default_value_t = 100)]
    pub max_streams: usize,

    /// Most viewers of one stream; more are refused with `stream_full`.
    #[arg(long, env = "GOLIVE_MAX_VIEWERS_PER_STREAM", default_value_t = 5_000)]
    pub max_viewers_per_stream: usize,

    /// Most viewers in all; more are refused with `server_full`.
    #[arg(long, env = "GOLIVE_MAX_VIEWERS", default_value_t = 20_000)]
    pub max_viewers: usize,

    /// Largest WebSocket frame, in bytes; a larger one closes the socket with 1009.
    #[arg(long, env = "GOLIVE_MAX_FRAME_BYTES", default_value_t = golive_proto::MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Signalling messages a connection may send per second (bursts of twice that); more are
    /// refused with `rate_limited`.
    #[arg(long, env = "GOLIVE_MAX_MESSAGES_PER_SEC", default_value_t = 20)]
    pub max_messages_per_sec: u32,

    /// New sessions (WebSocket connections, WHIP/WHEP POSTs) per second from one IP address;
    /// more are refused with `rate_limited` (HTTP 429).
    #[arg(
        long,
        env = "GOLIVE_MAX_NEW_SESSIONS_PER_SEC_PER_IP",
        default_value_t = 20
    )]
    pub max_new_sessions_per_sec_per_ip: u32,

    /// Sessions open at once from one IP address; more are refused with `too_many_sessions`.
    #[arg(long, env = "GOLIVE_MAX_SESSIONS_PER_IP", default_value_t = 100)]
    pub max_sessions_per_ip: usize,

    /// Whether the per-address limits count loopback clients (127.0.0.0/8, ::1). `auto`: exempt
    /// while --listen is a loopback address (every client is then on this machine, so one
    /// address stands for many people), counted otherwise (there, a loopback client is a local
    /// proxy: set --trusted-proxies). `exempt` or `enforce` decide it outright.
    #[arg(long, env = "GOLIVE_IP_LIMITS_LOOPBACK", value_enum, default_value_t = LoopbackLimits::Auto)]
    pub ip_limits_loopback: LoopbackLimits,

    /// Each HTTP request head must arrive within this many seconds of the server starting to
    /// wait for it (an idle keep-alive connection is closed after as long); a slower client's
    /// connection is closed.
    #[arg(long, env = "GOLIVE_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub http_header_timeout_secs: u64,

    /// TCP connections open at once (pages, WebSockets, WHIP/WHEP); more are closed at once.
    /// Lowered at start to three quarters of the process's open-files limit.
    #[arg(long, env = "GOLIVE_MAX_CONNECTIONS", default_value_t = 25_000)]
    pub max_connections: usize,

    /// TCP connections open at once from one client address (an IPv6 /64 counts as one); more
    /// are closed at once. Exempt like the other per-address limits, and for trusted proxies.
    #[arg(long, env = "GOLIVE_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// A WebSocket that sends nothing (not even a pong to our pings) this long, or does not
    /// read what it is sent, is closed.
    #[arg(long, env = "GOLIVE_WS_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub ws_idle_timeout_secs: u64,

    /// Messages waiting to be sent to one client (audience frames, mostly); a client whose
    /// queue is full does not read, and its connection is closed (WebSocket close 1008).
    #[arg(long, env = "GOLIVE_MAX_QUEUED_MESSAGES", default_value_t = 4096)]
    pub max_queued_messages: usize,

    /// On SIGTERM, how long sessions get to close before the process exits.
    #[arg(long, env = "GOLIVE_DRAIN_TIMEOUT_SECS", default_value_t = 5)]
    pub drain_timeout_secs: u64,

    /// Per-stream metric labels for at most this many streams (0: none), to keep the number of
    /// time series bounded.
    #[arg(long, env = "GOLIVE_METRICS_MAX_STREAM_LABELS", default_value_t = 20)]
    pub metrics_max_stream_labels: usize,

    /// When a broadcaster's connection is lost (not ended with `leave` or DELETE), its viewers
    /// wait this long for it to publish the stream again and then continue seamlessly; 0 ends
    /// the broadcast at once.
    #[arg(long, env = "GOLIVE_RECONNECT_GRACE_SECS", default_value_t = 15)]
    pub reconnect_grace_secs: u64,

    /// Start joining viewers at the broadcaster's next keyframe instead of the cached one (for
    /// measuring what the keyframe cache gains; never needed in production).
    #[arg(long, env = "GOLIVE_NO_KEYFRAME_CACHE", default_value_t = false)]
    pub no_keyframe_cache: bool,

    /// Which transport serves viewers: `lean` (golive's own ICE-lite, DTLS and SRTP leg: cheaper
    /// per packet and per viewer) or `rtc` (a full `rtc` peer connection per viewer, kept to
    /// compare against).
    #[arg(long, env = "GOLIVE_VIEWER_LEG", default_value = "lean")]
    pub viewer_leg: golive_sfu::ViewerLeg,

    /// Reverse proxies whose `X-Forwarded-For` is believed (comma-separated IPs). Behind a proxy
    /// every client otherwise shares the proxy's address for the per-IP limits.
    #[arg(long, env = "GOLIVE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpAddr>,

    /// Record every broadcast into this directory (replays at `/replay/<id>`), unless its
    /// `publish` says `"record": false` (WHIP: `?record=false`). Unset: nothing is recorded.
    #[arg(long, env = "GOLIVE_RECORD_DIR")]
    pub record_dir: Option<PathBuf>,

    /// Replays are deleted this many hours after their broadcast ended.
    #[arg(long, env = "GOLIVE_RECORD_RETENTION_HOURS", default_value_t = 24.0)]
    pub record_retention_hours: f64,

    /// Recording stops (the broadcast goes on, its broadcaster is told) when the record
    /// directory's file system has less than this many megabytes free.
    #[arg(long, env = "GOLIVE_RECORD_MIN_FREE_MB", default_value_t = 1024)]
    pub record_min_free_mb: u64,

    /// A TOML file with any of these settings (snake_case keys: `listen`, `max_streams`, ...).
    /// Flags and environment variables override it.
    #[arg(long, env = "GOLIVE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Cluster mode: the Redis server (`redis://host:port/db`) through which nodes find each
    /// other, hold stream leases and share counts and chat. Unset: this node runs alone.
    #[arg(long, env = "GOLIVE_CLUSTER_REDIS", hide_env_values = true)]
    pub cluster_redis: Option<String>,

    /// Cluster mode: the base URL clients and other nodes use to reach this node
    /// (`http://host:port`); by default the `--listen` address.
    #[arg(long, env = "GOLIVE_NODE_URL")]
    pub node_url: Option<String>,

    /// Cluster mode: the secret nodes present to each other (the same on every node).
    #[arg(long, env = "GOLIVE_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// Cluster mode: relays the origin of a stream serves at most; further nodes pull from a
    /// relay, so the nodes form a tree.
    #[arg(long, env = "GOLIVE_MAX_RELAYS_PER_STREAM", default_value_t = 16)]
    pub max_relays_per_stream: usize,

    /// Cluster mode: a node keeps pulling a stream from another node this long after its last
    /// viewer of it left, so a viewer who comes back (or the next one) starts at once.
    #[arg(long, env = "GOLIVE_RELAY_LINGER_SECS", default_value_t = 30)]
    pub relay_linger_secs: u64,
    /// Cluster mode: past this many viewers (all streams together), a node sends new viewers
    /// to the least-loaded node with room (`redirect`, WHEP 307). Default: --max-viewers.
    #[arg(long, env = "GOLIVE_STEER_MAX_VIEWERS")]
    pub steer_max_viewers: Option<u64>,

    /// Cluster mode: past this egress (megabits per second), new viewers go to another node.
    #[arg(long, env = "GOLIVE_STEER_MAX_EGRESS_MBPS")]
    pub steer_max_egress_mbps: Option<f64>,

    /// Cluster mode: past this CPU use of the process (percent of the whole machine), new
    /// viewers go to another node.
    #[arg(long, env = "GOLIVE_STEER_MAX_CPU_PERCENT")]
    pub steer_max_cpu_percent: Option<f64>,

    /// Username for the `turn:`/`turns:` servers of --ice-server.
    #[arg(long, env = "GOLIVE_ICE_USERNAME")]
    pub ice_username: Option<String>,

    /// Credential (password) for the `turn:`/`turns:` servers of --ice-server.
    #[arg(long, env = "GOLIVE_ICE_CREDENTIAL", hide_env_values = true)]
    pub ice_credential: Option<String>,

    /// Send lean viewers' batches by `sendmmsg` instead of UDP GSO, as on a kernel or device that
    /// refuses GSO (where the worker switches by itself at the first refusal): to test that path,
    /// or to rule GSO out when chasing a problem.
    #[arg(long, env = "GOLIVE_NO_UDP_GSO", hide = true, default_value_t = false)]
    pub no_udp_gso: bool,

    /// Tests only, and only in debug builds (release builds do not have this flag): a UDP
    /// datagram whose payload is exactly this token (16 bytes or more) makes the media worker
    /// that reads it panic, to test that workers are supervised. Neither an environment
    /// variable nor a file can set it.
    #[cfg(debug_assertions)]
    #[arg(long, hide = true)]
    pub test_worker_panic: Option<String>,
}

/// How the per-address limits treat loopback clients (`--ip-limits-loopback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopbackLimits {
    Auto,
    Exempt,
    Enforce,
}

/// The settings a `--config` file may hold: the same names as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    udp_bind: Option<IpAddr>,
    udp_port: Option<u16>,
    public_ip: Option<IpAddr>,
    workers: Option<usize>,
    srtp_legacy: Option<bool>,
    ice_servers: Option<Vec<String>>,
    ice_username: Option<String>,
    ice_credential: Option<String>,
    keys_file: Option<PathBuf>,
    hearts_batch_ms: Option<u64>,
    max_streams: Option<usize>,
    max_viewers_per_stream: Option<usize>,
    max_viewers: Option<usize>,
    max_frame_bytes: Option<usize>,
    max_messages_per_sec: Option<u32>,
    max_new_sessions_per_sec_per_ip: Option<u32>,
    max_sessions_per_ip: Option<usize>,
    ip_limits_loopback: Option<LoopbackLimits>,
    http_header_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    ws_idle_timeout_secs: Option<u64>,
    max_queued_messages: Option<usize>,
    drain_timeout_secs: Option<u64>,
    metrics_max_stream_labels: Option<usize>,
    no_keyframe_cache: Option<bool>,
    reconnect_grace_secs: Option<u64>,
    trusted_proxies: Option<Vec<IpAddr>>,
    record_dir: Option<PathBuf>,
    record_retention_hours: Option<f64>,
    record_min_free_mb: Option<u64>,
    cluster_redis: Option<String>,
    node_url: Option<String>,
    cluster_secret: Option<String>,
    max_relays_per_stream: Option<usize>,
    relay_linger_secs: Option<u64>,
    steer_max_viewers: Option<u64>,
    steer_max_egress_mbps: Option<f64>,
    steer_max_cpu_percent: Option<f64>,
}

impl Config {
    /// Reads flags and environment, then fills what neither set from the `--config` file.
    pub fn load() -> anyhow::Result<Self> {
        Self::load_from(std::env::args_os())
    }

    pub fn load_from<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().get_matches_from(args);
        let mut config = Self::from_arg_matches(&matches)?;
        if let Some(path) = config.config.clone() {
            let file = read_file(&path)?;
            config.merge_file(file, |id| {
                !matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            });
        }
        Ok(config)
    }

    /// Takes each setting of `file` that `unset(name)` says neither a flag nor the environment
    /// gave.
    fn merge_file(&mut self, file: FileConfig, unset: impl Fn(&str) -> bool) {
        macro_rules! take {
            ($($field:ident),* ; $($opt:ident),*) => {
                $(if let Some(v) = file.$field && unset(stringify!($field)) { self.$field = v; })*
                $(if let Some(v) = file.$opt && unset(stringify!($opt)) { self.$opt = Some(v); })*
            };
        }
        take!(listen, udp_port, srtp_legacy, ice_servers, hearts_batch_ms, max_streams,
            max_viewers_per_stream, max_viewers, max_frame_bytes, max_messages_per_sec,
            max_new_sessions_per_sec_per_ip, max_sessions_per_ip, ip_limits_loopback, http_header_timeout_secs, max_connections,
            max_connections_per_ip, ws_idle_timeout_secs, max_queued_messages,
            drain_timeout_secs, metrics_max_stream_labels, no_keyframe_cache, reconnect_grace_secs, trusted_proxies, max_relays_per_stream,
            relay_linger_secs, record_retention_hours, record_min_free_mb;
            udp_bind, public_ip, workers, ice_username, ice_credential, keys_file,
            cluster_redis, node_url, cluster_secret, record_dir, steer_max_viewers,
            steer_max_egress_mbps, steer_max_cpu_percent);
    }

    /// The cluster settings when `--cluster-redis` is set; an error when they are incomplete.
    pub fn cluster_settings(&self) -> anyhow::Result<Option<crate::cluster::Settings>> {
        let Some(redis_url) = self.cluster_redis.clone() else {
            return Ok(None);
        };
        let node_url = self
            .node_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned());
        anyhow::ensure!(
            node_url.is_some() || !self.listen.ip().is_unspecified(),
            "cluster mode needs --node-url (the address clients reach this node at) when \
             --listen is {}",
            self.listen
        );
        Ok(Some(crate::cluster::Settings {
            redis_url,
            node_url,
            secret: self.cluster_secret.clone().unwrap_or_default(),
            max_relays_per_stream: self.max_relays_per_stream.max(1),
            capacity: self.max_viewers,
            relay_linger: std::time::Duration::from_secs(self.relay_linger_secs),
            reconnect_grace: std::time::Duration::from_secs(self.reconnect_grace_secs),
            steer: crate::cluster::steer::Thresholds {
                // A node at --max-viewers would refuse the viewer: send it elsewhere instead.
                max_viewers: Some(
                    self.steer_max_viewers
                        .unwrap_or(u64::MAX)
                        .min(self.max_viewers as u64),
                ),
                max_egress_mbps: self.steer_max_egress_mbps,
                max_cpu_percent: self.steer_max_cpu_percent,
            },
        }))
    }

    pub fn worker_count(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The `Link` header values (RFC 9725 §4.6) for the configured ICE servers.
    pub fn ice_server_links(&self) -> Vec<String> {
        self.ice_servers
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(|url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                let turn = url.starts_with("turn:") || url.starts_with("turns:");
                if turn && let (Some(u), Some(c)) = (&self.ice_username, &self.ice_credential) {
                    link += &format!(
                        "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                    );
                }
                link
            })
            .collect()
    }

    /// Whether loopback clients skip the per-address limits (see `ip_limits_loopback`).
    pub fn exempt_loopback(&self) -> bool {
        match self.ip_limits_loopback {
            LoopbackLimits::Auto => self.listen.ip().is_loopback(),
            LoopbackLimits::Exempt => true,
            LoopbackLimits::Enforce => false,
        }
    }

    /// The recording settings, when recording is on.
    pub fn recording(&self) -> Option<crate::recording::RecordingConfig> {
        let dir = self.record_dir.clone()?;
        Some(crate::recording::RecordingConfig {
            dir,
            retention: std::time::Duration::from_secs_f64(
                (self.record_retention_hours.max(0.0) * 3600.0).min(1e12),
            ),
            min_free_bytes: self.record_min_free_mb.saturating_mul(1_000_000),
        })
    }

    pub fn udp_bind_ip(&self) -> IpAddr {
        self.udp_bind.unwrap_or(self.listen.ip())
    }

    /// The address put in candidates: it must be one a client can reach.
    pub fn advertised_ip(&self) -> anyhow::Result<IpAddr> {
        let ip = self.public_ip.unwrap_or(self.udp_bind_ip());
        anyhow::ensure!(
            !ip.is_unspecified(),
            "media binds to {ip}, which cannot be advertised to clients: set --public-ip"
        );
        Ok(ip)
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Config {
        let mut all = vec!["golive"];
        all.extend_from_slice(args);
        Config::load_from(all).unwrap()
    }

    #[test]
    fn defaults_run_a_local_development_server() {
        let c = load(&[]);
        assert_eq!(c.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(c.udp_port, 0);
        assert_eq!(
            c.advertised_ip().unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(c.keys_file.is_none());
        assert_eq!(c.max_frame_bytes, 64 * 1024);
        assert_eq!(c.http_header_timeout_secs, 10);
        assert!(c.max_connections_per_ip > c.max_sessions_per_ip);
        assert!(c.max_connections > c.max_viewers);
    }

    #[test]
    fn cluster_mode_is_off_unless_redis_is_given_and_needs_a_node_url_on_a_wildcard_listener() {
        assert!(load(&[]).cluster_settings().unwrap().is_none());
        let c = load(&[
            "--cluster-redis",
            "redis://127.0.0.1:6379/0",
            "--cluster-secret",
            "s",
        ]);
        let s = c.cluster_settings().unwrap().unwrap();
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379/0");
        assert_eq!(s.node_url, None, "the listening address, once known");
        assert_eq!(s.max_relays_per_stream, 16);
        let wild = load(&[
            "--listen",
            "0.0.0.0:8080",
            "--cluster-redis",
            "redis://r:6379/0",
        ]);
        let e = wild.cluster_settings().unwrap_err();
        assert!(format!("{e}").contains("--node-url"), "{e}");
        let named = load(&[
            "--listen",
            "0.0.0.0:8080",
            "--cluster-redis",
            "redis://r:6379/0",
            "--node-url",
            "http://node1.example:8080/",
        ]);
        let s = named.cluster_settings().unwrap().unwrap();
        assert_eq!(s.node_url.as_deref(), Some("http://node1.example:8080"));
    }

    #[test]
    fn loopback_clients_skip_per_address_limits_only_on_a_loopback_server() {
        assert!(load(&[]).exempt_loopback());
        assert!(!load(&["--listen", "0.0.0.0:8080"]).exempt_loopback());
        assert!(!load(&["--ip-limits-loopback", "enforce"]).exempt_loopback());
        assert!(
            load(&["--listen", "[::]:8080", "--ip-limits-loopback", "exempt"]).exempt_loopback()
        );
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("golive-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("golive.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nmax_streams = 7\nudp_port = 41000\npublic_ip = \"198.51.100.7\"\nice_servers = [\"stun:stun.example.net\"]\nmax_connections_per_ip = 9\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = load(&["--config", p]);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_streams, 7);
        assert_eq!(c.udp_port, 41000);
        assert_eq!(c.public_ip, Some("198.51.100.7".parse().unwrap()));
        assert_eq!(c.ice_servers, vec!["stun:stun.example.net".to_owned()]);
        assert_eq!(c.max_connections_per_ip, 9);
        let c = load(&[
            "--config",
            p,
            "--max-streams",
            "3",
            "--listen",
            "127.0.0.1:9100",
        ]);
        assert_eq!(c.max_streams, 3);
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(
            c.udp_port, 41000,
            "what the flags leave is still read from the file"
        );
        std::fs::write(&path, "max_streamz = 1\n").unwrap();
        let e = Config::load_from(["golive", "--config", p]).unwrap_err();
        assert!(format!("{e:#}").contains("max_streamz"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
