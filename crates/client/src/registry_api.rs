//! The calls a service makes to its registry. Registering and deregistering speak the seed
//! protocol, so that both the rollcall registry and the original Go registry understand them:
//! `POST /services` with the Registration (Go's encoding, ending in `\n`) and `DELETE /services`
//! with the ServiceURL as plain text. The rest is the rollcall registry's `/v1` API: the listing
//! that tells the service it was forgotten, draining, and TTL liveness (registering through
//! `POST /v1/instances` with a TTL check, then renewing).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rollcall_wire::{Check, InstanceRegistration, InstanceView, Registration};
use tokio_util::sync::CancellationToken;

use crate::backoff::retry_delays;
use crate::error::RegistryError;

/// The registries a process may use (one, or several nodes of one catalog), the one in use,
/// and the process's HTTP client. A call that cannot connect to the registry in use moves on to
/// the next (each tried once per call), which stays in use.
#[derive(Debug, Clone)]
pub(crate) struct RegistryApi {
    http: reqwest::Client,
    bases: Arc<[String]>,
    at: Arc<AtomicUsize>,
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
    /// The registries whose base URLs `bases` lists, comma-separated (see
    /// [`crate::registry_base_url`]).
    pub(crate) fn new(http: reqwest::Client, bases: &str) -> Self {
        Self {
            http,
            bases: crate::args::registry_base_urls(bases).into(),
            at: Arc::default(),
        }
    }

    /// The registry in use.
    pub(crate) fn base(&self) -> &str {
        &self.bases[self.at.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends the request `build` makes for the registry in use; when no connection can be made
    /// to it, moves on to the next registry and sends it there (each tried once).
    pub(crate) async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, reqwest::Error> {
        let count = self.bases.len();
        let mut tried = 1;
        loop {
            let at = self.at.load(Ordering::Relaxed) % count;
            match build(&self.bases[at]).send().await {
                Err(error) if error.is_connect() && tried < count => {
                    let next = (at + 1) % count;
                    tracing::warn!(registry = %self.bases[at], next = %self.bases[next], "cannot reach the registry: moving to the next");
                    let _ = self.at.compare_exchange(at, next, Ordering::Relaxed, Ordering::Relaxed);
                    tried += 1;
                }
                other => return other,
            }
        }
    }

    /// Whether the instance at `url` of `service` is listed, once the listing's index moved
    /// past `index` (at once without one; at most [`LISTING_WAIT`] later otherwise).
    pub(crate) async fn listed(&self, service: &str, url: &str, index: Option<u64>) -> Listed {
        let sent = self
            .send(|base| {
                let mut request = self
                    .http
                    .get(v1_url(base, &["services", service]))
                    .timeout(LISTING_WAIT + Duration::from_secs(5));
                if let Some(index) = index {
                    request = request.query(&[
                        ("index", index.to_string()),
                        ("wait", format!("{}s", LISTING_WAIT.as_secs())),
                    ]);
                }
                request
            })
            .await;
        let Ok(response) = sent else {
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
            .send(|base| {
                self.http
                    .post(format!("{base}/services"))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone())
            })
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
            .send(|base| self.http.post(format!("{base}/v1/instances")).json(&body))
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
            .send(|base| self.http.put(format!("{base}/v1/instances/{id}/ttl")))
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
                    tracing::warn!(registry = %self.base(), %error, retry_in = ?delay, "registration failed");
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
        let response = self
            .send(|base| {
                self.http
                    .post(v1_url(base, &["instances", id, "drain"]))
                    .query(&[("wait", "5s")])
                    .timeout(Duration::from_secs(8))
            })
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
            .send(|base| {
                self.http
                    .delete(format!("{base}/services"))
                    .header(reqwest::header::CONTENT_TYPE, "text/plain")
                    .body(service_url.to_owned())
            })
            .await
            .map_err(|e| RegistryError::Unreachable(e.without_url()))?;
        refusal(response).await
    }
}

/// The `/v1` URL of `segments` under `base` (each percent-encoded as one path segment); a base
/// that is not a URL gives a text the HTTP client refuses to send.
fn v1_url(base: &str, segments: &[&str]) -> String {
    let Ok(mut url) = reqwest::Url::parse(base) else {
        return format!("{base}/v1/{}", segments.join("/"));
    };
    if let Ok(mut path) = url.path_segments_mut() {
        path.push("v1").extend(segments);
    }
    url.to_string()
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
