//! Every REST error as one JSON shape, with the spec's status codes:
//!
//! ```json
//! {"error": {"status": 422, "code": "validation_failed", "message": "...",
//!            "fields": [{"field": "name", "problem": "must not be empty"}]}}
//! ```
//!
//! 400 a body that is not JSON or not an object of the documented shape; 401 no or a bad token;
//! 403 a role without the permission; 404 nothing there (or nothing the caller may see); 409 a
//! name already taken or a state that forbids the change; 413 a body over the limit; 415 not
//! `application/json`; 422 a request the domain model's constraints refuse, field by field;
//! 503/504 the orchestrator cannot be reached or did not answer in time.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tonic::Code;
use turbo_core::ValidationErrors;

use crate::auth::TokenError;

/// One field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub problem: String,
}

/// The body of every error response.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: Problem,
}

/// What went wrong.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// The HTTP status, repeated for clients that only keep the body.
    pub status: u16,
    /// A stable name: bad_request, unauthenticated, forbidden, not_found, conflict,
    /// payload_too_large, unsupported_media_type, validation_failed, unavailable, timeout,
    /// internal.
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldProblem>,
}

/// A REST error.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub fields: Vec<FieldProblem>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), fields: Vec::new() }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 422 naming each field.
    pub fn invalid(errors: ValidationErrors) -> Self {
        let fields: Vec<FieldProblem> =
            errors.0.into_iter().map(|e| FieldProblem { field: e.field, problem: e.problem }).collect();
        let message = fields.iter().map(|f| format!("{}: {}", f.field, f.problem)).collect::<Vec<_>>().join("; ");
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, message, fields }
    }

    /// 422 for one field.
    pub fn field(field: &str, problem: impl Into<String>) -> Self {
        let mut errors = ValidationErrors::default();
        errors.push(field, problem);
        Self::invalid(errors)
    }

    /// The error for the orchestrator's answer `status`.
    pub fn from_status(status: &tonic::Status) -> Self {
        if let Some(errors) = turbo_proto::error::field_errors_of(status)
            && !errors.is_empty()
        {
            return Self::invalid(errors);
        }
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::UNPROCESSABLE_ENTITY,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded | Code::Cancelled => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // A status with a source is the client's own: the orchestrator was not reached at all.
        let message = match std::error::Error::source(status) {
            Some(_) => format!("the orchestrator cannot be reached ({}); try again shortly", status.message()),
            None => status.message().to_string(),
        };
        let http = match (http, std::error::Error::source(status)) {
            (StatusCode::INTERNAL_SERVER_ERROR, Some(_)) => StatusCode::SERVICE_UNAVAILABLE,
            (http, _) => http,
        };
        if http == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(code = ?status.code(), message = %status.message(), "the orchestrator failed a request");
        }
        Self::new(http, message)
    }

    fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
            StatusCode::TOO_MANY_REQUESTS => "rate_limited",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            _ => "internal",
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, e.to_string())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match &rejection {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            // A body that is JSON but not of the documented shape: a missing or mistyped field.
            JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_REQUEST,
        };
        let message = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "send the body as JSON with 'Content-Type: application/json'".into(),
            StatusCode::PAYLOAD_TOO_LARGE => {
                "the body is larger than the gateway accepts (gateway.max_body_bytes)".into()
            }
            _ => rejection.body_text(),
        };
        let fields = match &rejection {
            JsonRejection::JsonDataError(_) => vec![field_problem(&message, "body")],
            JsonRejection::JsonSyntaxError(_) => {
                vec![FieldProblem {
                    field: "body".into(),
                    problem: format!("is not valid JSON: {}", after_colon(&message)),
                }]
            }
            _ => Vec::new(),
        };
        Self { status, message, fields }
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        let message = rejection.body_text();
        Self { status: StatusCode::BAD_REQUEST, fields: vec![field_problem(&message, "query")], message }
    }
}

/// What follows axum's own sentence ("Failed to deserialize ...: ").
fn after_colon(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, rest)| rest)
}

/// The field and the problem in serde's report of a body or query of the wrong shape:
/// `Failed to deserialize ...: phases[0]: missing field `name` at line 1 column 23` names
/// `phases[0].name`; a report without a path names `whole` (the body, the query).
fn field_problem(text: &str, whole: &str) -> FieldProblem {
    let detail = after_colon(text);
    // serde_json's position says nothing the field does not.
    let detail = detail.rsplit_once(" at line ").map_or(detail, |(d, _)| d);
    let (path, problem) = match detail.split_once(": ") {
        Some((path, problem)) if !path.is_empty() && !path.contains(' ') => (Some(path), problem),
        _ => (None, detail),
    };
    let named = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|lead| problem.strip_prefix(lead))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let field = match (path, named) {
        // An unknown field is the last step of its own path; a missing one is not.
        (Some(path), Some(name)) if path == name || path.ends_with(&format!(".{name}")) => path.to_string(),
        (Some(path), Some(name)) => format!("{path}.{name}"),
        (Some(path), None) => path.to_string(),
        (None, Some(name)) => name.to_string(),
        (None, None) => whole.to_string(),
    };
    FieldProblem { field, problem: problem.to_string() }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: Problem {
                status: self.status.as_u16(),
                code: self.code(),
                message: self.message,
                fields: self.fields,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_specs_codes() {
        for (code, http) in [
            (Code::InvalidArgument, 422),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::FailedPrecondition, 409),
            (Code::PermissionDenied, 403),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ] {
            assert_eq!(ApiError::from_status(&tonic::Status::new(code, "x")).status.as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn serdes_reports_name_the_field() {
        let lead = "Failed to deserialize the JSON body into the target type: ";
        for (report, field, problem) in [
            ("phases[0]: missing field `name` at line 1 column 23", "phases[0].name", "missing field `name`"),
            ("missing field `name` at line 1 column 2", "name", "missing field `name`"),
            (
                "technologies: invalid type: integer `3`, expected a sequence at line 1 column 19",
                "technologies",
                "invalid type: integer `3`, expected a sequence",
            ),
            (
                "invalid type: integer `1`, expected struct X at line 1 column 1",
                "body",
                "invalid type: integer `1`, expected struct X",
            ),
        ] {
            let found = field_problem(&format!("{lead}{report}"), "body");
            assert_eq!((found.field.as_str(), found.problem.as_str()), (field, problem), "{report}");
        }
        let unknown =
            field_problem(&format!("{lead}colour: unknown field `colour`, expected `name` at line 1 column 9"), "body");
        assert_eq!(unknown.field, "colour");
        let query =
            field_problem("Failed to deserialize query string: unknown field `sort`, expected one of `actor`", "query");
        assert_eq!(query.field, "sort");
    }

    #[test]
    fn field_errors_become_fields() {
        let err = ApiError::field("name", "must not be empty");
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.fields, [FieldProblem { field: "name".into(), problem: "must not be empty".into() }]);
        assert!(err.message.contains("name: must not be empty"));
    }
}
