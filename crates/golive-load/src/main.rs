//! `golive-load`: a load tester for golive that speaks only the wire (the WebSocket
//! signalling protocol, then WebRTC), so it can load any golive server.
//!
//! How it works: a publisher sends a synthetic VP8 + Opus broadcast at `--bitrate`, each
//! payload stamped with its send time; viewers join at `--ramp` per second and stay for
//! `--duration` seconds. Every peer is a sans-IO `rtc` peer connection; a few engine threads
//! (one per core by default) each drive hundreds of them over their own UDP sockets with one
//! epoll loop (see `engine.rs` for why). Viewers decrypt and check each packet, never decode,
//! and measure time to first frame, one-way latency, loss and bitrate. The control side
//! (signalling, the ramp, the once-a-second sampler) is a single-threaded tokio runtime.

// The report's `json!` literal is deeper than the default macro recursion limit.
#![recursion_limit = "256"]

mod engine;
mod procfs;
mod report;
mod run;
mod shaper;
mod stats;

use anyhow::{Context, Result, bail};
use clap::Parser;
use golive_client::{Pacing, SrtpOffer};
use std::time::Duration;

/// Loads a golive server with one publisher and many WebRTC viewers, and reports time to first
/// frame, latency, loss and bitrate (and the server's CPU and memory with --server-pid).
#[derive(Debug, Parser)]
#[command(name = "golive-load", version)]
struct Cli {
    /// The server's HTTP address (`http://host:port`) or its WebSocket URL. Several (repeat
    /// the flag, or separate them with commas) load a cluster: the publisher goes to the first,
    /// viewers go round-robin to all of them, and the report splits its figures per server.
    #[arg(long, default_value = "http://127.0.0.1:8080", value_delimiter = ',', num_args = 1..)]
    server: Vec<String>,
    /// The stream to publish and watch.
    #[arg(long, default_value = "bench")]
    stream: String,
    /// How many viewers.
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// Viewers joining per second.
    #[arg(long, default_value_t = 50.0)]
    ramp: f64,
    /// How long each viewer stays, in seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// The broadcast's bitrate, audio (64 kbit/s Opus) and video together: 2500k, 2.5M...
    #[arg(long, default_value = "2500k", value_parser = parse_bitrate)]
    bitrate: u64,
    /// Seconds between the publisher's natural keyframes (it also answers PLI and FIR).
    #[arg(long, default_value_t = 2.0)]
    gop: f64,
    /// Watch a stream someone else publishes. Latency is measured on golive-load's own
    /// payloads (another instance on this host, e.g. one run with `--viewers 0`).
    #[arg(long)]
    no_publish: bool,
    /// The server's process id: report its CPU and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Viewer threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
    /// SRTP profiles the peers offer: gcm (golive's default), cm (needs the server's
    /// --srtp-legacy) or chromium (both, CM first, as Chromium offers them).
    #[arg(long, value_enum, default_value_t = Srtp::Gcm)]
    srtp: Srtp,
    /// SO_RCVBUF of each viewer socket, in bytes (0: the system default). The default is what
    /// Chromium's WebRTC asks for its media socket (256 KiB; Linux doubles it).
    #[arg(long, default_value_t = 262_144)]
    recv_buffer: usize,
    /// How viewers signal: `ws` (golive's WebSocket protocol) or `whep` (HTTP POST of the
    /// offer to /whep/<stream>, DELETE at the end; time to first frame counts from the POST).
    #[arg(long, value_enum, default_value_t = ViewerProtocol::Ws)]
    protocol: ViewerProtocol,
    /// How the publisher signals: `ws` or `whip` (POST /whip/<stream>, DELETE at the end).
    #[arg(long, value_enum, default_value_t = PublisherProtocol::Ws)]
    publish_protocol: PublisherProtocol,
    /// Hearts each viewer sends per second on its WebSocket (fractions allowed: 0.1 is one
    /// every ten seconds), jittered so viewers do not send together.
    #[arg(long, default_value_t = 0.0)]
    heart_rate: f64,
    /// Chat messages each viewer sends per second (the server allows a burst of 5, then 1/s).
    #[arg(long, default_value_t = 0.0)]
    chat_rate: f64,
    /// Send each video frame's packets in one burst, the moment the frame is made (the load
    /// tester's older publisher). By default the publisher paces as a browser does: a frame's
    /// packets leave in bursts of at most 5 ms at 2.5 times the bitrate (a 2.5 Mbit/s keyframe
    /// over about 50 ms), and latency counts from when each packet left the pacer.
    #[arg(long)]
    burst: bool,
    /// The publisher sends three simulcast layers (rids q, h, f), as a browser does: f at
    /// --bitrate, h at a fifth of it and q at a sixteenth (2.5M, 500k and about 150k), each
    /// its own SSRC, numbering and stamped source; audio goes once. The report says which
    /// layer each viewer ended on (from its payloads' stamps, and the server's `quality`
    /// notices to WebSocket viewers) and counts packets per layer.
    #[arg(long)]
    simulcast: bool,
    /// VP8 temporal layers the publisher sends (1, 2 or 3: L1T1, L1T2, L1T3), on each simulcast
    /// layer too: with 2 or 3, every video packet carries the extended VP8 descriptor (picture
    /// id, TL0PICIDX, TID, layer sync) and frames follow libwebrtc's layer pattern (0,1,0,1…
    /// or 0,2,1,2…) from each keyframe. The report counts the packets viewers received of each
    /// temporal layer.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    temporal_layers: u8,
    /// Viewers offer the transport-cc header extension and send TWCC feedback (rtc's TWCC
    /// receiver interceptor), as browsers do, so the server's per-viewer estimate sees their
    /// links; `off`: no feedback at all.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    viewer_twcc: OnOff,
    /// Caps each viewer's downlink at N kbit/s with a token bucket in the load tester's receive
    /// path, in front of each viewer's peer: datagrams beyond the rate wait (up to 50 ms, with
    /// a burst of 5 ms of the rate or 3,000 bytes) or are dropped, as a `tc tbf` qdisc with
    /// `latency 50ms` would, so the viewer's TWCC feedback shows the capped link. It is not a
    /// kernel qdisc: the server's sends and loopback are untouched.
    #[arg(long)]
    viewer_kbps: Option<u64>,
    /// Write the figures as JSON to this file (`-` for stdout).
    #[arg(long)]
    json: Option<String>,
    /// No progress line.
    #[arg(long, short)]
    quiet: bool,
}

/// Which SRTP profiles the peers offer (see [`SrtpOffer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Srtp {
    Gcm,
    Cm,
    Chromium,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ViewerProtocol {
    Ws,
    Whep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PublisherProtocol {
    Ws,
    Whip,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if [cli.heart_rate, cli.chat_rate]
        .iter()
        .any(|v| !v.is_finite() || *v < 0.0)
    {
        bail!("--heart-rate and --chat-rate are zero or positive");
    }
    if cli.protocol == ViewerProtocol::Whep && (cli.heart_rate > 0.0 || cli.chat_rate > 0.0) {
        bail!(
            "WHEP viewers have no signalling socket: --heart-rate and --chat-rate need --protocol ws"
        );
    }
    if cli.viewers == 0 && cli.no_publish {
        bail!("nothing to do: no viewers and --no-publish");
    }
    if [cli.ramp, cli.duration, cli.gop]
        .iter()
        .any(|v| v.is_nan() || *v <= 0.0)
    {
        bail!("--ramp, --duration and --gop must be positive");
    }
    golive_proto::StreamName::new(&cli.stream).context("--stream")?;
    if cli.viewer_kbps == Some(0) {
        bail!("--viewer-kbps must be positive");
    }
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let options = run::Options {
        nodes: cli
            .server
            .iter()
            .map(|s| {
                Ok(run::Node {
                    name: s.clone(),
                    ws_url: golive_client::signal::ws_url(s),
                    http: golive_client::http::authority(s)
                        .with_context(|| format!("--server {s}"))?,
                })
            })
            .collect::<Result<_>>()?,
        viewer_protocol: match cli.protocol {
            ViewerProtocol::Ws => run::Protocol::Ws,
            ViewerProtocol::Whep => run::Protocol::Http,
        },
        publisher_protocol: match cli.publish_protocol {
            PublisherProtocol::Ws => run::Protocol::Ws,
            PublisherProtocol::Whip => run::Protocol::Http,
        },
        heart_rate: cli.heart_rate,
        chat_rate: cli.chat_rate,
        stream: cli.stream,
        viewers: cli.viewers,
        ramp: cli.ramp,
        duration: Duration::from_secs_f64(cli.duration),
        bitrate_bps: cli.bitrate,
        gop: Duration::from_secs_f64(cli.gop),
        publish: !cli.no_publish,
        server_pid: cli.server_pid,
        threads,
        srtp: match cli.srtp {
            Srtp::Gcm => SrtpOffer::Gcm,
            Srtp::Cm => SrtpOffer::Cm,
            Srtp::Chromium => SrtpOffer::Chromium,
        },
        pacing: if cli.burst {
            Pacing::Burst
        } else {
            Pacing::Browser
        },
        recv_buffer: (cli.recv_buffer > 0).then_some(cli.recv_buffer),
        progress: !cli.quiet,
        simulcast: cli.simulcast,
        temporal_layers: cli.temporal_layers,
        viewer_twcc: cli.viewer_twcc == OnOff::On,
        viewer_kbps: cli.viewer_kbps,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let outcome = runtime.block_on(run::run(options))?;
    let report = report::Report::new(outcome);
    eprint!("{}", report.table());
    if let Some(path) = cli.json {
        let text = serde_json::to_string_pretty(&report.to_json())? + "\n";
        if path == "-" {
            print!("{text}");
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {path}"))?;
        }
    }
    Ok(())
}

/// Parses a bitrate such as `2500k`, `2.5M` or `2500000` into bits per second.
fn parse_bitrate(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        Some((i, 'g' | 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a bitrate: {s:?} (try 2500k or 2.5M)"))?;
    if v.is_nan() || v <= 0.0 {
        return Err(format!("bitrate must be positive: {s:?}"));
    }
    Ok((v * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_parse_with_suffixes() {
        assert_eq!(parse_bitrate("2500k"), Ok(2_500_000));
        assert_eq!(parse_bitrate("2.5M"), Ok(2_500_000));
        assert_eq!(parse_bitrate("800000"), Ok(800_000));
        assert!(parse_bitrate("fast").is_err());
        assert!(parse_bitrate("0").is_err());
    }
}
