//! A client's outbound queue, shared by both front-ends: the one place where the server decides
//! that a client is too slow.

use axum::extract::ws::Utf8Bytes;
use golive_proto::ServerMessage;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What a session sends on its own: its own messages, and frames shared with a whole audience
/// (serialized once).
#[derive(Debug, Clone)]
pub enum Outgoing {
    Message(ServerMessage),
    Frame(Utf8Bytes),
}

/// A client's outbound queue: what its session sends on its own (audience frames, `ended`),
/// on its way to the front-end that writes it to the client. Bounded, and a push never waits,
/// whoever pushes (the directory pushes with its lock held): a push that finds the queue full
/// cuts the client instead. That is the one slow-client rule, whatever the front-end: a client
/// that reads keeps its queue near empty (the socket's buffers take what it has not read yet),
/// so a full queue means it stopped reading, or cannot keep up with its audience. A front-end
/// drains it between the client's requests, not while the session answers one (a publish or a
/// watch waits milliseconds for a media worker): what arrives meanwhile waits here, and the
/// capacity must allow for it.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    cut: Arc<watch::Sender<bool>>,
}

impl Outbox {
    pub fn push(&self, m: Outgoing) {
        // A closed queue is a front-end that is already gone: nobody to tell.
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(m) {
            self.cut.send_replace(true);
        }
    }
}

/// The front-end's end of a client's [`Outbox`].
pub struct OutboxRx {
    rx: mpsc::Receiver<Outgoing>,
    cut: watch::Receiver<bool>,
}

/// What a front-end takes from a client's queue.
#[derive(Debug)]
pub enum Next {
    /// Send this to the client.
    Send(Outgoing),
    /// The queue filled up: the client does not read; close its connection.
    Cut,
    /// The session ended on its own (the server is shutting down).
    Closed,
}

impl OutboxRx {
    /// The next thing to do; a cut comes before anything still queued.
    pub async fn next(&mut self) -> Next {
        tokio::select! {
            biased;
            () = cut(&mut self.cut) => Next::Cut,
            m = self.rx.recv() => m.map_or(Next::Closed, Next::Send),
        }
    }

    /// Resolves once the queue is cut, so a front-end stops waiting on a socket that does not
    /// take what it writes.
    pub async fn cut(&mut self) {
        cut(&mut self.cut).await;
    }
}

async fn cut(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|cut| *cut).await.is_err() {
        // Every sender is gone: the queue ends (the receiver says so); it was not cut.
        std::future::pending::<()>().await;
    }
}

/// A queue of `capacity` messages.
pub fn outbox(capacity: usize) -> (Outbox, OutboxRx) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let (cut_tx, cut_rx) = watch::channel(false);
    (
        Outbox {
            tx,
            cut: Arc::new(cut_tx),
        },
        OutboxRx { rx, cut: cut_rx },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u32) -> Outgoing {
        Outgoing::Frame(Utf8Bytes::from(n.to_string()))
    }

    fn text(next: Next) -> Option<String> {
        match next {
            Next::Send(Outgoing::Frame(f)) => Some(f.to_string()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_cuts_the_client_before_what_is_still_queued() {
        let (tx, mut rx) = outbox(2);
        tx.push(frame(1));
        assert_eq!(text(rx.next().await).as_deref(), Some("1"));
        tx.push(frame(2));
        tx.push(frame(3));
        // The third push finds the queue full: it never waits, and the client is cut.
        tx.push(frame(4));
        assert!(matches!(rx.next().await, Next::Cut));
        rx.cut().await;
    }

    #[tokio::test]
    async fn a_queue_whose_session_ended_closes_and_is_not_cut() {
        let (tx, mut rx) = outbox(2);
        tx.push(frame(1));
        drop(tx);
        assert_eq!(text(rx.next().await).as_deref(), Some("1"));
        assert!(matches!(rx.next().await, Next::Closed));
    }

    #[tokio::test]
    async fn a_push_to_a_gone_front_end_is_dropped_quietly() {
        let (tx, rx) = outbox(1);
        drop(rx);
        tx.push(frame(1));
        tx.push(frame(2));
        assert!(!*tx.cut.borrow());
    }
}
