//! A real browser (headless Chromium over `WebDriver`) uses the portal as a teacher would.

use fantoccini::Locator;

use crate::System;

/// Fills the student page's "Add a Grade" form as a teacher would, and submits it.
async fn add_grade(client: &fantoccini::Client, title: &str, kind: &str, score: &str) {
    let field = |id: &'static str| client.find(Locator::Id(id));
    field("title")
        .await
        .expect("the title")
        .send_keys(title)
        .await
        .expect("type the title");
    field("type")
        .await
        .expect("the type")
        .select_by_value(kind)
        .await
        .expect("choose the type");
    field("score")
        .await
        .expect("the score")
        .send_keys(score)
        .await
        .expect("type the score");
    field("submit")
        .await
        .expect("the button")
        .click()
        .await
        .expect("submit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teacher_adds_a_grade_in_a_real_browser_and_sees_the_new_average() {
    let system = System::spawn().await;
    let browser = rollcall_testkit::Browser::start(1024, 900).await;
    let client = &browser.client;

    client
        .goto(&format!("{}/", system.portal.url()))
        .await
        .expect("open the portal");
    let link = client
        .wait()
        .for_element(Locator::LinkText("Carter, Nick"))
        .await
        .expect("the grade book");
    browser.screenshot("portal-grade-book").await;
    link.click().await.expect("open Nick's page");

    client.wait().for_element(Locator::Id("title")).await.expect("the form");
    add_grade(client, "Quiz 3", "Quiz", "90").await;

    // Post/redirect/get: the browser lands on the student's page again, with the new grade.
    client
        .wait()
        .for_element(Locator::XPath("//td[text()='Quiz 3']"))
        .await
        .expect("the new grade in the table");
    let average = client
        .find(Locator::Id("average"))
        .await
        .expect("the average")
        .text()
        .await
        .expect("text");
    assert_eq!(average, "87.8%");
    assert!(client.current_url().await.expect("url").path().ends_with("/students/1"));
    let screenshot = browser.screenshot("portal-student-after-grade").await;
    assert!(std::fs::metadata(&screenshot).expect("a screenshot").len() > 1000);
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_site_cannot_post_a_grade_through_the_visitors_browser() {
    let system = System::spawn().await;
    let (_, before) = system.page("/students/1").await;
    // An attacker's page, on another origin, that posts the portal's form as soon as it loads.
    let target = format!("{}/students/1/grades", system.portal.url());
    let attack = format!(
        r#"<!doctype html><form id="f" method="post" action="{target}">
<input name="Title" value="Forged"><input name="Type" value="Exam"><input name="Score" value="0">
</form><script>document.getElementById("f").submit()</script>"#
    );
    let page = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let attack = attack.clone();
            async move { axum::response::Html(attack) }
        }),
    );
    let attacker = rollcall_testkit::serve(page, tokio_util::sync::CancellationToken::new()).await;
    // localhost is another site than the portal's 127.0.0.1.
    let attacker = attacker.replace("127.0.0.1", "localhost");

    let browser = rollcall_testkit::Browser::start(1024, 900).await;
    browser.client.goto(&attacker).await.expect("open the attacker's page");
    let refused = browser
        .client
        .wait()
        .for_element(Locator::XPath("//*[contains(text(), 'cross_site_request')]"))
        .await
        .expect("the portal's refusal");
    drop(refused);
    browser.screenshot("portal-cross-site-refused").await;
    let (_, after) = system.page("/students/1").await;
    assert!(!after.contains("Forged"), "the forged grade was stored");
    assert_eq!(before, after, "the student's page changed");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grade_type_published_to_configuration_is_offered_and_accepted_without_a_restart() {
    let system = System::spawn().await;
    let project = [("Title", "Term project"), ("Type", "Project"), ("Score", "95")];
    assert_eq!(system.submit(1, &project).await.status(), 400, "not a grade type yet");

    let rules = r#"{"gradeTypes": ["Quiz", "Test", "Exam", "Homework", "Project"], "minScore": 0, "maxScore": 100}"#;
    let published = rollcall_testkit::http_client()
        .put(format!("{}/v1/config/default/_shared/grading", system.registry.url))
        .header("content-type", "application/json")
        .body(rules)
        .send()
        .await
        .expect("PUT");
    assert_eq!(published.status(), 201);

    let browser = rollcall_testkit::Browser::start(1024, 900).await;
    let client = &browser.client;
    let page = format!("{}/students/1", system.portal.url());
    rollcall_testkit::eventually("the form to offer Project", rollcall_testkit::DEADLINE, || async {
        client.goto(&page).await.ok()?;
        client
            .find(Locator::XPath("//select[@id='type']/option[@value='Project']"))
            .await
            .ok()
    })
    .await;
    add_grade(client, "Term project", "Project", "95").await;
    client
        .wait()
        .for_element(Locator::XPath(
            "//td[text()='Term project']/following-sibling::td[text()='Project']",
        ))
        .await
        .expect("the project grade, accepted by the grading service");
    browser.screenshot("portal-project-grade").await;
    browser.close().await;
}
