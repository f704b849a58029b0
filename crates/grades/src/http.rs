//! The grading API's routes and handlers. Every answer that is not a success is an
//! [`ApiError`] (`{"error", "message"}` JSON).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rollcall_client::Watched;
use rollcall_http::SaysJson;
use rollcall_http::answer::json_fallbacks;
use rollcall_wire::{Grade, GradingRules, NewStudent};

use crate::db::Db;
use crate::error::ApiError;

/// The longest title accepted.
const MAX_TITLE: usize = 200;
/// The longest name accepted.
const MAX_NAME: usize = 100;

/// The grading API over `db`, accepting grades as `rules` say (the defaults until a release
/// of the configuration is in force).
pub(crate) fn router(db: Db, rules: Watched<GradingRules>) -> Router {
    let routes = Router::new()
        .route("/students", get(students).post(add_student))
        .route("/students/{id}", get(student))
        .route("/students/{id}/grades", post(add_grade));
    json_fallbacks(routes)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .layer(axum::Extension(rules))
        .with_state(db)
}

/// A JSON answer as Go's `json.Encoder` writes it: the value, then a newline (the seed's
/// answers are byte for byte this).
fn go_json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut body = serde_json::to_vec(value).expect("students and grades always encode");
    body.push(b'\n');
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

/// Runs a database call on the blocking pool.
async fn with_db<T: Send + 'static>(
    db: &Db,
    call: impl FnOnce(&Db) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || call(&db)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(ApiError::internal(&e)),
        Err(e) => Err(ApiError::internal(&e)),
    }
}

/// A JSON write must say it is JSON (see [`rollcall_http::says_json`]; the Go portal does).
fn json_content_type(SaysJson(json): SaysJson) -> Result<(), ApiError> {
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// The seed answers 404 for an id that is not an integer.
fn student_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .map_err(|_| ApiError::StudentNotFound(format!("{raw:?}")))
}

fn not_found(id: i64) -> ApiError {
    tracing::warn!("Student with ID {id} not found");
    ApiError::StudentNotFound(id.to_string())
}

#[tracing::instrument(level = "debug", skip_all)]
async fn students(State(db): State<Db>) -> Result<Response, ApiError> {
    with_db(&db, Db::students)
        .await
        .map(|students| go_json(StatusCode::OK, &students))
}

#[tracing::instrument(level = "debug", skip_all)]
async fn student(State(db): State<Db>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = student_id(&raw)?;
    match with_db(&db, move |db| db.student(id)).await? {
        Some(student) => Ok(go_json(StatusCode::OK, &student)),
        None => Err(not_found(id)),
    }
}

/// What is wrong with a grade under `rules`, if anything.
fn invalid_grade(grade: &Grade, rules: &GradingRules) -> Option<String> {
    let title = grade.title.trim();
    if title.is_empty() {
        return Some("Title must not be empty".to_owned());
    }
    if title.chars().count() > MAX_TITLE {
        return Some(format!("Title must be at most {MAX_TITLE} characters"));
    }
    rules.refuse(grade)
}

#[tracing::instrument(level = "debug", skip_all)]
async fn add_grade(
    State(db): State<Db>,
    axum::Extension(rules): axum::Extension<Watched<GradingRules>>,
    Path(raw): Path<String>,
    json: SaysJson,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = student_id(&raw)?;
    json_content_type(json)?;
    let body = body.map_err(ApiError::Body)?;
    let mut grade: Grade = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not a Grade: {e}")))?;
    let in_force = rules.current().unwrap_or_default();
    if let Some(reason) = invalid_grade(&grade, &in_force) {
        return Err(ApiError::bad_request("invalid_grade", reason));
    }
    grade.title = grade.title.trim().to_owned();
    let stored = grade.clone();
    if !with_db(&db, move |db| db.add_grade(id, &stored)).await? {
        return Err(not_found(id));
    }
    tracing::info!(student = id, title = %grade.title, kind = %grade.kind, score = grade.score, "grade added");
    Ok(go_json(StatusCode::CREATED, &grade))
}

#[tracing::instrument(level = "debug", skip_all)]
async fn add_student(
    State(db): State<Db>,
    json: SaysJson,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    json_content_type(json)?;
    let body = body.map_err(ApiError::Body)?;
    let new: NewStudent = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not {{\"FirstName\", \"LastName\"}}: {e}"),
        )
    })?;
    let (first, last) = (new.first_name.trim().to_owned(), new.last_name.trim().to_owned());
    for (name, value) in [("FirstName", &first), ("LastName", &last)] {
        if value.is_empty() || value.chars().count() > MAX_NAME {
            return Err(ApiError::bad_request(
                "invalid_student",
                format!("{name} must be 1 to {MAX_NAME} characters"),
            ));
        }
    }
    let student = with_db(&db, move |db| db.add_student(&first, &last)).await?;
    tracing::info!(student = student.id, "student added");
    Ok(go_json(StatusCode::CREATED, &student))
}
