//! The portal's pages over HTTP.

use std::sync::atomic::Ordering;

use axum::Router;
use axum::routing::get;
use rollcall_testkit::FakeService;

use crate::{System, counting_grading_service, start_grades, wait_for_status};

#[tokio::test]
async fn the_grade_book_lists_the_students_with_averages_and_a_dash_without_grades() {
    let system = System::spawn().await;
    let redirect = system
        .http
        .get(format!("{}/", system.portal.url()))
        .send()
        .await
        .expect("GET /");
    assert!(redirect.status().is_redirection());
    assert_eq!(redirect.headers()["location"], "/students");

    let (status, page) = system.page("/students").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"<a href="/students/1">Carter, Nick</a>"#), "{page}");
    assert!(page.contains("87.0%"), "Nick's average, %.1f%%");
    assert!(!page.contains("NaN"));

    let grades = system.grades.as_ref().expect("grades");
    let added = system
        .http
        .post(format!("{}/students", grades.url()))
        .json(&serde_json::json!({"FirstName": "Ada", "LastName": "Lovelace"}))
        .send()
        .await
        .expect("POST /students");
    assert_eq!(added.status(), 201);
    let (_, page) = system.page("/students").await;
    assert!(
        page.contains("Lovelace, Ada</a></td><td class=\"num\">—</td>"),
        "{page}"
    );
    let (_, ada) = system.page("/students/6").await;
    assert!(ada.contains("No grades available") && ada.contains("—"), "{ada}");
}

#[tokio::test]
async fn the_form_redirects_with_303_and_the_new_grade_and_average_show() {
    let system = System::spawn().await;
    let response = system
        .submit(1, &[("Title", "Quiz 3"), ("Type", "Quiz"), ("Score", "90")])
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/students/1");
    let (status, page) = system.page("/students/1").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<td>Quiz 3</td><td>Quiz</td><td class=\"num\">90</td>"),
        "{page}"
    );
    assert!(page.contains("87.8%"), "(85 + 94 + 82 + 90) / 4");
}

#[tokio::test]
async fn a_refused_grade_shows_the_reason_and_keeps_what_was_typed() {
    let system = System::spawn().await;
    for (form, reason) in [
        (
            [("Title", "Essay <1>"), ("Type", "Homework"), ("Score", "120")],
            "Score must be a number from 0 to 100",
        ),
        (
            [("Title", "Essay <1>"), ("Type", "Homework"), ("Score", "lots")],
            "Score must be a number from 0 to 100",
        ),
        (
            [("Title", " "), ("Type", "Homework"), ("Score", "50")],
            "Title must not be empty",
        ),
    ] {
        let response = system.submit(2, &form).await;
        assert_eq!(response.status(), 400, "{form:?}");
        let page = response.text().await.expect("page");
        assert!(page.contains(reason), "{page}");
        assert!(
            page.contains(r#"value="Essay &#60;1&#62;""#) || form[0].1 == " ",
            "typed title kept, escaped: {page}"
        );
        assert!(
            page.contains(r#"<option value="Homework" selected>Homework</option>"#),
            "typed type kept"
        );
    }
    let (_, page) = system.page("/students/2").await;
    assert!(!page.contains("Essay"), "nothing was added");
}

#[tokio::test]
async fn unknown_students_and_pages_are_404_pages() {
    let system = System::spawn().await;
    assert_eq!(system.page("/students/99").await.0, 404);
    assert_eq!(system.page("/students/abc").await.0, 404);
    assert_eq!(system.page("/nowhere").await.0, 404);
    let response = system
        .submit(99, &[("Title", "Quiz"), ("Type", "Quiz"), ("Score", "5")])
        .await;
    assert_eq!(response.status(), 404, "a grading 404 stays a 404");
}

#[tokio::test]
async fn without_a_grading_service_the_portal_says_so_with_503_and_recovers_by_itself() {
    let mut system = System::spawn().await;
    system.grades.take().expect("grades").stop().await;
    let page = wait_for_status(&system, "/students", 503).await;
    assert!(page.contains("The grading service is unavailable"), "{page}");
    assert!(page.contains(r#"http-equiv="refresh""#), "the page retries by itself");

    system.grades = Some(start_grades(&system.registry, &system.grades_data).await);
    let page = wait_for_status(&system, "/students", 200).await;
    assert!(page.contains("Carter, Nick"));
}

#[tokio::test]
async fn requests_are_spread_over_several_grading_instances() {
    let mut system = System::spawn().await;
    system.grades.take().expect("grades").stop().await;
    let (_first, first_hits) = counting_grading_service(&system.registry).await;
    let (_second, second_hits) = counting_grading_service(&system.registry).await;
    rollcall_testkit::eventually(
        "both instances known to the portal",
        rollcall_testkit::DEADLINE,
        || async { (system.portal.providers().urls("GradingService").len() == 2).then_some(()) },
    )
    .await;
    for _ in 0..10 {
        assert_eq!(system.page("/students").await.0, 200);
    }
    let (a, b) = (first_hits.load(Ordering::SeqCst), second_hits.load(Ordering::SeqCst));
    assert_eq!(a + b, 10);
    assert_eq!((a, b), (5, 5), "round robin");
}

#[tokio::test]
async fn a_grading_service_answering_nonsense_gets_a_502_page_without_the_cause() {
    let mut system = System::spawn().await;
    system.grades.take().expect("grades").stop().await;
    let routes = Router::new().route(
        "/students/{id}",
        get(|| async { ([("content-type", "application/json")], "{\"ID\": \"not a number\"") }),
    );
    let nonsense = FakeService::spawn_with_routes("GradingService", &["LogService"], routes).await;
    assert_eq!(system.registry.register(&nonsense.registration()).await.status(), 200);

    let page = wait_for_status(&system, "/students/1", 502).await;
    assert!(page.contains("The grading service failed"), "{page}");
    // The decoding error is logged, not shown.
    for cause in ["invalid type", "EOF", "expected", "line 1"] {
        assert!(!page.contains(cause), "the page shows the cause ({cause}): {page}");
    }
}
