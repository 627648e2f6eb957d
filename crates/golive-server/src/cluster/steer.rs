//! Steering: a node past its capacity sends new viewers to the least-loaded node that has
//! room (a `redirect` message instead of an answer to `watch`, a 307 to WHEP).
//!
//! Each node decides for itself whether it is full, from its own thresholds (viewers, egress,
//! CPU), and says so in its heartbeat record; a node looking for somewhere to send a viewer
//! trusts that word and picks, of the nodes that are not full, the one with the most room
//! left. Pure functions, so the rules are tested without a server.

use std::time::Instant;

use super::registry::NodeRecord;

/// When a node counts as full; `None` leaves that measure out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    /// Viewers (all streams together) this node takes before it sends new ones elsewhere.
    pub max_viewers: Option<u64>,
    /// Egress in megabits per second.
    pub max_egress_mbps: Option<f64>,
    /// The process's CPU use in percent of the whole machine (every core).
    pub max_cpu_percent: Option<f64>,
}

/// A node's load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    pub viewers: u64,
    pub egress_bps: u64,
    pub cpu_percent: f64,
}

impl Thresholds {
    /// Whether a node with `load` takes no new viewer.
    pub fn is_full(&self, load: &Load) -> bool {
        self.max_viewers.is_some_and(|m| load.viewers >= m)
            || self
                .max_egress_mbps
                .is_some_and(|m| load.egress_bps as f64 * 8.0 / 1e6 >= m)
            || self.max_cpu_percent.is_some_and(|m| load.cpu_percent >= m)
    }
}

/// The node to send a viewer to: of `others` (this node left out), those that are not full,
/// the one with the smallest share of its capacity in use, then the least egress.
pub fn least_loaded<'a>(others: &'a [NodeRecord], me: &str) -> Option<&'a NodeRecord> {
    others
        .iter()
        .filter(|n| n.id != me && !n.full && n.viewers < n.capacity)
        .min_by(|a, b| {
            let share = |n: &NodeRecord| n.viewers as f64 / n.capacity.max(1) as f64;
            share(a)
                .total_cmp(&share(b))
                .then(a.egress_bps.cmp(&b.egress_bps))
                .then(a.id.cmp(&b.id))
        })
}

/// The signalling WebSocket URL of a node whose base URL is `base` (`http://host:port`).
pub fn ws_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))
        .unwrap_or_else(|| base.to_owned());
    format!("{rest}/ws")
}

/// Where a WHEP request for `stream` goes on the node a `redirect` names (`ws://host/ws`),
/// with the request's query kept.
pub fn whep_location(ws: &str, stream: &str, query: Option<&str>) -> String {
    let base = ws.strip_suffix("/ws").unwrap_or(ws);
    let base = base
        .strip_prefix("wss://")
        .map(|r| format!("https://{r}"))
        .or_else(|| base.strip_prefix("ws://").map(|r| format!("http://{r}")))
        .unwrap_or_else(|| base.to_owned());
    match query {
        Some(q) if !q.is_empty() => format!("{base}/whep/{stream}?{q}"),
        _ => format!("{base}/whep/{stream}"),
    }
}

/// This process's CPU use between two samples, from `/proc/self/stat` (Linux; elsewhere it
/// reads as zero and only the other measures steer).
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Option<(u64, Instant)>,
}

/// Clock ticks per second of `/proc/self/stat`'s times: `USER_HZ`, 100 on every Linux
/// architecture golive builds for.
const USER_HZ: f64 = 100.0;

impl CpuSampler {
    /// Percent of the whole machine (every core) used since the previous sample.
    pub fn sample(&mut self) -> f64 {
        let Some(ticks) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| process_ticks(&s))
        else {
            return 0.0;
        };
        let now = Instant::now();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let percent = match self.last {
            Some((t, at)) if now > at => {
                let busy = ticks.saturating_sub(t) as f64 / USER_HZ;
                100.0 * busy / now.duration_since(at).as_secs_f64() / cores
            }
            _ => 0.0,
        };
        self.last = Some((ticks, now));
        percent
    }
}

/// User plus system time (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn process_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (the state): utime is the 12th field from there.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::registry::RECORD_VERSION;

    fn node(id: &str, viewers: u64, capacity: u64, full: bool) -> NodeRecord {
        NodeRecord {
            v: RECORD_VERSION,
            id: id.into(),
            url: format!("http://{id}:8080"),
            viewers,
            capacity,
            egress_bps: viewers * 300_000,
            cpu_percent: 0.0,
            full,
            streams: Vec::new(),
        }
    }

    #[test]
    fn a_node_is_full_past_any_of_its_thresholds() {
        let load = Load {
            viewers: 10,
            egress_bps: 2_000_000,
            cpu_percent: 50.0,
        };
        assert!(!Thresholds::default().is_full(&load), "no thresholds");
        let viewers = Thresholds {
            max_viewers: Some(10),
            ..Default::default()
        };
        assert!(viewers.is_full(&load));
        let egress = Thresholds {
            max_egress_mbps: Some(16.0),
            ..Default::default()
        };
        assert!(egress.is_full(&load), "2 MB/s is 16 Mbit/s");
        let cpu = Thresholds {
            max_cpu_percent: Some(80.0),
            max_viewers: Some(11),
            max_egress_mbps: Some(17.0),
        };
        assert!(!cpu.is_full(&load));
        let zero = Thresholds {
            max_viewers: Some(0),
            ..Default::default()
        };
        assert!(zero.is_full(&Load::default()), "capacity 0 takes nobody");
    }

    #[test]
    fn viewers_go_to_the_node_with_the_most_room_never_a_full_one_nor_this_one() {
        let others = [
            node("me", 0, 100, false),
            node("busy", 80, 100, false),
            node("full", 1, 100, true),
            node("big", 100, 1000, false),
            node("capped", 5, 5, false),
        ];
        assert_eq!(
            least_loaded(&others, "me").map(|n| n.id.as_str()),
            Some("big")
        );
        assert!(least_loaded(&others[2..3], "me").is_none());
        assert!(least_loaded(&others[4..], "me").is_none());
    }

    #[test]
    fn redirect_urls_keep_the_scheme_and_whep_keeps_the_query() {
        assert_eq!(ws_url("http://10.0.0.2:8080"), "ws://10.0.0.2:8080/ws");
        assert_eq!(ws_url("https://live.example/"), "wss://live.example/ws");
        assert_eq!(
            whep_location("ws://10.0.0.2:8080/ws", "demo", None),
            "http://10.0.0.2:8080/whep/demo"
        );
        assert_eq!(
            whep_location("wss://live.example/ws", "demo", Some("a=1")),
            "https://live.example/whep/demo?a=1"
        );
    }

    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        let stat = "4242 (golive (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(process_ticks(stat), Some(300));
        assert_eq!(process_ticks("garbage"), None);
    }
}
