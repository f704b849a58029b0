//! The grading API: Go-shaped bodies, validation, 405 and 404, data kept across a restart.

use rollcall_testkit::{RawResponse, fixture, send_raw};
use rollcall_wire::{ErrorBody, Student};

use crate::TestGrades;

#[tokio::test]
async fn a_fresh_grade_book_answers_the_go_portals_requests_byte_for_byte() {
    let grades = TestGrades::spawn().await;
    for (request, response) in [
        ("portal-get-students-request.http", "grades-get-students-response.http"),
        ("portal-get-student-request.http", "grades-get-student-response.http"),
    ] {
        let answer = send_raw(&grades.address, &fixture(&format!("go-wire/{request}"))).await;
        let expected = RawResponse::parse(&fixture(&format!("go-wire/{response}"))).expect("fixture");
        assert_eq!(answer.status, expected.status, "{request}");
        assert_eq!(answer.header("content-type"), Some("application/json"), "{request}");
        // Byte for byte, down to the newline Go's json.Encoder ends the body with.
        assert_eq!(
            String::from_utf8_lossy(&answer.body),
            String::from_utf8_lossy(&expected.body),
            "{request}"
        );
    }
}

#[tokio::test]
async fn a_grade_from_the_go_portal_is_echoed_as_json_with_201() {
    let grades = TestGrades::spawn().await;
    let request = fixture("go-wire/portal-add-grade-request.http");
    let answer = send_raw(&grades.address, &request).await;
    assert_eq!(answer.status, 201);
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "not the original's text/plain"
    );
    let go = RawResponse::parse(&fixture("go-wire/grades-post-grade-response.http")).expect("fixture");
    assert_eq!(answer.body, go.body, "the Go service's echo, byte for byte");
    let student: Student = grades.get("/students/1").await.json().await.expect("a student");
    assert_eq!(student.grades.last().map(|g| g.title.as_str()), Some("Quiz 3"));
}

#[tokio::test]
async fn invalid_grades_are_refused_with_the_reason() {
    let grades = TestGrades::spawn().await;
    let cases = [
        ("{bad json", "invalid_json"),
        (r#"{"Title":"","Type":"Quiz","Score":50}"#, "invalid_grade"),
        (r#"{"Title":"   ","Type":"Quiz","Score":50}"#, "invalid_grade"),
        (
            &format!(r#"{{"Title":"{}","Type":"Quiz","Score":50}}"#, "x".repeat(201)),
            "invalid_grade",
        ),
        (r#"{"Title":"Quiz 9","Type":"Pop quiz","Score":50}"#, "invalid_grade"),
        (r#"{"Title":"Quiz 9","Type":"Quiz","Score":100.5}"#, "invalid_grade"),
        (r#"{"Title":"Quiz 9","Type":"Quiz","Score":-1}"#, "invalid_grade"),
        (r#"{"Title":"Quiz 9","Type":"Quiz","Score":"90"}"#, "invalid_json"),
    ];
    for (body, code) in cases {
        let response = grades.add_grade("1", body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let error: ErrorBody = response.json().await.expect("a JSON error");
        assert_eq!(error.error, code, "{body}: {}", error.message);
    }
    let accepted = grades
        .add_grade("1", r#"{"Title":"Homework 1","Type":"Homework","Score":100.0}"#)
        .await;
    assert_eq!(accepted.status(), 201, "every type of the four, and 100.0, are valid");
    let student: Student = grades.get("/students/1").await.json().await.expect("a student");
    assert_eq!(student.grades.len(), 4, "only the valid grade was added");
}

#[tokio::test]
async fn unknown_students_paths_and_methods_get_json_404_and_405() {
    let grades = TestGrades::spawn().await;
    for path in ["/students/99", "/students/abc", "/nowhere", "/students/1/anything"] {
        let response = grades.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        let error: ErrorBody = response.json().await.expect("a JSON error");
        assert!(!error.message.is_empty());
    }
    let unknown = grades
        .add_grade("99", r#"{"Title":"Quiz 1","Type":"Quiz","Score":50}"#)
        .await;
    assert_eq!(unknown.status(), 404);
    let anything = grades
        .http
        .post(format!("{}/students/1/anything", grades.url))
        .body(r#"{"Title":"Quiz 1","Type":"Quiz","Score":50}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(anything.status(), 404, "the third path segment matters");
    let delete = grades
        .http
        .delete(format!("{}/students", grades.url))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(delete.status(), 405);
    let put = grades
        .http
        .put(format!("{}/students/1/grades", grades.url))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), 405);
}

#[tokio::test]
async fn students_and_grades_are_kept_across_a_restart() {
    let grades = TestGrades::spawn().await;
    let added = grades
        .http
        .post(format!("{}/students", grades.url))
        .json(&serde_json::json!({"FirstName": "Ada", "LastName": "Lovelace"}))
        .send()
        .await
        .expect("POST /students");
    assert_eq!(added.status(), 201);
    let ada: Student = added.json().await.expect("a student");
    assert!(ada.grades.is_empty());
    assert_eq!(ada.average(), None);
    let response = grades
        .add_grade(&ada.id.to_string(), r#"{"Title":"Test 1","Type":"Test","Score":88.5}"#)
        .await;
    assert_eq!(response.status(), 201);

    let grades = grades.restart().await;
    let ada: Student = grades
        .get(&format!("/students/{}", ada.id))
        .await
        .json()
        .await
        .expect("a student");
    assert_eq!(ada.grades.len(), 1);
    assert!((ada.grades[0].score - 88.5).abs() < f64::EPSILON);
    let all: Vec<Student> = grades.get("/students").await.json().await.expect("students");
    assert_eq!(
        all.len(),
        6,
        "the five demo students are seeded once, not again on restart"
    );
}

#[tokio::test]
async fn a_failing_grade_book_answers_a_generic_500_without_its_cause() {
    let grades = TestGrades::spawn().await;
    assert_eq!(grades.get("/students/1").await.status(), 200);
    // Break the database under the running service, as a damaged file or a bad migration would.
    let database = grades.data_dir.path().join("grades").join("grades.db");
    rusqlite::Connection::open(&database)
        .and_then(|connection| connection.execute_batch("DROP TABLE grades;"))
        .expect("drop a table");

    let response = grades.get("/students/1").await;
    assert_eq!(response.status(), 500);
    let error: ErrorBody = response.json().await.expect("a JSON error");
    assert_eq!(error.error, "internal");
    assert_eq!(error.message, "the grade book failed; see the service's log");
}

#[tokio::test]
async fn a_grade_must_be_sent_as_json() {
    let grades = TestGrades::spawn().await;
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = grades
            .http
            .post(format!("{}/students/1/grades", grades.url))
            .header("content-type", content_type)
            .body(r#"{"Title":"Forged","Type":"Quiz","Score":0}"#)
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 415, "{content_type}");
        let error: ErrorBody = response.json().await.expect("a JSON error");
        assert_eq!(error.error, "unsupported_media_type");
    }
    let student = grades.get("/students/1").await.text().await.expect("body");
    assert!(!student.contains("Forged"));
}
