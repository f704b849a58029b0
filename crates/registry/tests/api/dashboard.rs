//! The dashboard at `/ui`: server-rendered pages that work without JavaScript, and a real
//! browser watching them change live.

use fantoccini::Locator;
use rollcall_testkit::{Browser, DEADLINE, FakeService, HeartbeatMode, TestRegistry, eventually};

use crate::{portal_holding_grades, register};

async fn html(registry: &TestRegistry, path: &str) -> (u16, String) {
    let response = registry.get(path).await;
    (response.status().as_u16(), response.text().await.expect("HTML"))
}

#[tokio::test]
async fn the_overview_graph_and_service_pages_are_served_without_javascript() {
    let registry = TestRegistry::spawn().await;
    let (portal, grades) = portal_holding_grades(&registry).await;
    let logs_dependent = FakeService::spawn("Reports", &["LogService"]).await;
    register(&registry, &logs_dependent).await;

    let (status, page) = html(&registry, "/ui").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"<tr data-name="Portal" class="passing">"#), "{page}");
    assert!(
        page.contains(r#"data-from="Portal" data-to="GradingService""#),
        "the edge in the graph"
    );
    assert!(
        page.contains(r#"<tr data-name="LogService" class="missing stands-out">"#),
        "a required service with no passing instance stands out: {page}"
    );
    assert!(page.contains("not registered") && page.contains("needed by Reports"));
    assert!(page.contains(r#"<script src="/ui/assets/app.js" defer></script>"#));

    let (_, filtered) = html(&registry, "/ui?filter=grad").await;
    assert!(filtered.contains(r#"data-name="GradingService""#) && !filtered.contains(r#"<tr data-name="Portal""#));

    let (status, service) = html(&registry, "/ui/services/GradingService").await;
    assert_eq!(status, 200);
    assert!(service.contains(&grades.url) && service.contains(r#"<a href="/ui/services/Portal">Portal</a>"#));
    let (status, _) = html(&registry, "/ui/services/Nobody").await;
    assert_eq!(status, 404);
    let fragment = registry.get("/ui?fragment=1").await.text().await.expect("HTML");
    assert!(!fragment.contains("<html") && fragment.contains("<h1>Services</h1>"));

    let compressed = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!("{}/ui/assets/app.js", registry.url))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("GET");
    assert_eq!(compressed.headers()["content-encoding"], "gzip");
    drop(portal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_services_appear_fail_and_the_stream_reconnect_without_a_reload() {
    // Retries a second apart: a failing instance stays suspect for two seconds before it is
    // critical, long enough to see both on the page.
    let registry =
        TestRegistry::spawn_with(|config| config.health_retry_delay = std::time::Duration::from_secs(1)).await;
    let (_portal, grades) = portal_holding_grades(&registry).await;
    let browser = Browser::start(1100, 900).await;
    let client = &browser.client;
    client.goto(&format!("{}/ui", registry.url)).await.expect("open /ui");
    let live = || async { client.find(Locator::Id("live")).await.ok()?.text().await.ok() };
    eventually("the page to be live", DEADLINE, || async {
        live().await.filter(|t| t == "Live")
    })
    .await;

    // A service registered through the API appears without a reload.
    let newcomer = FakeService::spawn("Billing", &["GradingService"]).await;
    register(&registry, &newcomer).await;
    client
        .wait()
        .for_element(Locator::Css(r#"tr[data-name="Billing"]"#))
        .await
        .expect("the new service in the table");
    client
        .wait()
        .for_element(Locator::Css(r#"line[data-from="Billing"][data-to="GradingService"]"#))
        .await
        .expect("its edge in the graph");
    browser.screenshot("dashboard-overview").await;

    // Its provider's heartbeat fails: suspect, then critical, counted in their columns and said
    // in words.
    grades.set_heartbeat(HeartbeatMode::Failing(axum::http::StatusCode::SERVICE_UNAVAILABLE));
    let cells = || async {
        let row = client
            .find(Locator::Css(r#"tr[data-name="GradingService"]"#))
            .await
            .ok()?;
        let mut texts = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await.ok()? {
            texts.push(cell.text().await.ok()?);
        }
        Some(texts)
    };
    eventually("GradingService suspect on the page", DEADLINE, || async {
        cells().await.filter(|c| c.len() == 5 && c[1] == "0" && c[2] == "1")
    })
    .await;
    let critical = eventually("GradingService critical on the page", DEADLINE, || async {
        cells().await.filter(|c| c.len() == 5 && c[2] == "0" && c[3] == "1")
    })
    .await;
    assert!(critical[4].contains("no passing instance"), "{critical:?}");
    client
        .wait()
        .for_element(Locator::Css(r#"g.node.down[data-service="GradingService"]"#))
        .await
        .expect("the node coloured as down");
    let graph = client.find(Locator::Id("graph")).await.expect("the graph");
    let png = graph.screenshot().await.expect("a screenshot of the graph");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("dashboard-graph.png"), png).expect("write");

    // The registry restarts: the page says it lost the stream, then that it is live again.
    let registry = registry.restart().await;
    eventually("the page to be live again", DEADLINE, || async {
        live().await.filter(|t| t == "Live")
    })
    .await;
    drop(registry);
    eventually("the page to say it is disconnected", DEADLINE, || async {
        live().await.filter(|t| t.contains("Disconnected"))
    })
    .await;
    browser.close().await;
}

#[tokio::test]
async fn a_service_page_link_works_for_any_service_name() {
    let registry = TestRegistry::spawn().await;
    let mut service = FakeService::spawn("Grades", &[]).await;
    service.name = "Grades/Eu #1?x=<b>".to_owned();
    register(&registry, &service).await;
    let overview = registry.get("/ui").await.text().await.expect("page");
    let href = "/ui/services/Grades%2FEu%20%231%3Fx%3D%3Cb%3E";
    assert!(overview.contains(&format!(r#"href="{href}""#)), "{overview}");
    let page = registry.get(href).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("page");
    assert!(page.contains(&service.url), "the link leads to the service's page");
    assert!(
        page.contains("Grades/Eu #1?x=&#60;b&#62;"),
        "the name is shown escaped: {page}"
    );
}

#[tokio::test]
async fn the_configuration_pages_show_documents_instances_rollouts_history_and_diffs_escaped() {
    let registry = TestRegistry::spawn().await;
    let (_portal, grades) = portal_holding_grades(&registry).await;
    let path = "/v1/config/prod/GradingService/limits";
    let put = |query: &str, body: &'static str| {
        let query = query.to_owned();
        let registry = &registry;
        async move {
            let answer = rollcall_testkit::http_client()
                .put(format!("{}{path}{query}", registry.url))
                .header("content-type", "text/plain")
                .header("x-rollcall-message", "<b>bold</b> move")
                .body(body)
                .send()
                .await
                .expect("PUT");
            assert!(answer.status().is_success(), "{}", answer.status());
        }
    };
    put("", "max=100\n").await;
    put("", "max=90 <script>alert(1)</script>\n").await;
    let id = registry
        .instance("GradingService", &grades.url)
        .await
        .expect("listed")
        .id;
    let gray = format!("?rollout=instances:{id}&bake=1h");
    put(&gray, "max=80\n").await;

    let (status, list) = html(&registry, "/ui/config").await;
    assert_eq!(status, 200);
    assert!(
        list.contains(r#"<tr data-path="prod/GradingService/limits">"#),
        "{list}"
    );
    assert!(list.contains("running (r3)"), "{list}");

    let (status, page) = html(&registry, "/ui/config/prod/GradingService/limits?diff=2").await;
    assert_eq!(status, 200);
    assert!(page.contains("revision 2 in force"), "{page}");
    assert!(page.contains("Rollout of revision 3 over 2"), "{page}");
    assert!(
        page.contains(&format!(r#"<tr data-id="{id}">"#)),
        "the instance's row: {page}"
    );
    assert!(
        page.contains(r#"<tr data-revision="3"><td class="num">3 (staged)"#),
        "{page}"
    );
    assert!(
        page.contains("-max=100") && page.contains("+max=90"),
        "the diff: {page}"
    );
    assert!(!page.contains("<script>alert"), "content is escaped");
    assert!(page.contains("&#60;script&#62;alert(1)"), "{page}");
    assert!(!page.contains("<b>bold</b>"), "messages are escaped");

    let (status, _) = html(&registry, "/ui/config/prod/GradingService/nothing").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_browser_on_a_configuration_page_sees_a_new_release_without_a_reload() {
    let registry = TestRegistry::spawn().await;
    let path = format!("{}/v1/config/prod/GradingService/limits", registry.url);
    let publish = |body: &'static str| {
        let path = path.clone();
        async move {
            let answer = rollcall_testkit::http_client()
                .put(path)
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .expect("PUT");
            assert!(answer.status().is_success());
        }
    };
    publish("max=100").await;
    let browser = Browser::start(1100, 900).await;
    let client = &browser.client;
    client
        .goto(&format!("{}/ui/config/prod/GradingService/limits", registry.url))
        .await
        .expect("open the document");
    eventually("the page to be live and caught up", DEADLINE, || async {
        let live = client.find(Locator::Id("live")).await.ok()?.text().await.ok()?;
        let body = client.find(Locator::Css("body")).await.ok()?;
        let refreshes = body.attr("data-refreshes").await.ok()??;
        (live == "Live" && refreshes != "0").then_some(())
    })
    .await;
    publish("max=90").await;
    let text = eventually("the new release on the page", DEADLINE, || async {
        let text = client.find(Locator::Id("document")).await.ok()?.text().await.ok()?;
        (text == "max=90").then_some(text)
    })
    .await;
    assert_eq!(text, "max=90");
    browser.screenshot("dashboard-config-document").await;
    browser.close().await;
}

#[tokio::test]
async fn the_overview_shows_the_registry_nodes_and_this_ones_share() {
    let registry = TestRegistry::spawn().await;
    let service = FakeService::spawn("A", &[]).await;
    register(&registry, &service).await;
    let nodes: rollcall_wire::NodesView = registry.get("/v1/nodes").await.json().await.expect("JSON");
    let (status, page) = html(&registry, "/ui").await;
    assert_eq!(status, 200);
    let row = format!(
        r#"<tr data-node="{}"><td>{} <span class="badge passing">this node</span>"#,
        nodes.this, nodes.this
    );
    assert!(page.contains(&row), "{page}");
    assert!(
        page.contains(r#"<td class="num">1</td></tr>"#),
        "it probes the one instance: {page}"
    );
    assert!(!page.contains("cannot reach etcd"));
}
