//! A registry that speaks only the seed protocol, the way the original Go registry does, for
//! testing that rollcall services work with it: `POST /services` calls the registering
//! service back with its providers (`{"Added":null,"Removed":null}` when there are none, byte
//! for byte as Go sends it) before answering 200, `DELETE /services` answers 200 or 500, and
//! dependents get a patch when a provider comes or goes. It never probes heartbeats.
//!
//! Every request it receives is recorded as it arrived, so a test can compare it with what a Go
//! client sends.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use rollcall_wire::{Patch, PatchEntry, Registration};
use tokio_util::sync::CancellationToken;

use crate::{DEADLINE, body_of, fixture};

/// One request as the seed registry received it.
#[derive(Debug, Clone)]
pub struct SeedRequest {
    /// `POST`, `DELETE`, ...
    pub method: Method,
    /// Its Content-Type header.
    pub content_type: Option<String>,
    /// Its body, byte for byte.
    pub body: Bytes,
}

#[derive(Debug, Default)]
struct Book {
    registrations: Vec<Registration>,
    requests: Vec<SeedRequest>,
}

/// The seed-only registry, on `127.0.0.1:0`.
#[derive(Debug)]
pub struct SeedRegistry {
    /// Its base URL.
    pub url: String,
    book: Arc<Mutex<Book>>,
    stop: CancellationToken,
}

impl SeedRegistry {
    /// Starts it.
    pub async fn spawn() -> Self {
        let book = Arc::new(Mutex::new(Book::default()));
        let app = Router::new()
            .route("/services", any(services))
            .with_state(Arc::clone(&book));
        let stop = CancellationToken::new();
        let url = crate::serve(app, stop.clone()).await;
        Self { url, book, stop }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<SeedRequest> {
        lock(&self.book).requests.clone()
    }

    /// The registrations it holds (duplicates included, as the Go registry keeps them).
    pub fn registrations(&self) -> Vec<Registration> {
        lock(&self.book).registrations.clone()
    }

    /// Registers `registration` as a Go service would, so its dependents are told.
    pub async fn add(&self, registration: Registration) {
        store_and_announce(&self.book, registration).await;
    }
}

impl Drop for SeedRegistry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn services(State(book): State<Arc<Mutex<Book>>>, method: Method, headers: HeaderMap, body: Bytes) -> StatusCode {
    lock(&book).requests.push(SeedRequest {
        method: method.clone(),
        content_type: headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
    match method {
        Method::POST => register(&book, &body).await,
        Method::DELETE => deregister(&book, &body).await,
        _ => StatusCode::METHOD_NOT_ALLOWED,
    }
}

async fn register(book: &Mutex<Book>, body: &[u8]) -> StatusCode {
    let Ok(registration) = serde_json::from_slice::<Registration>(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let providers: Vec<PatchEntry> = {
        let book = lock(book);
        book.registrations
            .iter()
            .filter(|r| registration.required_services.contains(&r.service_name))
            .map(|r| PatchEntry {
                name: r.service_name.clone(),
                url: r.service_url.clone(),
            })
            .collect()
    };
    // Go marshals its nil slices as null: with no providers the body is the captured one.
    let initial = if providers.is_empty() {
        body_of(&fixture("go-wire/registry-patch-initial-null.http")).to_vec()
    } else {
        let added = serde_json::to_string(&providers).expect("encode");
        format!(r#"{{"Added":{added},"Removed":null}}"#).into_bytes()
    };
    if post_patch(&registration.service_update_url, initial).await.is_err() {
        return StatusCode::BAD_REQUEST;
    }
    store_and_announce(book, registration).await;
    StatusCode::OK
}

/// Keeps `registration` and sends its dependents an `Added` patch.
async fn store_and_announce(book: &Mutex<Book>, registration: Registration) {
    let entry = PatchEntry {
        name: registration.service_name.clone(),
        url: registration.service_url.clone(),
    };
    let dependents = {
        let mut book = lock(book);
        book.registrations.push(registration);
        dependents_of(&book, &entry.name)
    };
    let added = Patch {
        added: vec![entry],
        removed: vec![],
    };
    notify(&dependents, &added).await;
}

async fn deregister(book: &Mutex<Book>, body: &[u8]) -> StatusCode {
    let url = String::from_utf8_lossy(body);
    let (removed, dependents) = {
        let mut book = lock(book);
        let Some(index) = book.registrations.iter().position(|r| r.service_url == url) else {
            return StatusCode::INTERNAL_SERVER_ERROR;
        };
        let removed = book.registrations.remove(index);
        let dependents = dependents_of(&book, &removed.service_name);
        (removed, dependents)
    };
    notify(
        &dependents,
        &Patch {
            added: vec![],
            removed: vec![PatchEntry {
                name: removed.service_name,
                url: removed.service_url,
            }],
        },
    )
    .await;
    StatusCode::OK
}

fn dependents_of(book: &Book, service: &str) -> Vec<String> {
    book.registrations
        .iter()
        .filter(|r| r.required_services.iter().any(|s| s == service))
        .map(|r| r.service_update_url.clone())
        .collect()
}

async fn notify(update_urls: &[String], patch: &Patch) {
    let body = serde_json::to_vec(patch).expect("encode");
    for url in update_urls {
        // The Go registry logs a failed notification and moves on.
        let _ = post_patch(url, body.clone()).await;
    }
}

async fn post_patch(url: &str, body: Vec<u8>) -> Result<(), ()> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .expect("client")
        .post(url)
        .header(CONTENT_TYPE.as_str(), "application/json")
        .body(body)
        .send()
        .await
        .map_err(drop)?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(())
    }
}

fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(PoisonError::into_inner)
}
