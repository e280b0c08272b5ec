//! HTTP GET against the gateways the tests start on 127.0.0.1, through `reqwest` (plain
//! HTTP/1.1, no TLS, no proxy).

use std::time::Duration;

use super::wait::WAIT_TIMEOUT;

/// A received HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The body, decoded as UTF-8 (lossy), de-chunked.
    pub body: String,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `127.0.0.1:port` with `Connection: close`, bounded by [`WAIT_TIMEOUT`].
pub async fn http_get(port: u16, path: &str) -> Result<HttpResponse, String> {
    http_get_within(port, path, WAIT_TIMEOUT).await
}

/// `GET path` on `127.0.0.1:port` with `Connection: close`, failing after `timeout`
/// (connect + the whole reply).
pub async fn http_get_within(
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    match tokio::time::timeout(timeout, get(port, path)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "GET {path} on port {port}: no complete response within {timeout:?}"
        )),
    }
}

async fn get(port: u16, path: &str) -> Result<HttpResponse, String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    // A client per request: no connection outlives the call (nor the test's runtime), and
    // the proxy settings of the environment never apply to loopback calls.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| format!("GET {url}: building the client: {e}"))?;
    let response = client
        .get(&url)
        .header(reqwest::header::ACCEPT, "*/*")
        .header(reqwest::header::CONNECTION, "close")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            let value = String::from_utf8_lossy(v.as_bytes()).trim().to_string();
            (k.as_str().to_ascii_lowercase(), value)
        })
        .collect();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
