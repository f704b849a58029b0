//! The portal's pages and the calls behind them.
//!
//! Every page that needs the grading service picks one through the providers (round robin) and,
//! if that instance cannot be reached, tries one other before answering the 503 page. A grading
//! 404 is the portal's 404; anything else unexpected from it is a 502 page. Nothing here panics on
//! what the grading service answers.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use rollcall_client::Providers;
use rollcall_client::Watched;
use rollcall_wire::{ErrorBody, Grade, GradingRules, Student};
use serde::Deserialize;

const STYLESHEET: &str = include_str!("../static/style.css");
const GRADING: &str = "GradingService";

#[derive(Clone)]
struct Portal {
    providers: Providers,
    http: reqwest::Client,
    /// The grade types the form offers (the grading service's, from the shared configuration).
    rules: Watched<GradingRules>,
}

pub(crate) fn router(providers: Providers, http: reqwest::Client, rules: Watched<GradingRules>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/students") }))
        .route("/students", get(students))
        .route("/students/{id}", get(student))
        .route("/students/{id}/grades", axum::routing::post(add_grade))
        .route("/static/style.css", get(stylesheet))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "Page not found", "There is no such page.") })
        .with_state(Portal { providers, http, rules })
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "students.html")]
struct StudentsPage {
    rows: Vec<StudentRow>,
}

struct StudentRow {
    id: i64,
    name: String,
    average: String,
}

#[derive(Template)]
#[template(path = "student.html")]
struct StudentPage {
    id: i64,
    name: String,
    average: String,
    grades: Vec<GradeRow>,
    error: Option<String>,
    form: GradeForm,
    kinds: Vec<String>,
}

struct GradeRow {
    title: String,
    kind: String,
    score: String,
}

#[derive(Template)]
#[template(path = "problem.html")]
struct ProblemPage {
    heading: &'static str,
    message: String,
    /// Refresh by itself: the problem is expected to pass (no grading service yet).
    retry: bool,
}

/// What the add-grade form posts, kept as typed so a refused grade can be shown again.
#[derive(Debug, Default, Deserialize)]
struct GradeForm {
    #[serde(rename = "Title", default)]
    title: String,
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Score", default)]
    score: String,
}

fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

fn problem(status: StatusCode, heading: &'static str, message: impl Into<String>) -> Response {
    let page = ProblemPage {
        heading,
        message: message.into(),
        retry: status == StatusCode::SERVICE_UNAVAILABLE,
    };
    render(status, &page)
}

fn unavailable() -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "The grading service is unavailable",
        "No grading service is reachable right now. This page reloads by itself and works again as soon as one is back.",
    )
}

/// `%.1f%%` of the average, or a dash without grades.
fn average(student: &Student) -> String {
    student.average().map_or_else(|| "—".to_owned(), |a| format!("{a:.1}%"))
}

fn score(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Sends `request(base_url)` to a grading service, trying a second instance when the first cannot
/// be reached; `None` when none can.
async fn call_grading<F>(portal: &Portal, request: F) -> Option<reqwest::Response>
where
    F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
{
    for _ in 0..2 {
        let Ok(provider) = portal.providers.get(GRADING) else {
            return None;
        };
        match request(&portal.http, provider.url()).send().await {
            Ok(response) => return Some(response),
            Err(error) => tracing::warn!(grading = %provider, %error, "grading service unreachable"),
        }
    }
    None
}

async fn fetch_student(portal: &Portal, id: &str) -> Result<Student, Response> {
    let response = call_grading(portal, |http, base| http.get(format!("{base}/students/{id}")))
        .await
        .ok_or_else(unavailable)?;
    match response.status() {
        StatusCode::OK => response.json().await.map_err(|e| bad_gateway(&e)),
        StatusCode::NOT_FOUND => Err(problem(
            StatusCode::NOT_FOUND,
            "Student not found",
            format!("There is no student {id}."),
        )),
        status => Err(bad_gateway(&format!("it answered {status}"))),
    }
}

fn bad_gateway(reason: &dyn std::fmt::Display) -> Response {
    tracing::error!(%reason, "unexpected answer from the grading service");
    problem(
        StatusCode::BAD_GATEWAY,
        "The grading service failed",
        "The grading service gave an answer the portal cannot use. Try again in a moment.",
    )
}

#[tracing::instrument(level = "debug", skip_all)]
async fn students(State(portal): State<Portal>) -> Response {
    let Some(response) = call_grading(&portal, |http, base| http.get(format!("{base}/students"))).await else {
        return unavailable();
    };
    if response.status() != StatusCode::OK {
        return bad_gateway(&format!("it answered {}", response.status()));
    }
    let students: Vec<Student> = match response.json().await {
        Ok(students) => students,
        Err(error) => return bad_gateway(&error),
    };
    let rows = students
        .iter()
        .map(|s| StudentRow {
            id: s.id,
            name: format!("{}, {}", s.last_name, s.first_name),
            average: average(s),
        })
        .collect();
    render(StatusCode::OK, &StudentsPage { rows })
}

fn student_page(portal: &Portal, student: &Student, error: Option<String>, form: GradeForm) -> StudentPage {
    StudentPage {
        id: student.id,
        name: format!("{} {}", student.first_name, student.last_name),
        average: average(student),
        grades: student
            .grades
            .iter()
            .map(|g| GradeRow {
                title: g.title.clone(),
                kind: g.kind.clone(),
                score: score(g.score),
            })
            .collect(),
        error,
        form,
        kinds: portal.rules.current().unwrap_or_default().grade_types.clone(),
    }
}

#[tracing::instrument(level = "debug", skip_all)]
async fn student(State(portal): State<Portal>, Path(id): Path<String>) -> Response {
    match fetch_student(&portal, &id).await {
        Ok(student) => render(
            StatusCode::OK,
            &student_page(&portal, &student, None, GradeForm::default()),
        ),
        Err(response) => response,
    }
}

/// Forwards the form's grade; 303 back to the student on success, the page with the reason and
/// the typed values otherwise.
#[tracing::instrument(level = "debug", skip_all)]
async fn add_grade(State(portal): State<Portal>, Path(id): Path<String>, Form(form): Form<GradeForm>) -> Response {
    let refused = |portal: Portal, id: String, reason: String, form: GradeForm| async move {
        match fetch_student(&portal, &id).await {
            Ok(student) => render(
                StatusCode::BAD_REQUEST,
                &student_page(&portal, &student, Some(reason), form),
            ),
            Err(response) => response,
        }
    };
    let Ok(value) = form.score.trim().parse::<f64>() else {
        let rules = portal.rules.current().unwrap_or_default();
        let reason = format!(
            "Score must be a number from {} to {}, not {:?}",
            rules.min_score, rules.max_score, form.score
        );
        return refused(portal, id, reason, form).await;
    };
    let grade = Grade {
        title: form.title.clone(),
        kind: form.kind.clone(),
        score: value,
    };
    let Some(response) = call_grading(&portal, |http, base| {
        http.post(format!("{base}/students/{id}/grades")).json(&grade)
    })
    .await
    else {
        return unavailable();
    };
    match response.status() {
        StatusCode::CREATED => Redirect::to(&format!("/students/{id}")).into_response(),
        StatusCode::NOT_FOUND => problem(
            StatusCode::NOT_FOUND,
            "Student not found",
            format!("There is no student {id}."),
        ),
        StatusCode::BAD_REQUEST => {
            let reason = response
                .json::<ErrorBody>()
                .await
                .map_or_else(|_| "The grading service refused the grade.".to_owned(), |e| e.message);
            refused(portal, id, reason, form).await
        }
        status => bad_gateway(&format!("it answered {status}")),
    }
}
