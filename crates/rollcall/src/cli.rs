//! What the reading commands (`services`, `logs query`, `logs tail`) share: one HTTP client,
//! one way to read a JSON answer, and a closed pipe counted as success.

use std::time::Duration;

use anyhow::{Context, bail};

/// The HTTP client of the reading commands.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")
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
