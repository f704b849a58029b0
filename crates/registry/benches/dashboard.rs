//! Dashboard benchmark: the first load of `/ui` in headless Chromium with 100 services and 1,000
//! instances registered: bytes transferred, and time to first render (first contentful paint),
//! beside a minimal page served by this process and loaded the same way.
//!
//! Run with `cargo bench -p rollcall-registry --bench dashboard` (needs Debian's chromium and
//! chromium-driver: `scripts/test` installs them). One running browser loads each page 20 times,
//! under a new URL each time so that the page is never cached.

// A benchmark is a report: it prints, and turns numbers into f64.
#![allow(clippy::print_stdout, clippy::cast_precision_loss)]

use std::time::Duration;

use rollcall_testkit::{Browser, FakeFleet, TestRegistry, median_p99};
use serde_json::Value;

const SERVICES: usize = 100;
const INSTANCES_PER_SERVICE: usize = 10;

/// What the browser measured of one page load.
const MEASURE: &str = r#"
const navigation = performance.getEntriesByType("navigation")[0];
const paint = performance.getEntriesByName("first-contentful-paint")[0];
const assets = performance.getEntriesByType("resource").filter(r => r.initiatorType === "link" || r.initiatorType === "script");
return {
  transfer: navigation.transferSize + assets.reduce((sum, r) => sum + r.transferSize, 0),
  decoded: navigation.decodedBodySize + assets.reduce((sum, r) => sum + r.decodedBodySize, 0),
  fcp: paint ? paint.startTime : null,
};
"#;

/// Loads `url` in `browser` (after a blank page, so each load is a new navigation), waits for
/// its first paint, and returns (bytes transferred, bytes decoded, time to first paint).
async fn load(browser: &Browser, url: &str) -> (f64, f64, Duration) {
    browser.client.goto("about:blank").await.expect("blank");
    browser.client.goto(url).await.expect("load");
    let mut measured = Value::Null;
    for _ in 0..200 {
        measured = browser.client.execute(MEASURE, vec![]).await.expect("measure");
        if measured["fcp"].is_number() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let number = |key: &str| measured[key].as_f64().unwrap_or(f64::NAN);
    (
        number("transfer"),
        number("decoded"),
        Duration::from_secs_f64(number("fcp") / 1000.0),
    )
}

async fn minimal_page() -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html("<!doctype html><title>baseline</title><h1>Services</h1>")
        }),
    );
    format!(
        "{}/",
        rollcall_testkit::serve(app, tokio_util::sync::CancellationToken::new()).await
    )
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let registry = TestRegistry::spawn_with(|config| config.health_interval = Duration::from_secs(3)).await;
        let fleet = FakeFleet::spawn().await;
        for n in 0..SERVICES * INSTANCES_PER_SERVICE {
            let service = n % SERVICES;
            let mut registration = fleet.registration(n, &format!("Service{service:03}"));
            // Each service requires the one before it in its group of ten: a graph with edges.
            if !service.is_multiple_of(10) {
                registration.required_services = vec![format!("Service{:03}", service - 1)];
            }
            assert_eq!(registry.register(&registration).await.status(), 200);
        }
        println!("== /ui first load in headless Chromium: {SERVICES} services, {} instances (20 loads)", SERVICES * INSTANCES_PER_SERVICE);
        let baseline = minimal_page().await;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut sizes = Vec::new();
        // A running browser, as a user's is; the page's own URL changes each time, so it is
        // never served from the cache (the first load also fetches the script).
        let browser = Browser::start(1280, 900).await;
        for run in 0..20 {
            let (transfer, decoded, fcp) = load(&browser, &format!("{}/ui?run={run}", registry.url)).await;
            sizes.push((transfer, decoded));
            ours.push(fcp);
            theirs.push(load(&browser, &format!("{baseline}?run={run}")).await.2);
        }
        browser.close().await;
        let (fcp, fcp_worst) = median_p99(&mut ours);
        let (base_fcp, _) = median_p99(&mut theirs);
        let (transfer, decoded) = sizes[0];
        println!(
            "transferred on first load (page, stylesheet, script): {:.1} KB ({:.1} KB uncompressed)",
            transfer / 1000.0,
            decoded / 1000.0
        );
        println!(
            "first contentful paint: median {:.0} ms, worst {:.0} ms   baseline (a one-line page from this process): median {:.0} ms   ratio {:.1}",
            fcp.as_secs_f64() * 1000.0,
            fcp_worst.as_secs_f64() * 1000.0,
            base_fcp.as_secs_f64() * 1000.0,
            fcp.as_secs_f64() / base_fcp.as_secs_f64()
        );
    });
}
