//! What nodes tell each other through Redis, without the Redis: the record each node writes
//! under its heartbeat key, its validation, and how a node merges every other node's record into
//! its view of the cluster. Pure functions, so the rules are tested without a server.

use golive_proto::StreamName;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

use crate::directory::StreamSummary;

/// Version of [`NodeRecord`]; a node ignores (and logs once) a record of another version.
pub const RECORD_VERSION: u32 = 1;

/// A node's heartbeat: who it is, where clients reach it, and its load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub v: u32,
    pub id: String,
    /// Base URL clients and other nodes use (`http://host:port`).
    pub url: String,
    /// Viewers on this node, all streams together.
    pub viewers: u64,
    /// Viewers this node takes at most (`--max-viewers`).
    pub capacity: u64,
    /// Bytes per second this node sent, averaged since its previous heartbeat.
    pub egress_bps: u64,
    /// The process's CPU use in percent of its machine, since its previous heartbeat.
    #[serde(default)]
    pub cpu_percent: f64,
    /// Past its own steering thresholds: it sends new viewers elsewhere, and takes none sent.
    #[serde(default)]
    pub full: bool,
    /// The streams this node holds: those it is the origin of, and those it serves viewers of.
    pub streams: Vec<StreamLoad>,
}

/// One stream on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamLoad {
    pub stream: String,
    pub viewers: u64,
    /// This node holds the broadcaster (and the stream's lease).
    pub origin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_since: Option<String>,
    /// Hearts over the last minute, for the directory's ranking.
    #[serde(default)]
    pub hearts_per_minute: u64,
    /// The path of the stream's latest thumbnail on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail: Option<String>,
}

/// Why another node's record was not used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("not a JSON node record: {0}")]
    Json(String),
    #[error("record version {0}, this node reads version {RECORD_VERSION}")]
    Version(u32),
    #[error("bad field: {0}")]
    Field(String),
}

impl NodeRecord {
    /// Reads and checks a record as Redis returned it.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        let r: NodeRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))?;
        if r.v != RECORD_VERSION {
            return Err(RecordError::Version(r.v));
        }
        if r.id.is_empty() {
            return Err(RecordError::Field("empty id".into()));
        }
        if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            return Err(RecordError::Field(format!(
                "url {:?} is not http(s)",
                r.url
            )));
        }
        for s in &r.streams {
            StreamName::new(&s.stream)
                .map_err(|e| RecordError::Field(format!("stream {:?}: {e}", s.stream)))?;
            // Another node's page shows it as an image's address: only the form we send.
            if let Some(path) = &s.thumbnail
                && !path
                    .strip_prefix(&format!("/api/streams/{}/thumbnail.jpg?v=", s.stream))
                    .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(RecordError::Field(format!("thumbnail {path:?}")));
            }
        }
        Ok(r)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a node record serializes")
    }
}

/// The cluster as one node sees it after reading every heartbeat.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// The other live nodes.
    pub others: Vec<NodeRecord>,
}

impl View {
    /// Members of the cluster, this node included.
    pub fn members(&self) -> usize {
        self.others.len() + 1
    }

    /// Viewers of each stream on the other nodes.
    pub fn remote_viewers(&self) -> HashMap<StreamName, usize> {
        let mut out: HashMap<StreamName, usize> = HashMap::new();
        for s in self.others.iter().flat_map(|n| &n.streams) {
            if let Ok(name) = StreamName::new(&s.stream) {
                *out.entry(name).or_default() += s.viewers as usize;
            }
        }
        out
    }

    /// The base URL of node `id`, when it is alive.
    pub fn url_of(&self, id: &str) -> Option<&str> {
        self.others
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.url.as_str())
    }

    /// The whole cluster's live streams: this node's own (`local`, whose viewer counts are its
    /// own viewers only) and those whose origin is another node, each with its viewers on every
    /// node, sorted by name.
    pub fn streams(&self, local: Vec<StreamSummary>) -> Vec<StreamSummary> {
        let remote = self.remote_viewers();
        let mut out: Vec<StreamSummary> = local
            .into_iter()
            .map(|mut s| {
                if let Ok(name) = StreamName::new(&s.stream) {
                    s.viewers += remote.get(&name).copied().unwrap_or(0);
                }
                s
            })
            .collect();
        for node in &self.others {
            for s in node.streams.iter().filter(|s| s.origin) {
                if out.iter().any(|o| o.stream == s.stream) {
                    continue;
                }
                let viewers = StreamName::new(&s.stream)
                    .ok()
                    .and_then(|n| remote.get(&n).copied())
                    .unwrap_or(0);
                out.push(StreamSummary {
                    stream: s.stream.clone(),
                    title: s.title.clone(),
                    viewers,
                    live_since: s.live_since.clone().unwrap_or_default(),
                    hearts_per_minute: s.hearts_per_minute,
                    score: 0.0,
                    rank: 0,
                    // The origin serves it: the directory page shows it from there.
                    thumbnail: s
                        .thumbnail
                        .as_ref()
                        .map(|path| format!("{}{path}", node.url.trim_end_matches('/'))),
                });
            }
        }
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        // Viewers on other nodes count too: the ranks are the cluster's.
        crate::directory::rank(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, streams: Vec<StreamLoad>) -> NodeRecord {
        NodeRecord {
            v: RECORD_VERSION,
            id: id.into(),
            url: format!("http://{id}.example:8080"),
            viewers: streams.iter().map(|s| s.viewers).sum(),
            capacity: 100,
            egress_bps: 0,
            cpu_percent: 0.0,
            full: false,
            streams,
        }
    }

    fn load(stream: &str, viewers: u64, origin: bool) -> StreamLoad {
        StreamLoad {
            stream: stream.into(),
            viewers,
            origin,
            title: origin.then(|| format!("{stream} title")),
            live_since: origin.then(|| "2026-01-01T00:00:00Z".into()),
            hearts_per_minute: 0,
            thumbnail: None,
        }
    }

    #[test]
    fn a_record_round_trips_and_malformed_ones_are_errors_not_panics() {
        let r = node("a", vec![load("demo", 3, true)]);
        assert_eq!(NodeRecord::parse(r.to_json().as_bytes()), Ok(r.clone()));
        assert!(matches!(
            NodeRecord::parse(b"\xff\x00"),
            Err(RecordError::Json(_))
        ));
        assert!(matches!(
            NodeRecord::parse(b"{\"v\":1}"),
            Err(RecordError::Json(_))
        ));
        let mut other = r.clone();
        other.v = 9;
        assert_eq!(
            NodeRecord::parse(other.to_json().as_bytes()),
            Err(RecordError::Version(9))
        );
        let mut bad = r.clone();
        bad.streams[0].stream = "no spaces allowed".into();
        assert!(matches!(
            NodeRecord::parse(bad.to_json().as_bytes()),
            Err(RecordError::Field(_))
        ));
        let mut bad = r.clone();
        bad.streams[0].thumbnail = Some("javascript:alert(1)".into());
        assert!(matches!(
            NodeRecord::parse(bad.to_json().as_bytes()),
            Err(RecordError::Field(_))
        ));
        let mut thumbnailed = r.clone();
        thumbnailed.streams[0].thumbnail = Some("/api/streams/demo/thumbnail.jpg?v=3".into());
        assert_eq!(
            NodeRecord::parse(thumbnailed.to_json().as_bytes()),
            Ok(thumbnailed.clone())
        );
        let mut bad = r;
        bad.url = "javascript:alert(1)".into();
        assert!(matches!(
            NodeRecord::parse(bad.to_json().as_bytes()),
            Err(RecordError::Field(_))
        ));
    }

    #[test]
    fn another_origins_thumbnail_is_listed_at_that_node() {
        let mut far = load("far", 1, true);
        far.thumbnail = Some("/api/streams/far/thumbnail.jpg?v=2".into());
        far.hearts_per_minute = 4;
        let view = View {
            others: vec![node("b", vec![far])],
        };
        let all = view.streams(Vec::new());
        assert_eq!(
            all[0].thumbnail.as_deref(),
            Some("http://b.example:8080/api/streams/far/thumbnail.jpg?v=2")
        );
        assert_eq!(all[0].hearts_per_minute, 4);
        assert_eq!(all[0].rank, 1);
    }

    #[test]
    fn streams_of_other_origins_are_listed_with_viewers_summed_over_nodes() {
        let view = View {
            others: vec![
                node("b", vec![load("far", 2, true), load("near", 4, false)]),
                node("c", vec![load("far", 5, false)]),
            ],
        };
        let local = vec![StreamSummary {
            stream: "near".into(),
            title: Some("mine".into()),
            viewers: 1,
            live_since: "2026-01-01T00:00:00Z".into(),
            hearts_per_minute: 0,
            score: 1.0,
            rank: 1,
            thumbnail: None,
        }];
        let all = view.streams(local);
        let rows: Vec<(&str, usize, usize)> = all
            .iter()
            .map(|s| (s.stream.as_str(), s.viewers, s.rank))
            .collect();
        assert_eq!(rows, [("far", 7, 1), ("near", 5, 2)], "ranked cluster-wide");
        assert_eq!(all[0].title.as_deref(), Some("far title"));
        assert_eq!(all[1].title.as_deref(), Some("mine"));
        assert_eq!(view.members(), 3);
        assert_eq!(view.url_of("c"), Some("http://c.example:8080"));
        assert_eq!(view.url_of("gone"), None);
    }
}
