//! What the client commands (`services`, `logs query`, `logs tail`, `token`, `config`, `drain`)
//! share: the first reachable of the registries given, one HTTP client presenting the user's
//! token,
//! one way to read a JSON answer, a closed pipe counted as success, and text made safe for a
//! terminal.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};

/// The HTTP client of the commands, presenting the token and trusting the authorities `client`
/// says.
pub fn http_client(client: &rollcall_client::ClientArgs) -> anyhow::Result<reqwest::Client> {
    client
        .http_client()?
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")
}

/// The first of the registries `urls` names (comma-separated) that accepts a connection within
/// two seconds, as a base URL; the first when none does (the error then names it).
pub async fn reachable_registry(urls: &str) -> String {
    let bases = rollcall_client::registry_base_urls(urls);
    if bases.len() > 1 {
        for base in &bases {
            let Ok(url) = reqwest::Url::parse(base) else { continue };
            let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
                continue;
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let connect = tokio::net::TcpStream::connect((host, port));
            if matches!(tokio::time::timeout(Duration::from_secs(2), connect).await, Ok(Ok(_))) {
                return base.clone();
            }
        }
    }
    bases.into_iter().next().unwrap_or_default()
}

/// Sends `request` to `who` (as the error says it: "the registry at URL"), and checks that the
/// answer is a success.
pub async fn send(request: reqwest::RequestBuilder, who: &str) -> anyhow::Result<reqwest::Response> {
    let response = request.send().await.with_context(|| format!("cannot reach {who}"))?;
    succeeded(response, who).await
}

/// `response` if it is a success; otherwise an error with its status and what `who` said.
pub async fn succeeded(response: reqwest::Response, who: &str) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let reason = serde_json::from_str::<rollcall_wire::ErrorBody>(&body).map_or(body, |e| e.message);
    bail!("{who} answered {status}: {reason}");
}

/// Waits between reconnections of a following command: backon's exponential backoff with
/// jitter, 200-400 ms doubling to 5-10 s.
pub fn retry_delays() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// A reading command whose output was cut short (`rollcall services | head`) succeeded.
pub fn closed_pipe_is_success(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// `text` as it may be printed to a terminal: control characters (escape sequences, carriage
/// returns, newlines, bells, C1 controls) and the bidirectional overrides are written as Rust
/// escapes (`\u{1b}`, `\r`, `\n`), so that what a service logged or registered can neither forge
/// a line nor rewrite the screen. Everything else, other scripts included, is left as it is.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut safe = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(safe, "{}", c.escape_default());
        } else {
            safe.push(c);
        }
    }
    Cow::Owned(safe)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("plain text, café, 学生"), "plain text, café, 学生");
        assert!(matches!(printable("plain"), Cow::Borrowed(_)));
        assert_eq!(
            printable("ok\r\x1b[2Kforged\nline\x07"),
            "ok\\r\\u{1b}[2Kforged\\nline\\u{7}"
        );
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m", "a C1 control sequence introducer");
        assert_eq!(
            printable("abc\u{202e}cba"),
            "abc\\u{202e}cba",
            "a right-to-left override"
        );
    }
}
