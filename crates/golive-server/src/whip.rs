//! WHIP ingest (RFC 9725) and WHEP playback (draft-ietf-wish-whep): the same sessions as the
//! WebSocket protocol, over HTTP. A WHIP broadcaster is a broadcaster like any other (watched
//! from `/watch/<stream>`, listed on `/`), and a WHEP player is a viewer like any other.
//!
//! `POST /whip/<stream>` (or `/whep/<stream>`) with an SDP offer creates a session resource at
//! `/whip/<stream>/<id>`; `PATCH` on it trickles candidates; `DELETE` ends it. The resource also
//! ends when its session does (the media connection failed, or the broadcast it watches ended).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use golive_proto::{ClientMessage, ErrorCode, ProtocolError, ServerMessage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::limits::IpSlot;
use crate::outbox::{Next, Outgoing};
use crate::session::{self, Admission, Refused, SessionHandle};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
/// An offer or a fragment larger than this is refused (413); browsers' offers are a few KiB.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// What a WHEP player is told to wait before retrying a stream that is not live.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Whip,
    Whep,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

struct Resource {
    stream: String,
    session: SessionHandle,
    etag: String,
    /// The client's ICE ufrag from its offer: a fragment with another one is an ICE restart.
    remote_ufrag: Option<String>,
    /// The client address's place among its sessions, freed with the resource.
    _slot: IpSlot,
}

/// The WHIP/WHEP front-end's own state.
#[derive(Default)]
pub struct WhipState {
    /// The live WHIP and WHEP session resources.
    pub resources: Resources,
    /// `Link: <…>; rel="ice-server"` values for WHIP/WHEP responses.
    pub ice_server_links: Vec<String>,
}

/// The live WHIP and WHEP session resources.
#[derive(Default)]
pub struct Resources {
    map: Mutex<HashMap<(Kind, String), Resource>>,
}

impl Resources {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Kind, String), Resource>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The WHIP and WHEP endpoints, for any application state that has the parts they need.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<WhipState>: FromRef<S>,
    Arc<Admission>: FromRef<S>,
    session::Context: FromRef<S>,
{
    Router::new()
        .merge(kind_routes(Kind::Whip))
        .merge(kind_routes(Kind::Whep))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(axum::middleware::map_response(cors))
}

/// The endpoint (`/whip/{stream}` or `/whep/{stream}`) and its session resources.
fn kind_routes<S>(kind: Kind) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<WhipState>: FromRef<S>,
    Arc<Admission>: FromRef<S>,
    session::Context: FromRef<S>,
{
    Router::new()
        .route(
            &format!("/{}/{{stream}}", kind.path()),
            post(move |w, a, x, c, p, u, h, b| create(kind, w, a, x, c, p, u, h, b))
                .options(options_endpoint)
                .get(get_endpoint),
        )
        .route(
            &format!("/{}/{{stream}}/{{id}}", kind.path()),
            axum::routing::patch(move |s, p, h, b| patch(kind, s, p, h, b))
                .delete(move |s, p| delete(kind, s, p))
                .options(options_resource)
                .get(get_resource),
        )
}

/// Lets a page on another origin publish and play (and read `Location`).
async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After"),
    );
    r
}

/// RFC 9725 §4.2: OPTIONS answers 200 with `Accept-Post`. ICE servers are not given here: most
/// OPTIONS are CORS preflights, where the RFC says they SHOULD NOT be.
async fn options_endpoint() -> Response {
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert("accept-post", HeaderValue::from_static(SDP));
    r
}

async fn options_resource() -> Response {
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    r
}

/// RFC 9725 §4.1: a GET gets a 2xx with no content. For an endpoint it is 200 with the type a
/// POST takes, which also answers the WHEP draft's HEAD (axum answers HEAD with the GET handler).
async fn get_endpoint() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, SDP)]).into_response()
}

async fn get_resource() -> StatusCode {
    StatusCode::NO_CONTENT
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut body = text.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error_response(kind: Kind, e: &ProtocolError) -> Response {
    let status = match e.code {
        ErrorCode::BadRequest | ErrorCode::BadStreamName | ErrorCode::BadSdp => {
            StatusCode::BAD_REQUEST
        }
        // Well-formed, but the media cannot be served: no transcoding here.
        ErrorCode::CodecUnsupported => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Forbidden | ErrorCode::Muted => StatusCode::FORBIDDEN,
        ErrorCode::TooManySessions => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ServerFull
        | ErrorCode::StreamFull
        | ErrorCode::Draining
        | ErrorCode::ClusterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::StreamBusy => StatusCode::CONFLICT,
        // The WHEP draft (§4.3.8): a stream that is not live yet is a 409 with Retry-After.
        ErrorCode::StreamNotFound => StatusCode::CONFLICT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        // Never a WHIP/WHEP answer (thumbnails come over the WebSocket only).
        ErrorCode::BadThumbnail | ErrorCode::ThumbnailTooLarge => StatusCode::BAD_REQUEST,
    };
    let mut r = plain(status, format!("{}: {}", e.code, e.message));
    if e.code == ErrorCode::Unauthorized {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    let retry = matches!(
        e.code,
        ErrorCode::RateLimited
            | ErrorCode::ServerFull
            | ErrorCode::StreamFull
            | ErrorCode::TooManySessions
            | ErrorCode::Draining
    );
    if retry || (kind == Kind::Whep && e.code == ErrorCode::StreamNotFound) {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    r
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn add_ice_server_links(whip: &WhipState, headers: &mut HeaderMap) {
    for link in &whip.ice_server_links {
        if let Ok(v) = HeaderValue::from_str(link) {
            headers.append(header::LINK, v);
        }
    }
}

fn random_token(len: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A short tag for a resource id in logs: the same id always gives the same tag, and the tag
/// gives nothing usable back (32 bits of a hash of a 131-bit random id; guessing the id from it
/// is as hard as guessing the id).
fn log_tag(id: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    format!("{:08x}", h.finish() >> 32)
}

/// The first `a=ice-ufrag` of an SDP or fragment.
fn ice_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(|u| u.trim().to_owned())
}

#[allow(clippy::too_many_arguments)] // axum extractors, one each
async fn create(
    kind: Kind,
    State(whip): State<Arc<WhipState>>,
    State(admission): State<Arc<Admission>>,
    State(ctx): State<session::Context>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, SDP) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the offer must be sent as Content-Type: {SDP}"),
        );
    }
    let slot = match admission.admit(client, &headers) {
        Ok(slot) => slot,
        Err(Refused::Draining) => {
            return error_response(
                kind,
                &ProtocolError::new(ErrorCode::Draining, "the server is shutting down"),
            );
        }
        Err(Refused::Limit(r)) => {
            ctx.metrics.limit_refused(r.label());
            return error_response(kind, &r.error());
        }
    };
    let Ok(offer) = String::from_utf8(body.to_vec()) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "bad_sdp: the offer is not UTF-8 text",
        );
    };
    let remote_ufrag = ice_ufrag(&offer);
    let msg = match kind {
        Kind::Whip => ClientMessage::Publish {
            stream: stream.clone(),
            sdp: offer,
            key: bearer_token(&headers),
            title: None,
            name: None,
            // `?record=false` keeps this broadcast out of the replays.
            record: uri
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "record=false"))
                .then_some(false),
        },
        Kind::Whep => ClientMessage::Watch {
            stream: stream.clone(),
            sdp: offer,
            name: None,
        },
    };
    let (session, mut outbox) = session::spawn(ctx);
    let answer = match session.call(msg).await {
        Ok(Some(ServerMessage::Answer { sdp, .. })) => sdp,
        // This node is past its capacity (cluster mode): the player asks the node named.
        Ok(Some(ServerMessage::Redirect { url })) => {
            let to = crate::cluster::steer::whep_location(&url, &stream, uri.query());
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return r;
        }
        Ok(other) => {
            tracing::error!(
                ?other,
                "a publish or watch was answered with something else"
            );
            return error_response(kind, &ProtocolError::new(ErrorCode::Internal, "no answer"));
        }
        Err(e) => return error_response(kind, &e),
    };
    let id = random_token(22);
    let etag = format!("\"{}\"", random_token(16));
    let location = format!("/{}/{stream}/{id}", kind.path());
    whip.resources.lock().insert(
        (kind, id.clone()),
        Resource {
            stream: stream.clone(),
            session,
            etag: etag.clone(),
            remote_ufrag,
            _slot: slot,
        },
    );
    // The resource URL is the capability to end the session (whoever holds it may DELETE): it
    // is never logged, only a tag that lets a reader match this line with its DELETE.
    tracing::info!(%stream, resource = %log_tag(&id), "{} session created", kind.path());
    // The resource lives as long as its session: when the media connection fails or the
    // broadcast a player watches ends, the session says so, and the resource goes.
    let reaper = whip.clone();
    tokio::spawn(async move {
        loop {
            match outbox.next().await {
                Next::Send(Outgoing::Message(ServerMessage::Ended { .. })) => break,
                // An HTTP client reads nothing of it: the queue only carries the end.
                Next::Send(_) => {}
                Next::Cut | Next::Closed => break,
            }
        }
        reaper.resources.lock().remove(&(kind, id));
    });

    let mut r = (StatusCode::CREATED, [(header::CONTENT_TYPE, SDP)], answer).into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    add_ice_server_links(&whip, h);
    r
}

/// One trickled candidate of a fragment, with the media section it belongs to.
#[derive(Debug, PartialEq, Eq)]
struct FragCandidate {
    candidate: String,
    mid: Option<String>,
    mline_index: Option<u16>,
}

/// Reads an `application/trickle-ice-sdpfrag` body (RFC 8840): session-level ICE credentials,
/// then per `m=` section its `a=mid` and `a=candidate` lines.
fn parse_fragment(body: &str) -> Result<(Option<String>, Vec<FragCandidate>), String> {
    let mut ufrag = None;
    let mut candidates = Vec::new();
    let mut mline: Option<u16> = None;
    let mut mid: Option<String> = None;
    for raw in body.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            mline = Some(mline.map_or(0, |i| i.saturating_add(1)));
            mid = None;
        } else if let Some(v) = line.strip_prefix("a=mid:") {
            mid = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("a=candidate:") {
            if v.split_whitespace().count() < 8 {
                return Err(format!("malformed candidate line: {line}"));
            }
            candidates.push(FragCandidate {
                candidate: format!("candidate:{v}"),
                mid: mid.clone(),
                mline_index: mline,
            });
        } else if !(line.starts_with("a=") || line.starts_with("c=")) {
            return Err(format!("unexpected line in an sdpfrag: {line}"));
        }
    }
    Ok((ufrag, candidates))
}

async fn patch(
    kind: Kind,
    State(whip): State<Arc<WhipState>>,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, SDPFRAG) {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("PATCH takes Content-Type: {SDPFRAG}"),
        );
    }
    let Ok(body) = std::str::from_utf8(&body) else {
        return plain(StatusCode::BAD_REQUEST, "the fragment is not UTF-8 text");
    };
    let (ufrag, candidates) = match parse_fragment(body) {
        Ok(x) => x,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let inputs = {
        let map = whip.resources.lock();
        let Some(res) = map.get(&(kind, id.clone())).filter(|r| r.stream == stream) else {
            return plain(StatusCode::NOT_FOUND, "no such session");
        };
        // RFC 9725 §4.3.1: trickle uses conditional requests; 428 when the tag is missing, 412
        // when it is stale. `*` is what a restart sends.
        match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
            None => {
                return plain(
                    StatusCode::PRECONDITION_REQUIRED,
                    "PATCH needs If-Match with the session's ETag",
                );
            }
            Some(m) if m.trim() != "*" && m.trim() != res.etag => {
                return plain(
                    StatusCode::PRECONDITION_FAILED,
                    "If-Match does not match the session's ETag",
                );
            }
            Some(_) => {}
        }
        if ufrag.is_some() && ufrag != res.remote_ufrag {
            // RFC 9725 §4.3.1: a session that does trickle but not ICE restart answers 422.
            // The client starts a new session instead.
            return plain(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ICE restart is not supported; DELETE this session and POST a new offer",
            );
        }
        res.session.clone()
    };
    for c in candidates {
        let r = inputs
            .call(ClientMessage::Candidate {
                candidate: c.candidate,
                sdp_mid: c.mid,
                sdp_mline_index: c.mline_index,
                username_fragment: None,
            })
            .await;
        if let Err(e) = r {
            return error_response(kind, &e);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn delete(
    kind: Kind,
    State(whip): State<Arc<WhipState>>,
    Path((stream, id)): Path<(String, String)>,
) -> Response {
    let removed = {
        let mut map = whip.resources.lock();
        match map.get(&(kind, id.clone())) {
            Some(r) if r.stream == stream => map.remove(&(kind, id.clone())),
            _ => None,
        }
    };
    match removed {
        Some(r) => {
            // A DELETE ends the broadcast on purpose (no grace period for a reconnect).
            let _ = r.session.call(ClientMessage::Leave).await;
            drop(r.session);
            tracing::info!(%stream, resource = %log_tag(&id), "{} session deleted", kind.path());
            plain(StatusCode::OK, "session ended")
        }
        None => plain(StatusCode::NOT_FOUND, "no such session"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_give_candidates_with_their_section() {
        let frag = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\na=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\na=end-of-candidates\r\n";
        let (ufrag, cands) = parse_fragment(frag).unwrap();
        assert_eq!(ufrag.as_deref(), Some("EsAw"));
        assert_eq!(cands.len(), 2);
        assert_eq!(cands[0].mid.as_deref(), Some("0"));
        assert_eq!(cands[0].mline_index, Some(0));
        assert!(cands[1].candidate.starts_with("candidate:3471623853 1 udp"));
    }

    #[test]
    fn malformed_fragments_are_refused() {
        assert!(parse_fragment("a=candidate:1 1 udp\r\n").is_err());
        assert!(parse_fragment("hello\r\n").is_err());
        assert_eq!(parse_fragment("").unwrap(), (None, vec![]));
    }

    #[test]
    fn log_tags_are_stable_short_and_not_the_id() {
        let id = random_token(22);
        let tag = log_tag(&id);
        assert_eq!(tag, log_tag(&id));
        assert_eq!(tag.len(), 8);
        assert!(!id.contains(&tag) && !tag.contains(&id));
        assert_ne!(tag, log_tag(&random_token(22)));
    }

    #[test]
    fn bearer_tokens_are_read() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer s3cret"),
        );
        assert_eq!(bearer_token(&h).as_deref(), Some("s3cret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
    }
}
