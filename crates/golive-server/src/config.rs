//! The server's configuration: command-line flags, each with an environment twin.

use clap::Parser;
use std::net::{IpAddr, SocketAddr};

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

    /// Username for the `turn:`/`turns:` servers of --ice-server.
    #[arg(long, env = "GOLIVE_ICE_USERNAME")]
    pub ice_username: Option<String>,

    /// Credential (password) for the `turn:`/`turns:` servers of --ice-server.
    #[arg(long, env = "GOLIVE_ICE_CREDENTIAL", hide_env_values = true)]
    pub ice_credential: Option<String>,
}

impl Config {
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
