//! Byte-exact HTTP for compatibility tests: load a captured fixture, send raw bytes to a server,
//! and read its answer without any client library smoothing it over.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bytes of a captured wire fixture, by its path under the repository's `fixtures/`
/// (for instance `go-wire/registry-register-request.http`).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Parses a complete response (a captured fixture, say); `None` if it is incomplete.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(bytes).ok()? else {
            return None;
        };
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let length = headers
            .iter()
            .find(|(name, _)| name == "content-length")
            .and_then(|(_, value)| value.parse::<usize>().ok())
            .unwrap_or(0);
        let body = bytes.get(head_len..head_len + length)?.to_vec();
        Some(Self {
            status: response.code?,
            headers,
            body,
        })
    }

    /// The value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Writes `request` as-is to `address` and reads one response.
pub async fn send_raw(address: &str, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut received = Vec::new();
    let mut buffer = [0_u8; 8192];
    loop {
        if let Some(response) = RawResponse::parse(&received) {
            return response;
        }
        let read = tokio::time::timeout(crate::DEADLINE, stream.read(&mut buffer))
            .await
            .expect("response within the deadline")
            .expect("read response");
        assert!(
            read > 0,
            "connection closed before a whole response: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..read]);
    }
}

/// `request` (a raw HTTP/1.1 request) with its body replaced by `body` and its Content-Length
/// fixed; every other byte (header order, case, CRLFs) is kept.
pub fn replace_body(request: &[u8], body: &[u8]) -> Vec<u8> {
    let split = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a raw request has a blank line");
    let head = String::from_utf8_lossy(&request[..split]);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                line.to_owned()
            }
        })
        .collect();
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// The body of a raw HTTP message (everything after the blank line).
pub fn body_of(message: &[u8]) -> &[u8] {
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[], |split| &message[split + 4..])
}
