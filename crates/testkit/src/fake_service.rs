//! A fake service on `127.0.0.1:0`: it serves the seed's `/heartbeat` and `/services` routes the
//! way a test tells it to, and records every patch it accepted, so that a test can ask what the
//! service holds.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use futures_util::StreamExt;
use rollcall_wire::{Patch, PatchEntry, Registration};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{DEADLINE, eventually};

/// How the fake's `/heartbeat` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatMode {
    /// 200, empty body.
    Healthy,
    /// 200, empty body, and the connection closed after it: every probe needs a new one.
    HealthyClosing,
    /// The given status.
    Failing(StatusCode),
    /// Never answers (until the fake stops).
    Hang,
    /// 200 with a body that never ends (a hostile or broken service).
    EndlessBody,
}

/// How the fake's `/services` answers a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMode {
    /// Records the patch and answers 200.
    Accept,
    /// Answers the given status and records nothing.
    Refuse(StatusCode),
    /// Never answers (until the fake stops).
    Hang,
    /// Waits until [`FakeService::release_patches`], then records and answers 200.
    Hold,
    /// Records the patch and answers 200 with a body that never ends.
    EndlessBody,
}

#[derive(Debug)]
struct Control {
    heartbeat: Mutex<HeartbeatMode>,
    /// Probes still to fail (with 503) before `heartbeat` applies again.
    fail_next: AtomicU32,
    probes: AtomicU64,
    /// When each probe arrived.
    probe_times: Mutex<Vec<Instant>>,
    patch_mode: Mutex<PatchMode>,
    /// False while patches are held.
    released: watch::Sender<bool>,
    /// Every accepted patch, in the order accepted, with the time it arrived.
    patches: watch::Sender<Vec<(Instant, Patch)>>,
    /// Patches that reached the handler (accepted or not).
    patch_arrivals: AtomicU64,
    /// The Content-Type and body of every accepted patch, as received.
    raw_patches: Mutex<Vec<(Option<String>, Bytes)>>,
    /// When each provider was first added (`false`) or removed (`true`), for O(1) look-ups.
    first_arrivals: Mutex<HashMap<(PatchEntry, bool), Instant>>,
    /// Bytes of endless bodies sent so far (the caller took them before hanging up).
    streamed: Arc<AtomicU64>,
    stop: CancellationToken,
}

/// A fake service the registry can call back and probe.
#[derive(Debug)]
pub struct FakeService {
    /// Its ServiceName.
    pub name: String,
    /// Its ServiceURL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The services it requires.
    pub required: Vec<String>,
    control: Arc<Control>,
}

impl FakeService {
    /// Starts a healthy fake named `name` that requires `required`.
    pub async fn spawn(name: &str, required: &[&str]) -> Self {
        Self::spawn_with_routes(name, required, Router::new()).await
    }

    /// Starts a healthy fake that also serves `routes` (a fake log service's `/log`, say).
    pub async fn spawn_with_routes(name: &str, required: &[&str], routes: Router) -> Self {
        let control = Arc::new(Control {
            heartbeat: Mutex::new(HeartbeatMode::Healthy),
            fail_next: AtomicU32::new(0),
            probes: AtomicU64::new(0),
            probe_times: Mutex::new(Vec::new()),
            patch_mode: Mutex::new(PatchMode::Accept),
            released: watch::Sender::new(true),
            patches: watch::Sender::new(Vec::new()),
            patch_arrivals: AtomicU64::new(0),
            raw_patches: Mutex::new(Vec::new()),
            first_arrivals: Mutex::new(HashMap::new()),
            streamed: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/heartbeat", any(heartbeat))
            .route("/services", post(patch))
            .with_state(Arc::clone(&control))
            .merge(routes);
        let url = crate::serve(app, control.stop.clone()).await;
        Self {
            name: name.to_owned(),
            url,
            required: required.iter().map(|s| (*s).to_owned()).collect(),
            control,
        }
    }

    /// The Registration a Go service at this URL would send.
    pub fn registration(&self) -> Registration {
        Registration {
            service_name: self.name.clone(),
            service_url: self.url.clone(),
            required_services: self.required.clone(),
            service_update_url: format!("{}/services", self.url),
            heartbeat_url: format!("{}/heartbeat", self.url),
        }
    }

    /// This fake as a provider entry, as patches name it.
    pub fn entry(&self) -> PatchEntry {
        PatchEntry {
            name: self.name.clone(),
            url: self.url.clone(),
        }
    }

    /// Sets how `/heartbeat` answers from now on.
    pub fn set_heartbeat(&self, mode: HeartbeatMode) {
        *self.control.heartbeat.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Makes the next `count` probes fail with 503, then answers as before.
    pub fn fail_next_probes(&self, count: u32) {
        self.control.fail_next.store(count, Ordering::SeqCst);
    }

    /// Probes answered so far.
    pub fn probes(&self) -> u64 {
        self.control.probes.load(Ordering::SeqCst)
    }

    /// When each probe arrived, in order.
    pub fn probe_times(&self) -> Vec<Instant> {
        self.control
            .probe_times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets how `/services` answers from now on. `Hold` holds patches until released.
    pub fn set_patch_mode(&self, mode: PatchMode) {
        *self.control.patch_mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
        self.control.released.send_replace(mode != PatchMode::Hold);
    }

    /// Lets held patches through and accepts later ones.
    pub fn release_patches(&self) {
        self.set_patch_mode(PatchMode::Accept);
    }

    /// Every patch accepted so far, in order.
    pub fn patches(&self) -> Vec<Patch> {
        self.control.patches.borrow().iter().map(|(_, p)| p.clone()).collect()
    }

    /// When each accepted patch arrived, in order.
    pub fn patch_times(&self) -> Vec<Instant> {
        self.control.patches.borrow().iter().map(|(at, _)| *at).collect()
    }

    /// When the first accepted patch that removed `entry` arrived (`removed`), or added it.
    pub fn arrival_of(&self, entry: &PatchEntry, removed: bool) -> Option<Instant> {
        let arrivals = self
            .control
            .first_arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        arrivals.get(&(entry.clone(), removed)).copied()
    }

    /// The Content-Type and exact body of every accepted patch, in order.
    pub fn raw_patches(&self) -> Vec<(Option<String>, Bytes)> {
        self.control
            .raw_patches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bytes of endless bodies this fake has sent, in all.
    pub fn streamed_bytes(&self) -> u64 {
        self.control.streamed.load(Ordering::Relaxed)
    }

    /// Patches that reached `/services`, accepted or not.
    pub fn patch_arrivals(&self) -> u64 {
        self.control.patch_arrivals.load(Ordering::SeqCst)
    }

    /// The providers held after applying every accepted patch in order.
    pub fn providers(&self) -> BTreeSet<PatchEntry> {
        let mut held = BTreeSet::new();
        for patch in self.patches() {
            for removed in &patch.removed {
                held.remove(removed);
            }
            held.extend(patch.added);
        }
        held
    }

    /// Waits until the fake holds exactly `expected`.
    pub async fn wait_for_providers(&self, expected: &BTreeSet<PatchEntry>) {
        eventually(&format!("{} to hold {expected:?}", self.name), DEADLINE, || async {
            (self.providers() == *expected).then_some(())
        })
        .await;
    }

    /// Waits until at least `count` patches were accepted, and returns them all.
    pub async fn wait_for_patches(&self, count: usize) -> Vec<Patch> {
        let mut updates = self.control.patches.subscribe();
        let waited = tokio::time::timeout(DEADLINE, updates.wait_for(|p| p.len() >= count)).await;
        assert!(
            waited.is_ok(),
            "{} got {} patches, not {count}, within {DEADLINE:?}",
            self.name,
            self.patches().len()
        );
        self.patches()
    }

    /// Stops serving: later probes and patches find the port closed.
    pub fn stop(&self) {
        self.control.stop.cancel();
    }
}

impl Drop for FakeService {
    fn drop(&mut self) {
        self.control.stop.cancel();
    }
}

async fn heartbeat(State(control): State<Arc<Control>>) -> Response {
    control.probes.fetch_add(1, Ordering::SeqCst);
    control
        .probe_times
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Instant::now());
    let failing_once = control
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing_once {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mode = *control.heartbeat.lock().unwrap_or_else(PoisonError::into_inner);
    match mode {
        HeartbeatMode::Healthy => StatusCode::OK.into_response(),
        HeartbeatMode::HealthyClosing => (StatusCode::OK, [(axum::http::header::CONNECTION, "close")]).into_response(),
        HeartbeatMode::Failing(status) => status.into_response(),
        HeartbeatMode::Hang => hang(&control).await.into_response(),
        HeartbeatMode::EndlessBody => endless(&control),
    }
}

/// 200 with a body of zeros that goes on for as long as the caller reads it.
fn endless(control: &Control) -> Response {
    let streamed = Arc::clone(&control.streamed);
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let chunks = futures_util::stream::repeat(chunk).map(move |chunk| {
        streamed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(chunk)
    });
    Body::from_stream(chunks).into_response()
}

async fn patch(State(control): State<Arc<Control>>, headers: HeaderMap, body: Bytes) -> Response {
    control.patch_arrivals.fetch_add(1, Ordering::SeqCst);
    let arrived = Instant::now();
    let mode = *control.patch_mode.lock().unwrap_or_else(PoisonError::into_inner);
    match mode {
        PatchMode::Accept | PatchMode::EndlessBody => {}
        PatchMode::Refuse(status) => return status.into_response(),
        PatchMode::Hang => return hang(&control).await.into_response(),
        PatchMode::Hold => {
            let mut released = control.released.subscribe();
            tokio::select! {
                () = control.stop.cancelled() => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
                _ = released.wait_for(|r| *r) => {}
            }
        }
    }
    let Ok(patch) = serde_json::from_slice::<Patch>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    control
        .raw_patches
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((content_type, body));
    {
        let mut arrivals = control.first_arrivals.lock().unwrap_or_else(PoisonError::into_inner);
        let added = patch.added.iter().map(|e| (e, false));
        for (entry, removed) in added.chain(patch.removed.iter().map(|e| (e, true))) {
            arrivals.entry((entry.clone(), removed)).or_insert(arrived);
        }
    }
    control.patches.send_modify(|patches| patches.push((arrived, patch)));
    if mode == PatchMode::EndlessBody {
        return endless(&control);
    }
    StatusCode::OK.into_response()
}

/// Waits until the fake stops, then answers 503 (the connection is usually gone by then).
async fn hang(control: &Control) -> StatusCode {
    control.stop.cancelled().await;
    StatusCode::SERVICE_UNAVAILABLE
}
