//! The figures of a run: a table for people, JSON under fixed keys for scripts.

use golive_client::Pacing;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;

use crate::engine::{PeerKey, ViewerReport};
use crate::run::{Outcome, Protocol};
use crate::stats::{Summary, round3};
use std::sync::atomic::Ordering::Relaxed;

/// CPU microseconds per packet from a CPU % and a packet rate.
fn per_packet(cpu_pct: Option<f64>, pps: Option<f64>) -> Option<f64> {
    let (cpu, pps) = (cpu_pct?, pps?);
    (pps > 0.0).then(|| cpu / 100.0 / pps * 1e6)
}

/// One server's share of a run's viewers (see `--server`).
#[derive(Debug, Clone)]
pub struct NodeFigures {
    pub server: String,
    pub viewers_requested: usize,
    pub viewers_connected: usize,
    pub viewers_with_keyframe: usize,
    pub ttff_ms: Option<Summary>,
    pub packets_received: u64,
    pub packets_lost: u64,
    pub loss_pct: f64,
}

impl NodeFigures {
    fn of(outcome: &Outcome) -> Vec<Self> {
        let o = &outcome.options;
        o.nodes
            .iter()
            .enumerate()
            .map(|(j, node)| {
                let mine: Vec<&ViewerReport> = outcome
                    .viewers
                    .iter()
                    .filter(|v| o.node_index(v.key) == j)
                    .collect();
                let mut ttffs: Vec<f64> = mine
                    .iter()
                    .filter_map(|r| r.ttff)
                    .map(|d| d.as_secs_f64() * 1e3)
                    .collect();
                let received = mine
                    .iter()
                    .map(|r| r.video.received() + r.audio.received())
                    .sum();
                let expected: u64 = mine
                    .iter()
                    .map(|r| r.video.expected() + r.audio.expected())
                    .sum();
                let lost = mine.iter().map(|r| r.video.lost() + r.audio.lost()).sum();
                Self {
                    server: node.name.clone(),
                    viewers_requested: (0..o.viewers)
                        .filter(|&i| o.node_index(i as PeerKey) == j)
                        .count(),
                    viewers_connected: mine.iter().filter(|r| r.connected).count(),
                    viewers_with_keyframe: ttffs.len(),
                    ttff_ms: Summary::of(&mut ttffs),
                    packets_received: received,
                    packets_lost: lost,
                    loss_pct: if expected > 0 {
                        lost as f64 * 100.0 / expected as f64
                    } else {
                        0.0
                    },
                }
            })
            .collect()
    }

    fn to_json(&self) -> Value {
        json!({
            "server": self.server,
            "viewers_requested": self.viewers_requested,
            "viewers_connected": self.viewers_connected,
            "viewers_with_keyframe": self.viewers_with_keyframe,
            "ttff_ms": self.ttff_ms.map_or(Value::Null, Summary::to_json),
            "packets_received": self.packets_received,
            "packets_lost": self.packets_lost,
            "loss_pct": round3(self.loss_pct),
        })
    }
}

/// Where the viewers' video came from, with `--simulcast`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerFigures {
    pub rids: Vec<String>,
    /// Viewers whose last video packet was of each layer (from its payload's stamp).
    pub viewers_on_layer: Vec<usize>,
    /// Video packets all viewers received of each layer.
    pub viewer_packets: Vec<u64>,
    /// Video packets the publisher sent of each layer.
    pub publisher_packets: Vec<u64>,
    /// WebSocket viewers by the layer their last `quality` notice named (low, medium, high);
    /// viewers never moved got none (they are on the lowest layer, where every viewer starts).
    pub notices_last_layer: BTreeMap<String, usize>,
    pub notices: u64,
    /// Moves between layers seen in the viewers' video, in all.
    pub layer_moves: u64,
}

impl LayerFigures {
    fn of(outcome: &Outcome) -> Option<Self> {
        if !outcome.options.simulcast {
            return None;
        }
        let rids: Vec<String> = match &outcome.publisher {
            Some(p) if !p.layers.is_empty() => p.layers.iter().map(|l| l.rid.clone()).collect(),
            _ => golive_client::SIMULCAST_RIDS
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
        };
        let n = rids.len();
        let mut f = Self {
            viewers_on_layer: vec![0; n],
            viewer_packets: vec![0; n],
            publisher_packets: outcome
                .publisher
                .as_ref()
                .map(|p| p.layers.iter().map(|l| l.packets_sent).collect())
                .unwrap_or_default(),
            rids,
            ..Self::default()
        };
        for v in &outcome.viewers {
            if let Some(l) = v.last_layer.filter(|l| *l < n) {
                f.viewers_on_layer[l] += 1;
            }
            for (l, p) in v.layer_packets.iter().enumerate().take(n) {
                f.viewer_packets[l] += p;
            }
            f.layer_moves += v.layer_moves;
        }
        for (layer, count) in outcome.quality_notices.values() {
            *f.notices_last_layer
                .entry(format!("{layer:?}").to_lowercase())
                .or_default() += 1;
            f.notices += count;
        }
        Some(f)
    }

    fn to_json(&self) -> Value {
        json!({
            "rids": self.rids,
            "viewers_on_layer": self.viewers_on_layer,
            "viewer_packets_per_layer": self.viewer_packets,
            "publisher_packets_per_layer": self.publisher_packets,
            "quality_notices": self.notices,
            "viewers_by_last_notice": self.notices_last_layer,
            "layer_moves": self.layer_moves,
        })
    }

    fn line(&self) -> String {
        let per = |v: &[u64]| -> String {
            self.rids
                .iter()
                .zip(v)
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let on: Vec<u64> = self.viewers_on_layer.iter().map(|n| *n as u64).collect();
        format!(
            "simulcast: viewers on layer {}; viewer video packets {}; publisher sent {}; \
             {} quality notices (last: {:?}), {} layer moves",
            per(&on),
            per(&self.viewer_packets),
            per(&self.publisher_packets),
            self.notices,
            self.notices_last_layer,
            self.layer_moves
        )
    }
}

/// What the viewers received of each VP8 temporal layer, with `--temporal-layers` 2 or 3.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemporalFigures {
    /// The publisher's temporal layers.
    pub layers: u8,
    /// Video packets all viewers received of each temporal layer (TID 0 to 3).
    pub viewer_packets: [u64; 4],
}

impl TemporalFigures {
    fn of(outcome: &Outcome) -> Option<Self> {
        let layers = outcome.options.temporal_layers;
        if layers < 2 {
            return None;
        }
        let mut viewer_packets = [0u64; 4];
        for v in &outcome.viewers {
            for (sum, n) in viewer_packets.iter_mut().zip(v.tid_packets) {
                *sum += n;
            }
        }
        Some(Self {
            layers,
            viewer_packets,
        })
    }

    /// The layers the publisher sends, and any other that arrived (from another publisher).
    fn shown(&self) -> &[u64] {
        let last_nonzero = self
            .viewer_packets
            .iter()
            .rposition(|n| *n > 0)
            .unwrap_or(0);
        &self.viewer_packets[..usize::from(self.layers).max(last_nonzero + 1)]
    }

    fn to_json(&self) -> Value {
        json!({
            "layers": self.layers,
            "viewer_packets_per_tid": self.shown(),
        })
    }

    fn line(&self) -> String {
        let per: Vec<String> = self
            .shown()
            .iter()
            .enumerate()
            .map(|(tid, n)| format!("TID {tid} {n}"))
            .collect();
        format!(
            "temporal layers (L1T{}): viewer video packets {}",
            self.layers,
            per.join(", ")
        )
    }
}

/// The report of one run.
#[derive(Debug)]
pub struct Report {
    pub viewers_requested: usize,
    pub viewers_connected: usize,
    pub join_failures: usize,
    /// Viewers that received both audio and video.
    pub viewers_received: usize,
    /// Viewers that assembled a complete keyframe.
    pub viewers_with_keyframe: usize,
    pub ttff_ms: Option<Summary>,
    pub latency_ms: Option<Summary>,
    pub viewer_mbps: Option<Summary>,
    pub packets_received: u64,
    pub packets_expected: u64,
    pub packets_lost: u64,
    pub loss_pct: f64,
    /// Of the loss, what the join bursts lost, and what the live stream lost.
    pub join_lost: u64,
    pub live_loss_pct: f64,
    pub corrupt_packets: u64,
    pub replayed_packets: u64,
    pub foreign_packets: u64,
    pub rx_mbps: Option<f64>,
    pub rates: crate::run::WindowRates,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub server_rss_base_mb: Option<f64>,
    pub load_cpu_pct: Option<f64>,
    /// The viewers' figures per server, in `--server` order.
    pub nodes: Vec<NodeFigures>,
    /// With `--simulcast`.
    pub layers: Option<LayerFigures>,
    /// With `--temporal-layers` 2 or 3.
    pub temporal: Option<TemporalFigures>,
    /// Datagrams the viewers' token buckets (`--viewer-kbps`) delayed and dropped.
    pub shaper_delayed: u64,
    pub shaper_dropped: u64,
    pub outcome: Outcome,
}

impl Report {
    pub fn new(outcome: Outcome) -> Self {
        let v = &outcome.viewers;
        let requested = outcome.options.viewers;
        let connected = v.iter().filter(|r| r.connected).count();
        let received = v
            .iter()
            .filter(|r| r.video.received() > 0 && r.audio.received() > 0)
            .count();
        let mut ttffs: Vec<f64> = v
            .iter()
            .filter_map(|r| r.ttff)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        let mut rates: Vec<f64> = v
            .iter()
            .filter_map(|r| {
                let span = r.last_rx?.duration_since(r.first_rx?).as_secs_f64();
                (span >= 1.0).then(|| r.rx_bytes as f64 * 8.0 / span / 1e6)
            })
            .collect();
        let received_packets: u64 = v
            .iter()
            .map(|r| r.video.received() + r.audio.received())
            .sum();
        let expected: u64 = v
            .iter()
            .map(|r| r.video.expected() + r.audio.expected())
            .sum();
        let lost: u64 = v.iter().map(|r| r.video.lost() + r.audio.lost()).sum();
        let join_lost: u64 = v.iter().map(|r| r.join_lost).sum::<u64>().min(lost);
        let pct = |n: u64| {
            if expected > 0 {
                n as f64 * 100.0 / expected as f64
            } else {
                0.0
            }
        };
        let window = outcome.window_rates();
        let mb = |kb: u64| kb as f64 / 1024.0;
        Self {
            viewers_requested: requested,
            viewers_connected: connected,
            join_failures: requested - connected.min(requested),
            viewers_received: received,
            viewers_with_keyframe: ttffs.len(),
            ttff_ms: Summary::of(&mut ttffs),
            latency_ms: outcome.latency.summary(),
            viewer_mbps: Summary::of(&mut rates),
            packets_received: received_packets,
            packets_expected: expected,
            packets_lost: lost,
            loss_pct: pct(lost),
            join_lost,
            live_loss_pct: pct(lost - join_lost),
            corrupt_packets: v.iter().map(|r| r.corrupt).sum(),
            replayed_packets: v.iter().map(|r| r.replayed).sum(),
            foreign_packets: v.iter().map(|r| r.foreign).sum(),
            rx_mbps: window.rx_mbps,
            rates: window,
            server_cpu_pct: window.server_cpu_pct,
            server_rss_mb: outcome.server_rss_max_kb().map(mb),
            server_rss_base_mb: outcome.server_rss_base_kb.map(mb),
            load_cpu_pct: window.load_cpu_pct,
            nodes: NodeFigures::of(&outcome),
            layers: LayerFigures::of(&outcome),
            temporal: TemporalFigures::of(&outcome),
            shaper_delayed: v.iter().map(|r| r.shaper_delayed).sum(),
            shaper_dropped: v.iter().map(|r| r.shaper_dropped).sum(),
            outcome,
        }
    }

    pub fn to_json(&self) -> Value {
        let o = &self.outcome;
        let opt = |v: Option<f64>| v.map(round3);
        let summary = |s: Option<Summary>| s.map_or(Value::Null, Summary::to_json);
        let per_viewer_mb = match (self.server_rss_mb, self.server_rss_base_mb) {
            (Some(rss), Some(base)) if self.viewers_connected > 0 => {
                Some((rss - base) / self.viewers_connected as f64)
            }
            _ => None,
        };
        let p = o.publisher.clone().unwrap_or_default();
        let ws = &o.ws;
        json!({
            "viewers_requested": self.viewers_requested,
            "viewers_connected": self.viewers_connected,
            "join_failures": self.join_failures,
            "ttff_ms": summary(self.ttff_ms),
            "latency_ms": summary(self.latency_ms),
            "loss_pct": round3(self.loss_pct),
            "rx_mbps": opt(self.rx_mbps),
            "server_cpu_pct": opt(self.server_cpu_pct),
            "server_rss_mb": opt(self.server_rss_mb),
            // Beyond the fixed keys: what explains them.
            // Per server, in --server order (one entry for one server); the publisher is on
            // the first. Latency is not split: it is measured per engine, not per viewer.
            "nodes": self.nodes.iter().map(NodeFigures::to_json).collect::<Vec<_>>(),
            "viewers_received": self.viewers_received,
            "viewers_with_keyframe": self.viewers_with_keyframe,
            "viewers_ended_early": o.ended_early,
            "viewer_mbps": summary(self.viewer_mbps),
            "packets_received": self.packets_received,
            "packets_expected": self.packets_expected,
            "packets_lost": self.packets_lost,
            "join_packets_lost": self.join_lost,
            "live_loss_pct": round3(self.live_loss_pct),
            "corrupt_packets": self.corrupt_packets,
            "replayed_packets": self.replayed_packets,
            "foreign_packets": self.foreign_packets,
            "latency_samples": o.latency.count(),
            "server_rss_base_mb": opt(self.server_rss_base_mb),
            "server_mb_per_viewer": opt(per_viewer_mb),
            "load_cpu_pct": opt(self.load_cpu_pct),
            // Over the steady window (every viewer in), which these CPU figures also cover.
            "steady_window_s": round3(self.rates.seconds),
            "rx_pps": opt(self.rates.rx_pps),
            // Server CPU time per packet a viewer received: the cost of one forwarded packet.
            "server_us_per_packet": opt(per_packet(self.server_cpu_pct, self.rates.rx_pps)),
            "load_us_per_packet": opt(per_packet(self.load_cpu_pct, self.rates.rx_pps)),
            "viewer_socket_drops": o.viewer_socket_drops,
            "server_socket_drops": o.server_socket_drops,
            "join_errors": o.join_errors,
            // Signalling: every frame our WebSockets received (viewers and publisher), over
            // the run, and per second over the steady window.
            "ws_messages_in": ws.messages_in.load(Relaxed),
            "ws_bytes_in": ws.bytes_in.load(Relaxed),
            "ws_messages_in_per_s": opt(self.rates.ws_messages_per_s),
            "ws_bytes_in_per_s": opt(self.rates.ws_bytes_per_s),
            "hearts_batches_in": ws.hearts_batches_in.load(Relaxed),
            "hearts_in": ws.hearts_in.load(Relaxed),
            "hearts_total_seen": ws.hearts_total_seen.load(Relaxed),
            "chat_in": ws.chat_in.load(Relaxed),
            "viewers_messages_in": ws.viewers_in.load(Relaxed),
            "rate_limited_errors": ws.rate_limited_errors.load(Relaxed),
            "other_errors_in": ws.other_errors.load(Relaxed),
            "hearts_sent": ws.hearts_sent.load(Relaxed),
            "chat_sent": ws.chat_sent.load(Relaxed),
            "delete_failures": o.delete_failures,
            "simulcast": self.layers.as_ref().map_or(Value::Null, LayerFigures::to_json),
            "temporal": self.temporal.as_ref().map_or(Value::Null, TemporalFigures::to_json),
            "viewer_shaper_delayed": self.shaper_delayed,
            "viewer_shaper_dropped": self.shaper_dropped,
            "publisher": if o.options.publish { json!({
                "connected": p.connected,
                "packets_sent": p.packets_sent,
                "bytes_sent": p.bytes_sent,
                "keyframes_sent": p.keyframes_sent,
                "keyframe_requests": p.keyframe_requests,
                "write_errors": p.write_errors,
                "layers": p.layers.iter().map(|l| json!({
                    "rid": l.rid,
                    "packets_sent": l.packets_sent,
                    "bytes_sent": l.bytes_sent,
                    "keyframe_requests": l.keyframe_requests,
                })).collect::<Vec<_>>(),
            }) } else { Value::Null },
            "config": {
                "servers": o.options.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
                "stream": o.options.stream,
                "viewers": o.options.viewers,
                "ramp_per_s": o.options.ramp,
                "duration_s": o.options.duration.as_secs_f64(),
                "bitrate_bps": o.options.bitrate_bps,
                "gop_s": o.options.gop.as_secs_f64(),
                "publish": o.options.publish,
                "threads": o.options.threads,
                "srtp": format!("{:?}", o.options.srtp).to_lowercase(),
                "publisher_pacing": match o.options.pacing {
                    Pacing::Burst => "burst",
                    Pacing::Browser => "paced",
                },
                "recv_buffer_bytes": o.options.recv_buffer,
                "protocol": match o.options.viewer_protocol {
                    Protocol::Ws => "ws",
                    Protocol::Http => "whep",
                },
                "publish_protocol": match o.options.publisher_protocol {
                    Protocol::Ws => "ws",
                    Protocol::Http => "whip",
                },
                "simulcast": o.options.simulcast,
                "temporal_layers": o.options.temporal_layers,
                "viewer_twcc": o.options.viewer_twcc,
                "viewer_kbps": o.options.viewer_kbps,
                "heart_rate": o.options.heart_rate,
                "chat_rate": o.options.chat_rate,
                "wall_s": round3(o.wall.as_secs_f64()),
            },
        })
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "viewers: {} requested, {} connected, {} join failures, {} received audio+video, \
             {} with a complete keyframe",
            self.viewers_requested,
            self.viewers_connected,
            self.join_failures,
            self.viewers_received,
            self.viewers_with_keyframe
        );
        let _ = writeln!(
            t,
            "{:<22}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p95", "p99", "max"
        );
        for (name, s) in [
            ("time to first frame ms", self.ttff_ms),
            ("latency ms", self.latency_ms),
            ("viewer Mbit/s", self.viewer_mbps),
        ] {
            match s {
                Some(s) => {
                    let _ = writeln!(
                        t,
                        "{name:<22}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
                        s.p50, s.p95, s.p99, s.max
                    );
                }
                None => {
                    let _ = writeln!(t, "{name:<22}{:>10}", "-");
                }
            }
        }
        if self.nodes.len() > 1 {
            for n in &self.nodes {
                let ttff = n
                    .ttff_ms
                    .map_or("-".to_owned(), |s| format!("{:.2}/{:.2}", s.p50, s.p95));
                let _ = writeln!(
                    t,
                    "  {}: {} of {} viewers connected, ttff p50/p95 {ttff} ms, loss {:.4}%",
                    n.server, n.viewers_connected, n.viewers_requested, n.loss_pct
                );
            }
        }
        let f = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
        let _ = writeln!(
            t,
            "loss {:.4}% ({} of {} packets; {} in join bursts, live loss {:.4}%), corrupt {}, rx {} total",
            self.loss_pct,
            self.packets_lost,
            self.packets_expected,
            self.join_lost,
            self.live_loss_pct,
            self.corrupt_packets,
            f(self.rx_mbps, " Mbit/s")
        );
        let _ = writeln!(
            t,
            "server cpu {} ({} µs per forwarded packet), rss {} (before viewers {}); load tester cpu {}",
            f(self.server_cpu_pct, "%"),
            f(per_packet(self.server_cpu_pct, self.rates.rx_pps), ""),
            f(self.server_rss_mb, " MB"),
            f(self.server_rss_base_mb, " MB"),
            f(self.load_cpu_pct, "%")
        );
        let o = &self.outcome;
        let _ = writeln!(
            t,
            "socket buffer drops: viewers {}, server {}",
            o.viewer_socket_drops, o.server_socket_drops
        );
        let ws = &o.ws;
        let _ = writeln!(
            t,
            "signalling in: {} messages ({} per s), {} bytes ({} per s); hearts batches {} \
             carrying {} hearts (total seen {}), chat {}, viewer counts {}, rate limited {}, \
             other errors {}; sent hearts {}, chat {}",
            ws.messages_in.load(Relaxed),
            f(self.rates.ws_messages_per_s, ""),
            ws.bytes_in.load(Relaxed),
            f(self.rates.ws_bytes_per_s, ""),
            ws.hearts_batches_in.load(Relaxed),
            ws.hearts_in.load(Relaxed),
            ws.hearts_total_seen.load(Relaxed),
            ws.chat_in.load(Relaxed),
            ws.viewers_in.load(Relaxed),
            ws.rate_limited_errors.load(Relaxed),
            ws.other_errors.load(Relaxed),
            ws.hearts_sent.load(Relaxed),
            ws.chat_sent.load(Relaxed),
        );
        if let Some(l) = &self.layers {
            let _ = writeln!(t, "{}", l.line());
        }
        if let Some(l) = &self.temporal {
            let _ = writeln!(t, "{}", l.line());
        }
        if let Some(kbps) = o.options.viewer_kbps {
            let _ = writeln!(
                t,
                "viewer links capped at {kbps} kbit/s (token bucket in the receive path): \
                 {} datagrams delayed, {} dropped",
                self.shaper_delayed, self.shaper_dropped
            );
        }
        for (reason, n) in &o.ended_early {
            let _ = writeln!(t, "ended early ×{n}: {reason}");
        }
        if o.delete_failures > 0 {
            let _ = writeln!(t, "WHIP/WHEP DELETEs refused: {}", o.delete_failures);
        }
        for (e, n) in &o.join_errors {
            let _ = writeln!(t, "join error ×{n}: {e}");
        }
        t
    }
}
