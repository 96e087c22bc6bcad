//! The drain-job admin API on the master's metrics port (`python-api-2.md` §10):
//! `POST /api/v1/drain_jobs`, `GET /api/v1/drain_jobs/query?job_id=`,
//! `POST /api/v1/drain_jobs/cancel?job_id=`, `GET /api/v1/segments/status?segment=`.
//!
//! Answers are JSON with Mooncake's field order; errors are
//! `{"success":false,"error_code":<code>,"error_message":"<text>"}` with the status of the
//! wheel's table. A wrong method or an unknown route under `/api/v1/` is a plain 404.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use mooncake_store::{uuid_string, ErrorCode, TaskId};

use crate::core::DrainJobView;
use crate::Master;

type Params = Query<HashMap<String, String>>;

/// The drain-job routes.
pub(crate) fn routes() -> Router<Arc<Master>> {
    Router::new()
        .route("/api/v1/drain_jobs", any(create))
        .route("/api/v1/drain_jobs/query", any(query))
        .route("/api/v1/drain_jobs/cancel", any(cancel))
        .route("/api/v1/segments/status", any(segment_status))
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 Not Found").into_response()
}

fn text(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn error(e: ErrorCode, message: Option<&str>) -> Response {
    let status = match e {
        ErrorCode::InvalidParams => StatusCode::BAD_REQUEST,
        ErrorCode::SegmentNotFound | ErrorCode::JobNotFound => StatusCode::NOT_FOUND,
        ErrorCode::UnavailableInCurrentStatus => StatusCode::CONFLICT,
        ErrorCode::UnavailableInCurrentMode => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(
        status,
        format!(
            "{{\"success\":false,\"error_code\":{},\"error_message\":{}}}",
            e.code(),
            text(message.unwrap_or(e.name()))
        ),
    )
}

/// `<u64>-<u64>`, read leniently as `stoull` reads each side of the first `-`: leading
/// blanks skipped, digits up to the first non-digit.
fn job_id(params: &HashMap<String, String>) -> Option<TaskId> {
    fn stoull(s: &str) -> Option<u64> {
        let s = s.trim_start();
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    }
    let (hi, lo) = params.get("job_id")?.split_once('-')?;
    Some(TaskId::from_halves(stoull(hi)?, stoull(lo)?))
}

fn job_status(id: TaskId, status: &str) -> String {
    format!(
        "{{\"success\":true,\"job_id\":\"{}\",\"status\":\"{status}\",\"error_code\":0,\"error_message\":\"\"}}",
        uuid_string(id.0)
    )
}

/// A JSON array of strings, or `None` when `v` is anything else.
fn strings(v: Option<&serde_json::Value>) -> Option<Vec<String>> {
    match v {
        None | Some(serde_json::Value::Null) => Some(Vec::new()),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

async fn create(State(m): State<Arc<Master>>, method: Method, body: Bytes) -> Response {
    if method != Method::POST {
        return not_found();
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("Invalid JSON body: {e}");
            return error(ErrorCode::InvalidParams, Some(&msg));
        }
    };
    let segments = strings(v.get("segments"));
    let targets = strings(v.get("target_segments"));
    let concurrency = match v.get("max_concurrency") {
        None | Some(serde_json::Value::Null) => Some(4),
        Some(c) => c.as_u64(),
    };
    let (Some(segments), Some(targets), Some(concurrency)) = (segments, targets, concurrency)
    else {
        return error(ErrorCode::InvalidParams, None);
    };
    match m.create_drain_job(&segments, &targets, concurrency) {
        Ok(id) => json(StatusCode::OK, job_status(id, "CREATED")),
        Err(e) => error(e, None),
    }
}

fn view_json(j: &DrainJobView) -> String {
    let segments: Vec<String> = j.segments.iter().map(|s| text(s)).collect();
    format!(
        "{{\"success\":true,\"job_id\":\"{}\",\"type\":0,\"type_name\":\"DRAIN\",\"status\":{},\"status_name\":\"{}\",\
         \"created_at_ms_epoch\":{},\"last_updated_at_ms_epoch\":{},\"segments\":[{}],\
         \"succeeded_units\":{},\"failed_units\":{},\"blocked_units\":{},\"active_units\":{},\"migrated_bytes\":{},\
         \"message\":{},\"error_code\":0,\"error_message\":\"\"}}",
        uuid_string(j.id.0),
        j.status as u8,
        j.status.name(),
        j.created_at_ms,
        j.updated_at_ms,
        segments.join(","),
        j.succeeded_units,
        j.failed_units,
        j.blocked_units,
        j.active_units,
        j.migrated_bytes,
        text(&j.message),
    )
}

async fn query(State(m): State<Arc<Master>>, method: Method, Query(p): Params) -> Response {
    if method != Method::GET {
        return not_found();
    }
    let Some(id) = job_id(&p) else {
        return error(ErrorCode::InvalidParams, Some("Missing or invalid job_id"));
    };
    match m.query_drain_job(id) {
        Ok(view) => json(StatusCode::OK, view_json(&view)),
        Err(e) => error(e, None),
    }
}

async fn cancel(State(m): State<Arc<Master>>, method: Method, Query(p): Params) -> Response {
    if method != Method::POST {
        return not_found();
    }
    let Some(id) = job_id(&p) else {
        return error(ErrorCode::InvalidParams, Some("Missing or invalid job_id"));
    };
    match m.cancel_drain_job(id) {
        Ok(()) => json(StatusCode::OK, job_status(id, "CANCELED")),
        Err(e) => error(e, None),
    }
}

async fn segment_status(
    State(m): State<Arc<Master>>,
    method: Method,
    Query(p): Params,
) -> Response {
    if method != Method::GET {
        return not_found();
    }
    let Some(name) = p.get("segment") else {
        return error(
            ErrorCode::InvalidParams,
            Some("Missing segment query parameter"),
        );
    };
    match m.segment_status(name) {
        Ok(s) => json(
            StatusCode::OK,
            format!(
                "{{\"success\":true,\"segment\":{},\"status\":{},\"status_name\":\"{}\",\"error_code\":0,\"error_message\":\"\"}}",
                text(name),
                s as u8,
                s.name()
            ),
        ),
        Err(e) => error(e, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_read_leniently_and_written_as_two_decimals() {
        let p = |v: &str| HashMap::from([("job_id".to_owned(), v.to_owned())]);
        assert_eq!(job_id(&p("1-2")), Some(TaskId::from_halves(1, 2)));
        assert_eq!(job_id(&p(" 7- 8x")), Some(TaskId::from_halves(7, 8)));
        assert_eq!(job_id(&p("x")), None);
        assert_eq!(job_id(&p("1")), None);
        assert_eq!(job_id(&HashMap::new()), None);
        assert_eq!(
            uuid_string(TaskId::from_halves(u64::MAX, 3).0),
            format!("{}-3", u64::MAX)
        );
    }

    #[test]
    fn segment_lists_must_be_strings() {
        let v: serde_json::Value = serde_json::json!({"a": ["x", "y"], "b": [1], "c": "x"});
        assert_eq!(strings(v.get("a")), Some(vec!["x".into(), "y".into()]));
        assert_eq!(strings(v.get("b")), None);
        assert_eq!(strings(v.get("c")), None);
        assert_eq!(strings(v.get("missing")), Some(vec![]));
    }
}
