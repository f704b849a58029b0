//! A real browser (headless Chromium over `WebDriver`) uses the portal as a teacher would.

use fantoccini::Locator;

use crate::System;

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

    let title = client.wait().for_element(Locator::Id("title")).await.expect("the form");
    title.send_keys("Quiz 3").await.expect("type the title");
    client
        .find(Locator::Id("type"))
        .await
        .expect("the type")
        .select_by_value("Quiz")
        .await
        .expect("choose Quiz");
    client
        .find(Locator::Id("score"))
        .await
        .expect("the score")
        .send_keys("90")
        .await
        .expect("type the score");
    client
        .find(Locator::Id("submit"))
        .await
        .expect("the button")
        .click()
        .await
        .expect("submit");

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
