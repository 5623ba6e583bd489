//! Why a proto message could not become a domain value; and the error details a status
//! carries (field errors, a machine-readable reason) inside a `google.rpc.Status`.

use prost::Message;
use turbo_core::ValidationErrors;

use crate::common::v1 as pb;

/// A conversion failure. Every variant names the offending field by its dotted path
/// (`execution_plan.phases[1].estimated_duration`) and its message says what to send instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The value converted but breaks the domain's constraints (all of them are listed).
    #[error("invalid value: {0}; fix the listed fields and retry")]
    Invalid(ValidationErrors),
    /// A required field (a message, id or timestamp) was not set.
    #[error("{field} is missing: it is required, set it")]
    Missing { field: String },
    /// An id is not a UUID.
    #[error("{field} is not a valid id ('{value}'): send a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8")]
    BadId { field: String, value: String },
    /// An enum field holds UNSPECIFIED or a number this version does not know.
    #[error("{field} has enum value {value}, which is unspecified or unknown: send one of {expected}")]
    UnknownEnum { field: String, value: i32, expected: String },
    /// A `*_json` field is not JSON of the expected shape.
    #[error("{field} is not valid JSON ({reason}): send JSON text, e.g. {{}} for an empty object")]
    BadJson { field: String, reason: String },
    /// A timestamp is outside the representable range or has nanos outside 0..=999_999_999
    /// (1_999_999_999 on a leap second).
    #[error("{field} is not a valid timestamp: seconds must be within years 1..=9999 and nanos within 0..=999999999")]
    BadTimestamp { field: String },
    /// A duration is negative or its nanos are outside 0..=999_999_999.
    #[error(
        "{field} is not a valid duration: seconds and nanos must not be negative and nanos must be below 1000000000"
    )]
    BadDuration { field: String },
}

impl Error {
    /// The same error with `prefix` put in front of every field path, for errors of nested messages.
    pub fn under(self, prefix: &str) -> Error {
        let join = |field: String| format!("{prefix}.{field}");
        match self {
            Error::Invalid(errs) => {
                let mut nested = ValidationErrors::default();
                nested.nest(prefix, errs);
                Error::Invalid(nested)
            }
            Error::Missing { field } => Error::Missing { field: join(field) },
            Error::BadId { field, value } => Error::BadId { field: join(field), value },
            Error::UnknownEnum { field, value, expected } => Error::UnknownEnum { field: join(field), value, expected },
            Error::BadJson { field, reason } => Error::BadJson { field: join(field), reason },
            Error::BadTimestamp { field } => Error::BadTimestamp { field: join(field) },
            Error::BadDuration { field } => Error::BadDuration { field: join(field) },
        }
    }

    /// The broken fields, one entry per problem.
    pub fn field_errors(&self) -> ValidationErrors {
        match self {
            Error::Invalid(errs) => errs.clone(),
            Error::Missing { field }
            | Error::BadId { field, .. }
            | Error::UnknownEnum { field, .. }
            | Error::BadJson { field, .. }
            | Error::BadTimestamp { field }
            | Error::BadDuration { field } => {
                let mut errs = ValidationErrors::default();
                errs.push(field.clone(), self.to_string());
                errs
            }
        }
    }
}

impl From<ValidationErrors> for Error {
    fn from(errs: ValidationErrors) -> Self {
        Error::Invalid(errs)
    }
}

/// Type URL of the [`pb::ValidationErrors`] detail attached to `INVALID_ARGUMENT` statuses.
pub const VALIDATION_ERRORS_TYPE_URL: &str = "type.googleapis.com/turbo.common.v1.ValidationErrors";

/// `google.rpc.Status`, the standard container of gRPC error details.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// Type URL of the `google.rpc.ErrorInfo` detail of statuses made by [`status_with_reason`].
pub const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// `google.rpc.ErrorInfo`: why a call failed, as a constant a client can match on.
#[derive(Clone, PartialEq, Message)]
struct ErrorInfo {
    /// UPPER_SNAKE_CASE, e.g. `NO_BASELINE`.
    #[prost(string, tag = "1")]
    reason: String,
    /// The service or package that defines the reason, e.g. `turbo.tools.v1`.
    #[prost(string, tag = "2")]
    domain: String,
    #[prost(map = "string, string", tag = "3")]
    metadata: std::collections::HashMap<String, String>,
}

/// A status with `message` for people and `reason` (defined by `domain`) for programs, as a
/// `google.rpc.ErrorInfo` detail; read it back with [`reason_of`].
pub fn status_with_reason(code: tonic::Code, message: impl Into<String>, domain: &str, reason: &str) -> tonic::Status {
    let message = message.into();
    let info = ErrorInfo { reason: reason.to_string(), domain: domain.to_string(), metadata: Default::default() };
    let status = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any { type_url: ERROR_INFO_TYPE_URL.to_string(), value: info.encode_to_vec() }],
    };
    tonic::Status::with_details(code, message, status.encode_to_vec().into())
}

/// The reason a status carries as a `google.rpc.ErrorInfo` detail of `domain`, if any.
pub fn reason_of(status: &tonic::Status, domain: &str) -> Option<String> {
    let rpc = RpcStatus::decode(status.details()).ok()?;
    rpc.details
        .iter()
        .filter(|d| d.type_url == ERROR_INFO_TYPE_URL)
        .filter_map(|d| ErrorInfo::decode(d.value.as_slice()).ok())
        .find(|info| info.domain == domain)
        .map(|info| info.reason)
}

/// `INVALID_ARGUMENT` with the error's message, and its field errors as a
/// `turbo.common.v1.ValidationErrors` detail (read them back with [`field_errors_of`]).
impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        let detail = pb::ValidationErrors::from(err.field_errors());
        let status = RpcStatus {
            code: tonic::Code::InvalidArgument as i32,
            message: message.clone(),
            details: vec![prost_types::Any {
                type_url: VALIDATION_ERRORS_TYPE_URL.to_string(),
                value: detail.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(tonic::Code::InvalidArgument, message, status.encode_to_vec().into())
    }
}

/// The field errors a status carries as a `turbo.common.v1.ValidationErrors` detail, if any.
pub fn field_errors_of(status: &tonic::Status) -> Option<ValidationErrors> {
    let rpc = RpcStatus::decode(status.details()).ok()?;
    let any = rpc.details.into_iter().find(|d| d.type_url == VALIDATION_ERRORS_TYPE_URL)?;
    let errs = pb::ValidationErrors::decode(any.value.as_slice()).ok()?;
    Some(errs.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_errors_carry_the_full_path() {
        let e = Error::Missing { field: "estimated_duration".into() }.under("phases[2]").under("execution_plan");
        assert_eq!(e, Error::Missing { field: "execution_plan.phases[2].estimated_duration".into() });

        let mut v = ValidationErrors::default();
        v.push("confidence_score", "must be between 0 and 1, got 2");
        let e = Error::Invalid(v).under("execution_plan");
        assert!(e.to_string().contains("execution_plan.confidence_score: must be between 0 and 1"), "{e}");
    }

    #[test]
    fn status_is_invalid_argument_with_field_errors() {
        let err = Error::BadId { field: "task_id".into(), value: "nope".into() };
        let status = tonic::Status::from(err.clone());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), err.to_string());
        assert!(status.message().contains("task_id"));
        let fields = field_errors_of(&status).expect("details decode");
        assert_eq!(fields.0.len(), 1);
        assert_eq!(fields.0[0].field, "task_id");
        assert_eq!(reason_of(&status, "turbo.tools.v1"), None);
    }

    #[test]
    fn a_reason_travels_beside_the_message() {
        let status = status_with_reason(
            tonic::Code::FailedPrecondition,
            "no baseline for task t",
            "turbo.tools.v1",
            "NO_BASELINE",
        );
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "no baseline for task t");
        assert_eq!(reason_of(&status, "turbo.tools.v1").as_deref(), Some("NO_BASELINE"));
        assert_eq!(reason_of(&status, "turbo.tasks.v1"), None, "a reason belongs to its domain");
        assert_eq!(reason_of(&tonic::Status::internal("boom"), "turbo.tools.v1"), None);
        assert!(field_errors_of(&status).is_none());
    }
}
