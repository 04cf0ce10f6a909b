//! A minimal HTTP/1.1 client (hyper) for the `http` hook and JWKS URLs:
//! one request per connection, plain `http://`, every step under a deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;

/// Largest response body read, in bytes.
const MAX_BODY: usize = 1 << 20;

/// Sends `method url` with an optional JSON body; returns the status and
/// body. `Err` (in plain words) for a bad URL, a connection or protocol
/// failure, a body over 1 MiB, or `timeout` passing.
pub async fn request(
    method: &str,
    url: &url::Url,
    json: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    tokio::time::timeout(timeout, request_inner(method, url, json))
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

async fn request_inner(
    method: &str,
    url: &url::Url,
    json: Option<Vec<u8>>,
) -> Result<(u16, Bytes), String> {
    let host = url.host_str().ok_or("URL without host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority);
    if json.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(json.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}
