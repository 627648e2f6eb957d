//! The directory of live streams, shared by every signalling session: who broadcasts each
//! stream, its media (which viewers on any worker need), and who watches it.

use golive_proto::{EndReason, ErrorCode, ProtocolError, ServerMessage, StreamName};
use golive_sfu::StreamMedia;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

use crate::session::{SessionEvent, SessionId};

/// Viewer counts go out at most this often per stream.
pub const VIEWER_COUNT_INTERVAL: Duration = Duration::from_secs(1);

type EventTx = mpsc::UnboundedSender<SessionEvent>;

struct StreamEntry {
    publisher: SessionId,
    publisher_tx: EventTx,
    media: Arc<StreamMedia>,
    title: Option<String>,
    live_since: SystemTime,
    viewers: HashMap<SessionId, EventTx>,
    last_count_sent: Option<(usize, Instant)>,
}

/// One row of `GET /api/streams`.
#[derive(Debug, Serialize)]
pub struct StreamSummary {
    pub stream: String,
    pub title: Option<String>,
    pub viewers: usize,
    pub live_since: String,
}

#[derive(Default)]
pub struct Directory {
    streams: Mutex<HashMap<StreamName, StreamEntry>>,
}

impl Directory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, StreamEntry>> {
        // A panic while holding the lock is a bug elsewhere; the map itself stays consistent
        // (every update is a single insert or remove), so keep serving.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `stream` for a broadcaster; `stream_busy` if someone broadcasts it already.
    pub fn claim(
        &self,
        stream: &StreamName,
        publisher: SessionId,
        publisher_tx: EventTx,
        media: StreamMedia,
        title: Option<String>,
    ) -> Result<(), ProtocolError> {
        let mut streams = self.lock();
        if streams.contains_key(stream) {
            return Err(ProtocolError::new(
                ErrorCode::StreamBusy,
                format!("stream \"{stream}\" is already live"),
            ));
        }
        streams.insert(
            stream.clone(),
            StreamEntry {
                publisher,
                publisher_tx,
                media: Arc::new(media),
                title,
                live_since: SystemTime::now(),
                viewers: HashMap::new(),
                last_count_sent: None,
            },
        );
        Ok(())
    }

    /// Ends a broadcast: every viewer is told and dropped from the stream.
    pub fn release(&self, stream: &StreamName, publisher: SessionId, reason: EndReason) {
        let entry = {
            let mut streams = self.lock();
            match streams.get(stream) {
                Some(e) if e.publisher == publisher => streams.remove(stream),
                _ => None,
            }
        };
        if let Some(e) = entry {
            for tx in e.viewers.values() {
                let _ = tx.send(SessionEvent::Ended(reason));
            }
        }
    }

    /// Adds a viewer; returns the stream's media, or `stream_not_found`.
    pub fn watch(
        &self,
        stream: &StreamName,
        viewer: SessionId,
        tx: EventTx,
    ) -> Result<Arc<StreamMedia>, ProtocolError> {
        let mut streams = self.lock();
        let Some(e) = streams.get_mut(stream) else {
            return Err(ProtocolError::new(
                ErrorCode::StreamNotFound,
                format!("stream \"{stream}\" is not live"),
            ));
        };
        e.viewers.insert(viewer, tx);
        Ok(e.media.clone())
    }

    pub fn unwatch(&self, stream: &StreamName, viewer: SessionId) {
        if let Some(e) = self.lock().get_mut(stream) {
            e.viewers.remove(&viewer);
        }
    }

    pub fn list(&self) -> Vec<StreamSummary> {
        let streams = self.lock();
        let mut out: Vec<StreamSummary> = streams
            .iter()
            .map(|(name, e)| StreamSummary {
                stream: name.to_string(),
                title: e.title.clone(),
                viewers: e.viewers.len(),
                live_since: rfc3339(e.live_since),
            })
            .collect();
        out.sort_by(|a, b| a.stream.cmp(&b.stream));
        out
    }

    pub fn stream_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends each stream's viewer count to its broadcaster and viewers, when it changed and
    /// the last count went out at least [`VIEWER_COUNT_INTERVAL`] ago.
    pub fn send_viewer_counts(&self, now: Instant) {
        let mut streams = self.lock();
        for e in streams.values_mut() {
            let count = e.viewers.len();
            let due = match e.last_count_sent {
                None => true,
                Some((last, at)) => last != count && now >= at + VIEWER_COUNT_INTERVAL,
            };
            if !due {
                continue;
            }
            e.last_count_sent = Some((count, now));
            let msg = ServerMessage::Viewers {
                count: count as u64,
            };
            let _ = e.publisher_tx.send(SessionEvent::Message(msg.clone()));
            for tx in e.viewers.values() {
                let _ = tx.send(SessionEvent::Message(msg.clone()));
            }
        }
    }
}

/// RFC 3339 in UTC with second precision, without pulling in a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_315_845);
        assert_eq!(rfc3339(t), "2026-11-22T02:50:45Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
