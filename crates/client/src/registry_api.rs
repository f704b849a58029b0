//! The two calls a service makes to its registry, in the seed protocol so that both the rollcall
//! registry and the original Go registry understand them: `POST /services` with the
//! Registration (Go's encoding, ending in `\n`) and `DELETE /services` with the ServiceURL as
//! plain text.

use std::time::Duration;

use rollcall_wire::Registration;
use tokio_util::sync::CancellationToken;

use crate::backoff::retry_delays;
use crate::error::RegistryError;

/// A registry's seed endpoint and the process's HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct RegistryApi {
    http: reqwest::Client,
    services_url: String,
}

impl RegistryApi {
    /// The registry whose base URL is `base` (see [`crate::registry_base_url`]).
    pub(crate) fn new(http: reqwest::Client, base: &str) -> Self {
        Self {
            http,
            services_url: format!("{base}/services"),
        }
    }

    /// Registers once. The registry answers only after it delivered the providers patch to
    /// the service's `ServiceUpdateURL`, so the service knows its providers when this returns.
    pub(crate) async fn register(&self, registration: &Registration) -> Result<(), RegistryError> {
        let mut body = serde_json::to_vec(registration).expect("a Registration always encodes");
        body.push(b'\n');
        let response = self
            .http
            .post(&self.services_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable(e.without_url()))?;
        refusal(response).await
    }

    /// Registers, retrying with exponential backoff and jitter until it succeeds, or once when
    /// `fail_fast`. Gives up with [`RegistryError::Cancelled`] when `shutdown` fires first.
    pub(crate) async fn register_until_done(
        &self,
        registration: &Registration,
        fail_fast: bool,
        shutdown: &CancellationToken,
    ) -> Result<(), RegistryError> {
        let mut delays = retry_delays();
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return Err(RegistryError::Cancelled),
                attempt = self.register(registration) => attempt,
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(error) if fail_fast => return Err(error),
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(registry = %self.services_url, %error, retry_in = ?delay, "registration failed");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(RegistryError::Cancelled),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Deregisters `service_url`.
    pub(crate) async fn deregister(&self, service_url: &str) -> Result<(), RegistryError> {
        let response = self
            .http
            .delete(&self.services_url)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(service_url.to_owned())
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable(e.without_url()))?;
        refusal(response).await
    }
}

/// `Ok` for a 2xx answer; otherwise the status and whatever the registry said (the rollcall
/// registry explains itself in a JSON body, the Go registry says nothing).
async fn refusal(response: reqwest::Response) -> Result<(), RegistryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<rollcall_wire::ErrorBody>(&body)
        .map(|e| e.message)
        .unwrap_or(body);
    Err(RegistryError::Refused {
        status: status.as_u16(),
        message,
    })
}
