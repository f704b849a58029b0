//! Deploys under load: a steady load of a caller that makes one attempt per request (as the
//! seed's Go services do), and the rolling restart that the zero-downtime tests and benchmark
//! put it through, counting every request that failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{DEADLINE, FakeService, ServerProcess, eventually};

/// What a load sent, and how much of it failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Requests sent (and turns with nobody to send to).
    pub sent: u64,
    /// Of those, the ones that got no 2xx answer, or had nobody to go to.
    pub failed: u64,
}

/// A load running in the background until [`SteadyLoad::stop`].
#[derive(Debug)]
pub struct SteadyLoad {
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl SteadyLoad {
    /// Sends one `GET` after another, at most one every `pace`, to the URL `target` names for
    /// request `n`, each a single attempt bounded by 2 s. Any answer but a 2xx, and a turn with
    /// no URL, counts as failed.
    pub fn start(pace: Duration, target: impl Fn(u64) -> Option<String> + Send + 'static) -> Self {
        let (sent, failed, stop) = (Arc::default(), Arc::default(), CancellationToken::new());
        let task = tokio::spawn({
            let (sent, failed, stop): (Arc<AtomicU64>, Arc<AtomicU64>, _) =
                (Arc::clone(&sent), Arc::clone(&failed), stop.clone());
            async move {
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .expect("client");
                let mut turns = tokio::time::interval(pace.max(Duration::from_micros(1)));
                turns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.is_cancelled() {
                    turns.tick().await;
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    let answered = match target(n) {
                        Some(url) => http.get(url).send().await.is_ok_and(|a| a.status().is_success()),
                        None => false,
                    };
                    if !answered {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Self {
            sent,
            failed,
            stop,
            task,
        }
    }

    /// The load of `dependent` on `service`: `path` of the providers of `service` it holds (as
    /// its patches told it), taken in turn.
    pub fn of_dependent(dependent: Arc<FakeService>, service: &str, path: &str, pace: Duration) -> Self {
        let (service, path) = (service.to_owned(), path.to_owned());
        Self::start(pace, move |n| {
            let held: Vec<_> = dependent
                .providers()
                .into_iter()
                .filter(|entry| entry.name == service)
                .collect();
            let count = u64::try_from(held.len()).ok().filter(|c| *c > 0)?;
            let at = usize::try_from(n % count).ok()?;
            Some(format!("{}{path}", held[at].url))
        })
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits until `count` more requests than now were sent.
    pub async fn wait_for_more(&self, count: u64) {
        let until = self.sent() + count;
        eventually("the load to run", DEADLINE, || async {
            (self.sent() >= until).then_some(())
        })
        .await;
    }

    /// Stops the load and counts it.
    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        let _ = self.task.await;
        Tally {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// Restarts `instances` of `service` one after another: each is stopped with SIGTERM (and
/// waited for), started again by `start_again` (on a new port), and the next one only once
/// `dependent` holds the new instance, as a deploy would. Returns the new instances.
pub async fn roll(
    instances: Vec<ServerProcess>,
    dependent: &FakeService,
    service: &str,
    start_again: impl Fn(ServerProcess) -> ServerProcess,
) -> Vec<ServerProcess> {
    let mut restarted = Vec::with_capacity(instances.len());
    for mut instance in instances {
        instance.signal("TERM");
        let instance = tokio::task::block_in_place(|| {
            instance.wait_for_exit();
            start_again(instance)
        });
        let entry = rollcall_wire::PatchEntry {
            name: service.to_owned(),
            url: instance.url.clone(),
        };
        eventually("the dependent to hold the new instance", DEADLINE, || async {
            dependent.providers().contains(&entry).then_some(())
        })
        .await;
        restarted.push(instance);
    }
    restarted
}
