//! Prometheus metrics at `GET /metrics`, in the text exposition format of the `prometheus`
//! crate. Labels stay bounded: no per-viewer label, per-stream labels only for the first
//! `--metrics-max-stream-labels` streams (by name).
//!
//! Media counters live in the workers (no shared state on the packet path); a scrape asks every
//! worker for its totals and adds what changed since the last scrape. A worker restarted after a
//! panic counts from zero again: its totals are then all new. What a worker counted between the
//! last scrape and its panic is lost, which is rare and small next to losing the worker.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Mutex;

use crate::accept::ConnStats;
use crate::worker::{WorkerHealth, WorkerState, WorkerStats};

pub struct Metrics {
    registry: Registry,
    streams: IntGauge,
    viewers: IntGauge,
    stream_viewers: IntGaugeVec,
    peers: IntGaugeVec,
    packets_in: IntCounter,
    packets_out: IntCounter,
    datagrams_in: IntCounter,
    datagrams_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    dropped: IntCounterVec,
    nacks: IntCounter,
    retransmissions: IntCounter,
    rtx_sent: IntCounter,
    layer_switches: IntCounter,
    temporal_switches: IntCounter,
    temporal_dropped: IntCounter,
    probes: IntCounterVec,
    padding_sent: IntCounter,
    twcc_feedback: IntCounterVec,
    keyframe_requests_sent: IntCounter,
    keyframe_requests_received: IntCounter,
    keyframe_cache_hits: IntCounter,
    pub ttff: Histogram,
    signalling_messages: IntCounterVec,
    signalling_errors: IntCounterVec,
    limit_refusals: IntCounterVec,
    cpu_seconds: prometheus::Gauge,
    resident_bytes: IntGauge,
    workers: IntGaugeVec,
    worker_restarts: IntCounter,
    http_connections: IntGauge,
    accept_errors: IntCounter,
    /// At the previous scrape: each worker's totals, all restarts, the connection counters.
    last: Mutex<Last>,
    /// Per-stream labels for at most this many streams.
    max_stream_labels: usize,
}

#[derive(Default)]
struct Last {
    workers: Vec<WorkerStats>,
    restarts: u64,
    connections: ConnStats,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let stream_viewers = IntGaugeVec::new(
            Opts::new(
                "golive_stream_viewers",
                "Viewers of a stream (the first streams by name only)",
            ),
            &["stream"],
        )
        .expect("valid metric");
        r.register(Box::new(stream_viewers.clone()))
            .expect("unique metric");
        let peers = IntGaugeVec::new(
            Opts::new("golive_peers", "Media peers by state"),
            &["state"],
        )
        .expect("valid metric");
        r.register(Box::new(peers.clone())).expect("unique metric");
        let workers = IntGaugeVec::new(
            Opts::new(
                "golive_workers",
                "Media workers by state (restarting: after a panic)",
            ),
            &["state"],
        )
        .expect("valid metric");
        r.register(Box::new(workers.clone()))
            .expect("unique metric");
        let ttff = Histogram::with_opts(
            HistogramOpts::new(
                "golive_ttff_seconds",
                "From a viewer's watch to the first video packet sent to it",
            )
            .buckets(vec![
                0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(ttff.clone())).expect("unique metric");
        let cpu_seconds = prometheus::Gauge::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds",
        )
        .expect("valid metric");
        r.register(Box::new(cpu_seconds.clone()))
            .expect("unique metric");
        Self {
            streams: gauge(&r, "golive_streams", "Live streams"),
            viewers: gauge(&r, "golive_viewers", "Viewers of all streams"),
            stream_viewers,
            peers,
            packets_in: counter(
                &r,
                "golive_packets_in_total",
                "RTP packets received from broadcasters",
            ),
            packets_out: counter(
                &r,
                "golive_packets_out_total",
                "RTP packets forwarded to viewers",
            ),
            datagrams_in: counter(&r, "golive_datagrams_in_total", "UDP datagrams received"),
            datagrams_out: counter(&r, "golive_datagrams_out_total", "UDP datagrams sent"),
            bytes_in: counter(&r, "golive_bytes_in_total", "UDP payload bytes received"),
            bytes_out: counter(&r, "golive_bytes_out_total", "UDP payload bytes sent"),
            dropped: counter_vec(
                &r,
                "golive_packets_dropped_total",
                "Packets dropped, by reason",
                "reason",
            ),
            nacks: counter(
                &r,
                "golive_nacks_total",
                "Packets viewers asked for again (NACK)",
            ),
            retransmissions: counter(
                &r,
                "golive_retransmissions_total",
                "Packets resent to viewers from the history",
            ),
            rtx_sent: counter(&r, "golive_rtx_sent_total", "Retransmissions sent as RTX"),
            layer_switches: counter(
                &r,
                "golive_layer_switches_total",
                "Viewers' moves between simulcast layers (and to and from audio only)",
            ),
            temporal_switches: counter(
                &r,
                "golive_temporal_switches_total",
                "Viewers' changes of temporal layer (frame rate)",
            ),
            temporal_dropped: counter(
                &r,
                "golive_temporal_dropped_total",
                "Video packets not sent to a viewer: their temporal layer is above its link's",
            ),
            probes: counter_vec(
                &r,
                "golive_bandwidth_probes_total",
                "Bandwidth probes of viewers' links, by result",
                "result",
            ),
            padding_sent: counter(
                &r,
                "golive_padding_packets_total",
                "Padding-only packets sent to viewers for bandwidth probes",
            ),
            twcc_feedback: counter_vec(
                &r,
                "golive_twcc_feedback_total",
                "Viewers' transport-wide congestion control feedback, taken or refused",
                "result",
            ),
            keyframe_requests_sent: counter(
                &r,
                "golive_keyframe_requests_sent_total",
                "PLIs sent to broadcasters",
            ),
            keyframe_requests_received: counter(
                &r,
                "golive_keyframe_requests_received_total",
                "PLI/FIR received from viewers",
            ),
            keyframe_cache_hits: counter(
                &r,
                "golive_keyframe_cache_hits_total",
                "Viewers started from the keyframe cache",
            ),
            ttff,
            signalling_messages: counter_vec(
                &r,
                "golive_signalling_messages_total",
                "Signalling messages received, by type",
                "type",
            ),
            signalling_errors: counter_vec(
                &r,
                "golive_signalling_errors_total",
                "Signalling errors sent, by code",
                "code",
            ),
            limit_refusals: counter_vec(
                &r,
                "golive_limit_refusals_total",
                "Requests refused by a limit, by limit",
                "limit",
            ),
            cpu_seconds,
            resident_bytes: gauge(
                &r,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
            ),
            workers,
            worker_restarts: counter(
                &r,
                "golive_worker_restarts_total",
                "Media workers started again after a panic",
            ),
            http_connections: gauge(
                &r,
                "golive_http_connections",
                "HTTP connections open (WebSockets included)",
            ),
            accept_errors: counter(
                &r,
                "golive_http_accept_errors_total",
                "Failed accepts of HTTP connections (out of descriptors, say)",
            ),
            last: Mutex::new(Last::default()),
            registry: r,
            max_stream_labels: usize::MAX,
        }
    }

    /// Per-stream labels for at most `n` streams (the first by name).
    pub fn with_max_stream_labels(mut self, n: usize) -> Self {
        self.max_stream_labels = n;
        self
    }

    pub fn max_stream_labels(&self) -> usize {
        self.max_stream_labels
    }

    pub fn signalling_message(&self, ty: &str) {
        self.signalling_messages.with_label_values(&[ty]).inc();
    }

    pub fn signalling_error(&self, code: &str) {
        self.signalling_errors.with_label_values(&[code]).inc();
    }

    pub fn limit_refused(&self, limit: &str) {
        self.limit_refusals.with_label_values(&[limit]).inc();
    }

    /// Renders everything, after folding in the workers' totals (`None` for a worker that is
    /// down), their health, the HTTP connections and the directory's gauges.
    /// The registry, for metrics that other parts of the server own (the cluster's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn render(
        &self,
        workers: &[Option<WorkerStats>],
        health: &[WorkerHealth],
        connections: &ConnStats,
        streams: usize,
        viewers: usize,
        per_stream: &[(String, usize)],
    ) -> String {
        let mut guard = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Last {
            workers: last,
            restarts: last_restarts,
            connections: last_connections,
        } = &mut *guard;
        last.resize_with(workers.len(), WorkerStats::default);
        let fresh = WorkerStats::default();
        for (w, l) in workers.iter().zip(last.iter_mut()) {
            let Some(w) = w else { continue };
            // Totals of a new life of the worker start from zero.
            let before = if l.incarnation == w.incarnation {
                &*l
            } else {
                &fresh
            };
            self.add_worker_deltas(w, before);
            *l = w.clone();
        }
        let restarts: u64 = health.iter().map(|h| h.restarts).sum();
        self.worker_restarts
            .inc_by(restarts.saturating_sub(*last_restarts));
        *last_restarts = restarts;
        let c = connections;
        let l = &*last_connections;
        for (limit, now, before) in [
            (
                "max_connections",
                c.refused_max_connections,
                l.refused_max_connections,
            ),
            (
                "max_connections_per_ip",
                c.refused_max_connections_per_ip,
                l.refused_max_connections_per_ip,
            ),
            ("http_header_timeout", c.header_timeouts, l.header_timeouts),
            (
                "http_request_timeout",
                c.request_timeouts,
                l.request_timeouts,
            ),
        ] {
            self.limit_refusals
                .with_label_values(&[limit])
                .inc_by(now.saturating_sub(before));
        }
        self.accept_errors
            .inc_by(c.accept_errors.saturating_sub(l.accept_errors));
        self.http_connections.set(c.open as i64);
        *last_connections = c.clone();
        drop(guard);
        let live = workers.iter().flatten();
        let connecting: usize = live.clone().map(|w| w.peers_connecting).sum();
        let connected: usize = live.map(|w| w.peers_connected).sum();
        for state in [WorkerState::Alive, WorkerState::Restarting] {
            let n = health.iter().filter(|h| h.state == state).count();
            self.workers
                .with_label_values(&[state.as_str()])
                .set(n as i64);
        }
        self.peers
            .with_label_values(&["connecting"])
            .set(connecting as i64);
        self.peers
            .with_label_values(&["connected"])
            .set(connected as i64);
        self.streams.set(streams as i64);
        self.viewers.set(viewers as i64);
        self.stream_viewers.reset();
        for (stream, n) in per_stream {
            self.stream_viewers
                .with_label_values(&[stream])
                .set(*n as i64);
        }
        if let Some((cpu, rss)) = process_usage() {
            self.cpu_seconds.set(cpu);
            self.resident_bytes.set(rss as i64);
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Adds what worker `w` counted since `l`.
    fn add_worker_deltas(&self, w: &WorkerStats, l: &WorkerStats) {
        let d = |now: u64, before: u64| now.saturating_sub(before);
        self.packets_in.inc_by(d(w.sfu.rtp_in, l.sfu.rtp_in));
        self.packets_out.inc_by(d(
            w.sfu.rtp_forwarded + w.sfu.cache_packets_sent,
            l.sfu.rtp_forwarded + l.sfu.cache_packets_sent,
        ));
        self.datagrams_in.inc_by(d(w.datagrams_in, l.datagrams_in));
        self.datagrams_out
            .inc_by(d(w.datagrams_out, l.datagrams_out));
        self.bytes_in.inc_by(d(w.bytes_in, l.bytes_in));
        self.bytes_out.inc_by(d(w.bytes_out, l.bytes_out));
        for (reason, now, before) in [
            (
                "unroutable",
                w.sfu.datagrams_unroutable,
                l.sfu.datagrams_unroutable,
            ),
            ("garbage", w.sfu.datagrams_garbage, l.sfu.datagrams_garbage),
            (
                "duplicate_or_padding",
                w.sfu.rtp_dropped_duplicate_or_padding,
                l.sfu.rtp_dropped_duplicate_or_padding,
            ),
            (
                "unknown_payload_type",
                w.sfu.rtp_dropped_unknown_payload_type,
                l.sfu.rtp_dropped_unknown_payload_type,
            ),
            (
                "slow_viewer",
                w.sfu.rtp_dropped_slow_viewer,
                l.sfu.rtp_dropped_slow_viewer,
            ),
            (
                "send_failed",
                w.datagrams_send_failed,
                l.datagrams_send_failed,
            ),
            (
                "worker_queue_full",
                w.media_queue_dropped,
                l.media_queue_dropped,
            ),
        ] {
            self.dropped
                .with_label_values(&[reason])
                .inc_by(d(now, before));
        }
        let (s, b) = (&w.sfu, &l.sfu);
        for (counter, now, before) in [
            (&self.nacks, s.nacked, b.nacked),
            (&self.retransmissions, s.retransmitted, b.retransmitted),
            (&self.rtx_sent, s.retransmitted_rtx, b.retransmitted_rtx),
            (&self.keyframe_requests_sent, s.pli_sent, b.pli_sent),
            (&self.layer_switches, s.layer_switches, b.layer_switches),
            (
                &self.temporal_switches,
                s.temporal_switches,
                b.temporal_switches,
            ),
            (
                &self.temporal_dropped,
                s.rtp_dropped_temporal,
                b.rtp_dropped_temporal,
            ),
            (&self.padding_sent, s.padding_sent, b.padding_sent),
        ] {
            counter.inc_by(d(now, before));
        }
        for (counter, result, now, before) in [
            (&self.probes, "started", s.probes_started, b.probes_started),
            (
                &self.probes,
                "succeeded",
                s.probes_succeeded,
                b.probes_succeeded,
            ),
            (&self.probes, "failed", s.probes_failed, b.probes_failed),
            (
                &self.twcc_feedback,
                "taken",
                s.twcc_feedback_in,
                b.twcc_feedback_in,
            ),
            (
                &self.twcc_feedback,
                "refused",
                s.twcc_feedback_refused,
                b.twcc_feedback_refused,
            ),
        ] {
            counter.with_label_values(&[result]).inc_by(d(now, before));
        }
        self.keyframe_requests_received
            .inc_by(d(w.sfu.keyframe_requests_in, l.sfu.keyframe_requests_in));
        self.keyframe_cache_hits.inc_by(d(
            w.sfu.viewers_started_from_cache,
            l.sfu.viewers_started_from_cache,
        ));
    }
}

/// CPU seconds (user + system) and resident bytes of this process, from /proc.
fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Linux reports in USER_HZ (100 on every mainstream configuration) and 4 KiB pages.
    const USER_HZ: f64 = 100.0;
    const PAGE_BYTES: u64 = 4096;
    Some((ticks as f64 / USER_HZ, pages * PAGE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format_with_deltas_and_process_figures() {
        let m = Metrics::new();
        let mut w = WorkerStats::default();
        w.sfu.rtp_in = 10;
        w.bytes_out = 5000;
        m.signalling_message("watch");
        m.signalling_error("stream_not_found");
        m.limit_refused("max_streams");
        let alive = WorkerHealth {
            index: 0,
            state: WorkerState::Alive,
            peers: 0,
            restarts: 0,
        };
        let health = std::slice::from_ref(&alive);
        let text = m.render(
            &[Some(w.clone())],
            health,
            &ConnStats::default(),
            1,
            3,
            &[("show".into(), 3)],
        );
        assert!(text.contains("golive_packets_in_total 10"), "{text}");
        assert!(text.contains("golive_bytes_out_total 5000"));
        assert!(text.contains("golive_signalling_messages_total{type=\"watch\"} 1"));
        assert!(text.contains("golive_signalling_errors_total{code=\"stream_not_found\"} 1"));
        assert!(text.contains("golive_limit_refusals_total{limit=\"max_streams\"} 1"));
        assert!(text.contains("golive_stream_viewers{stream=\"show\"} 3"));
        assert!(text.contains("golive_viewers 3"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("# TYPE golive_ttff_seconds histogram"));
        w.sfu.rtp_in = 25;
        let text = m.render(&[Some(w.clone())], health, &ConnStats::default(), 0, 0, &[]);
        assert!(text.contains("golive_packets_in_total 25"), "{text}");
        assert!(
            !text.contains("golive_stream_viewers{"),
            "labels of ended streams go"
        );
        assert!(text.contains("golive_worker_restarts_total 0"), "{text}");
        assert!(text.contains("golive_workers{state=\"alive\"} 1"), "{text}");
    }

    #[test]
    fn a_restarted_worker_counts_from_zero_and_its_restarts_are_counted() {
        let m = Metrics::new();
        let mut w = WorkerStats::default();
        w.sfu.rtp_in = 100;
        let mut h = WorkerHealth {
            index: 0,
            state: WorkerState::Alive,
            peers: 2,
            restarts: 0,
        };
        m.render(
            &[Some(w.clone())],
            std::slice::from_ref(&h),
            &ConnStats::default(),
            0,
            0,
            &[],
        );
        // Down: no totals, nothing lost or counted twice.
        h.state = WorkerState::Restarting;
        h.restarts = 1;
        let text = m.render(
            &[None],
            std::slice::from_ref(&h),
            &ConnStats::default(),
            0,
            0,
            &[],
        );
        assert!(text.contains("golive_packets_in_total 100"), "{text}");
        assert!(text.contains("golive_worker_restarts_total 1"), "{text}");
        assert!(
            text.contains("golive_workers{state=\"restarting\"} 1"),
            "{text}"
        );
        // Back, in its second life, with 30 packets since the restart.
        h.state = WorkerState::Alive;
        w.incarnation = 1;
        w.sfu.rtp_in = 30;
        let text = m.render(
            &[Some(w)],
            std::slice::from_ref(&h),
            &ConnStats::default(),
            0,
            0,
            &[],
        );
        assert!(text.contains("golive_packets_in_total 130"), "{text}");
        assert!(text.contains("golive_worker_restarts_total 1"), "{text}");
        assert!(
            text.contains("golive_workers{state=\"restarting\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn http_connections_and_their_refusals_are_exported() {
        let m = Metrics::new();
        let mut c = ConnStats {
            open: 7,
            refused_max_connections_per_ip: 250,
            header_timeouts: 3,
            ..ConnStats::default()
        };
        let text = m.render(&[], &[], &c, 0, 0, &[]);
        assert!(text.contains("golive_http_connections 7"), "{text}");
        assert!(
            text.contains("golive_limit_refusals_total{limit=\"max_connections_per_ip\"} 250"),
            "{text}"
        );
        assert!(text.contains("golive_limit_refusals_total{limit=\"http_header_timeout\"} 3"));
        c.open = 1;
        c.accept_errors = 2;
        c.refused_max_connections = 1;
        let text = m.render(&[], &[], &c, 0, 0, &[]);
        assert!(text.contains("golive_http_connections 1"), "{text}");
        assert!(text.contains("golive_http_accept_errors_total 2"), "{text}");
        assert!(text.contains("golive_limit_refusals_total{limit=\"max_connections\"} 1"));
        assert!(text.contains("golive_limit_refusals_total{limit=\"max_connections_per_ip\"} 250"));
    }
}
