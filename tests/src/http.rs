//! HTTP/1.1 for the WHIP/WHEP tests: golive-client's one-request-per-connection client, every
//! response header kept (`Link` appears more than once).

use anyhow::Result;
use std::net::SocketAddr;
use std::time::Duration;

pub use golive_client::http::HttpResponse;

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one request and reads the whole response (the server closes after it).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let authority = addr.to_string();
    Ok(golive_client::http::request(&authority, method, path, headers, body, HTTP_TIMEOUT).await?)
}
