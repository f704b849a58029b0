//! The calls a service makes to its registry. Registering and deregistering speak the seed
//! protocol, so that both the rollcall registry and the original Go registry understand them:
//! `POST /services` with the Registration (Go's encoding, ending in `\n`) and `DELETE /services`
//! with the ServiceURL as plain text. The rest is the rollcall registry's `/v1` API: the listing
//! that tells the service it was forgotten, draining, and TTL liveness (registering through
//! `POST /v1/instances` with a TTL check, then renewing).

use std::time::Duration;

use rollcall_wire::{Check, InstanceRegistration, InstanceView, Registration};
use tokio_util::sync::CancellationToken;

use crate::backoff::retry_delays;
use crate::error::RegistryError;

/// A registry's seed endpoint and the process's HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct RegistryApi {
    http: reqwest::Client,
    services_url: String,
    base: String,
}

/// How the registry tells that a service is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Liveness {
    /// The registry probes the service's `/heartbeat` (the seed protocol: works with the Go
    /// registry too).
    #[default]
    Probed,
    /// The service renews itself within this TTL (`PUT /v1/instances/{id}/ttl`, every third of
    /// it), for a service the registry cannot reach (behind NAT, say). Needs the rollcall
    /// registry; the TTL must be from 100 ms to 1 day.
    Ttl(Duration),
}

/// What the registry's listing of a service says about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Listed {
    /// Listed, at this index of its service, with this instance id.
    Present(u64, String),
    /// Not listed: the registry forgot it (restarted empty, or reaped it).
    Absent,
    /// The registry has no `/v1` listing for this caller (the Go registry, or a token without
    /// the read scope): only the probes' silence can tell.
    Unsupported,
    /// No answer.
    Unreachable,
}

/// How long one blocking query of the listing waits for a change.
const LISTING_WAIT: Duration = Duration::from_secs(25);

impl RegistryApi {
    /// The registry whose base URL is `base` (see [`crate::registry_base_url`]).
    pub(crate) fn new(http: reqwest::Client, base: &str) -> Self {
        Self {
            http,
            services_url: format!("{base}/services"),
            base: base.to_owned(),
        }
    }

    /// The `/v1` URL of `segments` (each percent-encoded as one path segment).
    fn v1_url(&self, segments: &[&str]) -> Option<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.base).ok()?;
        url.path_segments_mut().ok()?.push("v1").extend(segments);
        Some(url)
    }

    /// Whether the instance at `url` of `service` is listed, once the listing's index moved
    /// past `index` (at once without one; at most [`LISTING_WAIT`] later otherwise).
    pub(crate) async fn listed(&self, service: &str, url: &str, index: Option<u64>) -> Listed {
        let Some(listing) = self.v1_url(&["services", service]) else {
            return Listed::Unsupported;
        };
        let mut request = self.http.get(listing).timeout(LISTING_WAIT + Duration::from_secs(5));
        if let Some(index) = index {
            request = request.query(&[
                ("index", index.to_string()),
                ("wait", format!("{}s", LISTING_WAIT.as_secs())),
            ]);
        }
        let Ok(response) = request.send().await else {
            return Listed::Unreachable;
        };
        if !response.status().is_success() {
            return if response.status().is_server_error() {
                Listed::Unreachable
            } else {
                Listed::Unsupported
            };
        }
        let index = response
            .headers()
            .get("x-rollcall-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match (response.json::<rollcall_wire::ServiceView>().await, index) {
            (Ok(view), Some(index)) => match view.instances.into_iter().find(|i| i.url == url) {
                Some(instance) => Listed::Present(index, instance.id),
                None => Listed::Absent,
            },
            _ => Listed::Unsupported,
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

    /// Registers with `check` through `POST /v1/instances` (which answers at once; the
    /// providers patch follows); the answer is the instance's id.
    pub(crate) async fn register_instance(
        &self,
        registration: &Registration,
        check: Check,
    ) -> Result<String, RegistryError> {
        let body = InstanceRegistration {
            registration: registration.clone(),
            metadata: std::collections::BTreeMap::new(),
            check: Some(check),
            config_update_url: None,
        };
        let response = self
            .http
            .post(format!("{}/v1/instances", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable(e.without_url()))?;
        let view: InstanceView = accepted(response)
            .await?
            .json()
            .await
            .map_err(|e| RegistryError::Unreachable(e.without_url()))?;
        Ok(view.id)
    }

    /// Renews the TTL-checked instance `id`.
    pub(crate) async fn renew(&self, id: &str) -> Result<(), RegistryError> {
        // The id is the registry's own answer (hex digits): nothing to encode.
        let response = self
            .http
            .put(format!("{}/v1/instances/{id}/ttl", self.base))
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable(e.without_url()))?;
        refusal(response).await
    }

    /// Registers as `liveness` says once: through the seed protocol (the registry probes the
    /// service), or with a TTL check (the answer is then the instance's id).
    async fn register_as(
        &self,
        registration: &Registration,
        liveness: Liveness,
    ) -> Result<Option<String>, RegistryError> {
        match liveness {
            Liveness::Probed => self.register(registration).await.map(|()| None),
            Liveness::Ttl(ttl) => self.register_instance(registration, Check::ttl(ttl)).await.map(Some),
        }
    }

    /// Registers as `liveness` says, retrying with exponential backoff and jitter until it
    /// succeeds, or once when `fail_fast`. Gives up with [`RegistryError::Cancelled`] when
    /// `shutdown` fires first. The answer is the instance's id when the registration gave one.
    pub(crate) async fn register_until_done(
        &self,
        registration: &Registration,
        liveness: Liveness,
        fail_fast: bool,
        shutdown: &CancellationToken,
    ) -> Result<Option<String>, RegistryError> {
        let mut delays = retry_delays();
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => return Err(RegistryError::Cancelled),
                attempt = self.register_as(registration, liveness) => attempt,
            };
            match attempt {
                Ok(id) => return Ok(id),
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

    /// Takes the instance `id` out of rotation and waits (up to a few seconds, the registry's
    /// bound) until its dependents acknowledged; the answer is how many still held it, `None`
    /// when the registry cannot drain (the Go registry) or did not answer.
    pub(crate) async fn drain(&self, id: &str) -> Option<u64> {
        let url = self.v1_url(&["instances", id, "drain"])?;
        let response = self
            .http
            .post(url)
            .query(&[("wait", "5s")])
            .timeout(Duration::from_secs(8))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response
            .headers()
            .get("x-rollcall-unacknowledged")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
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
    accepted(response).await.map(drop)
}

/// The answer when it is 2xx; otherwise the refusal, as [`refusal`] reads it.
async fn accepted(response: reqwest::Response) -> Result<reqwest::Response, RegistryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
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
