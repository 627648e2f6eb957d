//! The serving side of relays: `GET /cluster/relay/<stream>` (the stream's media), `POST` with an
//! SDP offer (a relay peer: a viewer on a media worker that is no member of the audience, sent
//! every simulcast layer at once, see `Sfu::add_relay`) and
//! `DELETE /cluster/relay/<stream>/<peer>` (the pulling node ends it), every request signed with
//! the cluster secret.

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use golive_proto::StreamName;
use golive_sfu::{PeerId, StreamMedia};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

use super::auth::{AUTH_HEADER, unix_secs};
use super::wire::MediaJson;
use super::{next_relay_id, publish_entry};
use crate::cluster::Cluster;
use crate::directory::Directory;
use crate::session::Workers;
use crate::worker::{Command, PeerEvent as WorkerPeerEvent};

/// The routes by which a node serves relays of the streams it holds.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Option<Arc<Cluster>>: FromRef<S>,
    Arc<Directory>: FromRef<S>,
    Arc<Workers>: FromRef<S>,
{
    Router::new()
        .route("/cluster/relay/{stream}", get(describe).post(serve))
        .route("/cluster/relay/{stream}/{peer}", delete(end_relay))
}

/// A refusal of a node-to-node request: its status and why, for the requesting node's log.
type Refusal = (StatusCode, String);

fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Refusal {
    (status, why.to_string())
}

/// The checks both requests pass: cluster mode, a valid signature, the stream held here and
/// room for one more relay of it. Returns the stream's media.
fn admit(
    cluster: &Option<Arc<Cluster>>,
    directory: &Directory,
    method: &str,
    stream: &str,
    headers: &HeaderMap,
) -> Result<(Arc<Cluster>, StreamName, Arc<StreamMedia>), Refusal> {
    let Some(cluster) = cluster.clone() else {
        return Err(refuse(StatusCode::NOT_FOUND, "not in cluster mode"));
    };
    let stream = StreamName::new(stream).map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    let value = headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = cluster
        .relays
        .auth
        .check(method, &stream, value, unix_secs())
    {
        tracing::warn!(%stream, "relay request refused: {e}");
        return Err(refuse(StatusCode::FORBIDDEN, e));
    }
    let Some(media) = directory.media_of(&stream) else {
        return Err(refuse(StatusCode::NOT_FOUND, "the stream is not held here"));
    };
    let inbound = cluster.relays.lock_inbound().get(&stream).cloned();
    if inbound.is_some_and(|i| !i.receiving.load(Ordering::Relaxed)) {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node does not receive the stream right now",
        ));
    }
    if cluster.relays.served(&stream) >= cluster.settings.max_relays_per_stream {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node serves as many relays of the stream as it may",
        ));
    }
    Ok((cluster, stream, media))
}

/// `GET /cluster/relay/<stream>`: the stream's media, so the relay can offer its codecs.
async fn describe(
    State(cluster): State<Option<Arc<Cluster>>>,
    State(directory): State<Arc<Directory>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (_, stream, media) = match admit(&cluster, &directory, "GET", &stream, &headers) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let title = directory.title(&stream).flatten();
    axum::Json(MediaJson::new(&media, title)).into_response()
}

/// `POST /cluster/relay/<stream>` with an SDP offer: a relay peer that receives every track,
/// and every simulcast layer of the video, each on a video section of its own.
async fn serve(
    State(cluster): State<Option<Arc<Cluster>>>,
    State(directory): State<Arc<Directory>>,
    State(workers): State<Arc<Workers>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    offer: String,
) -> Response {
    let (cluster, stream, media) = match admit(&cluster, &directory, "POST", &stream, &headers) {
        Ok(x) => x,
        Err(r) => return r.into_response(),
    };
    let relays = &cluster.relays;
    let id = PeerId(next_relay_id());
    // Counted before the answer, so that racing requests cannot exceed the bound.
    {
        let mut served = relays.lock_served();
        let peers = served.entry(stream.clone()).or_default();
        if peers.len() >= cluster.settings.max_relays_per_stream {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node serves as many relays of the stream as it may",
            )
            .into_response();
        }
        peers.insert(id);
    }
    let (events, mut events_rx) = mpsc::unbounded_channel();
    let worker = workers.pick();
    let answer = worker
        .call(|reply| Command::Watch {
            id,
            stream: stream.clone(),
            media,
            offer,
            relay: true,
            events,
            reply,
        })
        .await;
    let forget = {
        let cluster = cluster.clone();
        let stream = stream.clone();
        move || {
            let mut served = cluster.relays.lock_served();
            if let Some(peers) = served.get_mut(&stream) {
                peers.remove(&id);
                if peers.is_empty() {
                    served.remove(&stream);
                }
            }
            drop(served);
            cluster.relays.set_served_gauge();
            publish_entry(&cluster, &stream);
        }
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            forget();
            return refuse(StatusCode::BAD_REQUEST, e).into_response();
        }
    };
    relays.set_served_gauge();
    publish_entry(&cluster, &stream);
    tracing::info!(%stream, peer = %id, worker = worker.index, "relay: serving the stream to another node");
    tokio::spawn(async move {
        while let Some(ev) = events_rx.recv().await {
            if matches!(
                ev,
                WorkerPeerEvent::Failed(_) | WorkerPeerEvent::WorkerFailed(_)
            ) {
                break;
            }
        }
        tracing::info!(peer = %id, "relay: a relay this node served ended");
        forget();
    });
    (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, format!("/cluster/relay/{stream}/{id}")),
        ],
        answer.sdp,
    )
        .into_response()
}

/// `DELETE /cluster/relay/<stream>/<peer>`: the pulling node ends a relay it was served.
async fn end_relay(
    State(cluster): State<Option<Arc<Cluster>>>,
    State(workers): State<Arc<Workers>>,
    Path((stream, peer)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(cluster) = cluster else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(stream) = StreamName::new(&stream) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let value = headers.get(AUTH_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = cluster
        .relays
        .auth
        .check("DELETE", &stream, value, unix_secs())
    {
        return refuse(StatusCode::FORBIDDEN, e).into_response();
    }
    let id = peer
        .strip_prefix('p')
        .and_then(|n| n.parse().ok())
        .map(PeerId);
    let Some(id) = id.filter(|id| {
        cluster
            .relays
            .lock_served()
            .get(&stream)
            .is_some_and(|p| p.contains(id))
    }) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Removing a peer a worker does not have does nothing; its worker drops it, and with it
    // the events channel whose end makes the relay forgotten here.
    for w in workers.handles() {
        let _ = w.send(Command::Remove { id }).await;
    }
    StatusCode::NO_CONTENT.into_response()
}
