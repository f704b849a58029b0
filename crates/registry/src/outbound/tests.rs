//! The outbound side over real sockets: what the address policy refuses is never connected to
//! (a counting listener proves it), whatever form the address is written in and however its
//! name resolves the second time; a redirect is a failed call and is not followed.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::any;
use futures_util::future::BoxFuture;
use rollcall_testkit::{CountingListener, DEADLINE, eventually};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{AddressPolicy, CallError, HostBudget, Outbound, PatchConnection, Resolve, SystemResolver};

const TIMEOUT: Duration = Duration::from_secs(2);
const LOOPBACK: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
/// A registration sent from another machine (TEST-NET-1).
const REMOTE: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));

/// Answers for one name in turn (the last one for good); the system's resolver for the rest.
#[derive(Debug)]
pub(crate) struct Rebinding {
    name: &'static str,
    answers: Mutex<VecDeque<IpAddr>>,
}

impl Rebinding {
    /// `name` resolves to each of `answers` in turn, then to the last one for good.
    pub fn new<const N: usize>(name: &'static str, answers: [&str; N]) -> Self {
        let answers = answers.iter().map(|a| a.parse().expect("an IP address")).collect();
        Self {
            name,
            answers: Mutex::new(answers),
        }
    }
}

impl Resolve for Rebinding {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, std::io::Result<Vec<SocketAddr>>> {
        if host != self.name {
            return SystemResolver.resolve(host, port);
        }
        let mut answers = self.answers.lock().expect("lock");
        let answer = if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().copied()
        };
        Box::pin(std::future::ready(Ok(answer
            .map(|ip| SocketAddr::new(ip, port))
            .into_iter()
            .collect())))
    }
}

fn outbound(own: SocketAddr, resolver: Arc<dyn Resolve>) -> Outbound {
    Outbound::new(AddressPolicy::new(Vec::new(), vec![own]), resolver, TIMEOUT, None).expect("outbound")
}

fn url(text: &str) -> Url {
    Url::parse(text).expect("a URL")
}

/// Probes `url`, delivers a patch to it, and checks it as a registration would: every one must
/// be refused before connecting.
async fn assert_refused(outbound: &Outbound, registrant: Option<IpAddr>, url: &Url) {
    let refused = |result: &Result<(), CallError>| matches!(result, Err(CallError::Refused(_) | CallError::Unresolved));
    let probe = outbound.client(registrant).get(url, TIMEOUT).await;
    assert!(refused(&probe), "probe of {url} from {registrant:?}: {probe:?}");
    let delivery = PatchConnection::new(url.clone(), registrant)
        .post_json(outbound, "{}".into(), TIMEOUT)
        .await;
    assert!(
        refused(&delivery),
        "delivery to {url} from {registrant:?}: {delivery:?}"
    );
    let check = outbound.check(registrant, url).await;
    assert!(refused(&check), "check of {url} from {registrant:?}: {check:?}");
}

#[tokio::test]
async fn an_address_the_policy_refuses_is_never_connected_to_in_any_spelling() {
    let target = CountingListener::start().await;
    let registry = CountingListener::start().await; // stands for the registry's own socket
    let outbound = outbound(registry.address(), Arc::new(SystemResolver));
    let (port, own) = (target.port(), registry.port());
    let matrix = [
        // A registration from another machine may not point at this one's loopback...
        (REMOTE, format!("http://127.0.0.1:{port}/heartbeat")),
        (REMOTE, format!("http://2130706433:{port}/")), // decimal
        (REMOTE, format!("http://0177.0.0.1:{port}/")), // octal
        (REMOTE, format!("http://0x7f.0.0.1:{port}/")), // hex
        (REMOTE, format!("http://0x7f000001:{port}/")),
        (REMOTE, format!("http://[::ffff:127.0.0.1]:{port}/")), // IPv4-mapped IPv6
        (REMOTE, format!("http://[::ffff:7f00:1]:{port}/")),
        (REMOTE, format!("http://localhost:{port}/")),
        (REMOTE, format!("http://localhost.:{port}/")),
        // ...and no registration may point at the unspecified address (which Linux connects to
        // loopback), link-local or metadata addresses, or the registry itself.
        (LOOPBACK, format!("http://0.0.0.0:{port}/")),
        (LOOPBACK, format!("http://0:{port}/")),
        (LOOPBACK, format!("http://[::]:{port}/")),
        (LOOPBACK, "http://169.254.169.254/latest/meta-data/".to_owned()),
        (LOOPBACK, "http://2852039166/latest/meta-data/".to_owned()),
        (LOOPBACK, "http://[::ffff:169.254.169.254]/".to_owned()),
        (LOOPBACK, "http://[fe80::1]/".to_owned()),
        (LOOPBACK, "http://[fd00:ec2::254]/".to_owned()),
        (LOOPBACK, format!("http://127.0.0.1:{own}/services")),
        (LOOPBACK, format!("http://localhost:{own}/services")),
        (LOOPBACK, format!("http://[::ffff:127.0.0.1]:{own}/services")),
    ];
    for (registrant, target_url) in &matrix {
        assert_refused(&outbound, *registrant, &url(target_url)).await;
    }
    assert_eq!(target.connections(), 0, "a refused target was connected to");
    assert_eq!(registry.connections(), 0, "the registry's own socket was connected to");

    // The same listener, allowed, is reached: the count above could have moved.
    let allowed = url(&format!("http://127.0.0.1:{port}/heartbeat"));
    outbound.client(LOOPBACK).get(&allowed, TIMEOUT).await.expect("allowed");
    let plain = tokio::net::TcpStream::connect(("0.0.0.0", port)).await;
    assert!(plain.is_ok(), "without the policy, 0.0.0.0 reaches loopback here");
    drop(plain);
    eventually("both connections to be counted", DEADLINE, || async {
        (target.connections() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_name_is_judged_again_at_every_connect() {
    let target = CountingListener::start().await;
    let registry = CountingListener::start().await;
    // Allowed when the registration is checked, then rebound to an address Linux connects to
    // loopback through.
    let resolver = Arc::new(Rebinding::new("rebinding.test", ["127.0.0.1", "0.0.0.0"]));
    let outbound = outbound(registry.address(), resolver);
    let heartbeat = url(&format!("http://rebinding.test:{}/heartbeat", target.port()));
    outbound
        .check(LOOPBACK, &heartbeat)
        .await
        .expect("allowed at registration");
    assert_refused(&outbound, LOOPBACK, &heartbeat).await;
    assert_eq!(target.connections(), 0, "the rebound name was connected to");
}

#[tokio::test]
async fn a_redirect_is_a_failed_call_and_is_not_followed() {
    let target = CountingListener::start().await;
    let location = format!("http://127.0.0.1:{}/elsewhere", target.port());
    let stop = CancellationToken::new();
    let app = Router::new().fallback(any(move || {
        let location = location.clone();
        async move { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, location)]) }
    }));
    let redirecting = rollcall_testkit::serve(app, stop.clone()).await;
    let registry = CountingListener::start().await;
    let outbound = outbound(registry.address(), Arc::new(SystemResolver));

    let heartbeat = url(&format!("{redirecting}/heartbeat"));
    let probe = outbound.client(LOOPBACK).get(&heartbeat, TIMEOUT).await;
    assert!(matches!(probe, Err(CallError::Status(307))), "{probe:?}");
    let delivery = PatchConnection::new(url(&format!("{redirecting}/services")), LOOPBACK)
        .post_json(&outbound, "{}".into(), TIMEOUT)
        .await;
    assert!(matches!(delivery, Err(CallError::Status(307))), "{delivery:?}");
    assert_eq!(target.connections(), 0, "the redirect was followed");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_host_budget_hands_out_turns_a_burst_then_one_per_period_and_other_hosts_wait_for_nothing() {
    let budget = Arc::new(HostBudget::new(std::num::NonZeroU32::new(10).expect("10")));
    let start = tokio::time::Instant::now();
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..30 {
        let budget = Arc::clone(&budget);
        waiting.spawn(async move {
            budget.wait("busy.example").await;
            start.elapsed()
        });
    }
    let mut turns: Vec<Duration> = waiting.join_all().await;
    turns.sort();
    assert!(
        turns[..10].iter().all(Duration::is_zero),
        "a burst of 10 at once: {turns:?}"
    );
    for (n, turn) in turns[10..].iter().enumerate() {
        let expected = Duration::from_millis(100) * u32::try_from(n + 1).expect("small");
        assert_eq!(*turn, expected, "then one every 100 ms");
    }
    let other = tokio::time::Instant::now();
    budget.wait("quiet.example").await;
    assert!(other.elapsed().is_zero(), "another host has its own budget");
}
