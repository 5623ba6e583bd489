//! The tool-runner's errors, which of them a model can correct, and the one mapping between
//! errors and gRPC statuses in both directions: [`Error::code`] and `From<Error> for Status` on
//! the server, [`Error::from_status`] in [`crate::RemoteToolRunner`].

use tonic::Code;
use turbo_core::ids::TaskId;

/// The `google.rpc.ErrorInfo` domain of the reasons below.
pub(crate) const DOMAIN: &str = "turbo.tools.v1";
/// The request was a model's mistake: a remote client gives back [`Error::Correctable`].
const MODEL_CORRECTABLE: &str = "MODEL_CORRECTABLE";
/// The task has no baseline: a remote client gives back [`Error::NoBaseline`].
const NO_BASELINE: &str = "NO_BASELINE";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tool(#[from] turbo_tools::Error),
    /// A tool error the model can correct, as a remote tool-runner reported it: the message is
    /// the tool's, word for word, as [`Error::Tool`] shows it in this process.
    #[error("{0}")]
    Correctable(String),
    #[error("no baseline for task {0}: call begin_task before asking for its diff")]
    NoBaseline(TaskId),
    #[error("cannot keep the task's starting snapshot at {path}: {reason}")]
    Baseline { path: String, reason: String },
    #[error("cannot snapshot the workspace {path}: {reason}")]
    Snapshot { path: String, reason: String },
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    /// A request field that is malformed, named by its path.
    #[error(transparent)]
    Request(#[from] turbo_proto::Error),
    #[error("'{url}' is not a tool-runner URL ({reason}): set cluster.tool_runner_url to http://HOST:PORT")]
    BadUrl { url: String, reason: String },
    #[error(
        "cannot reach the tool-runner at {url} ({rpc}): {reason}; check that it runs and that cluster.tool_runner_url points at it"
    )]
    Unreachable { url: String, rpc: &'static str, reason: String },
    #[error("the tool-runner at {url} did not answer {rpc} within {after_s}s; it may be overloaded, try again")]
    Deadline { url: String, rpc: &'static str, after_s: u64 },
    /// An approval decision made wrongly (no decider).
    #[error("{0}")]
    Approval(String),
    /// A workspace checkpoint could not be taken, listed or restored.
    #[error("{0}")]
    Checkpoint(String),
    /// The audit log refused a decision, which is therefore not applied.
    #[error("cannot record the decision in the audit log: {0}")]
    Audit(String),
    /// The NATS job queue could not be used (the server is down, JetStream is off).
    #[error(
        "the tool-runners' job queue: {reason}; check that nats-server runs with JetStream and that cluster.nats_url points at it"
    )]
    Queue { reason: String },
    /// Any other failure the tool-runner at `url` reported, with its status code.
    #[error("the tool-runner at {url} failed {rpc} ({code:?}): {message}")]
    Remote { url: String, rpc: &'static str, code: Code, message: String },
}

impl Error {
    /// Whether a model caused this and can fix it by calling differently.
    pub fn is_model_correctable(&self) -> bool {
        match self {
            Error::Tool(e) => e.is_model_correctable(),
            Error::Correctable(_) => true,
            _ => false,
        }
    }

    /// The gRPC status code of this error when a tool-runner answers with it.
    pub fn code(&self) -> Code {
        use turbo_tools::Error as T;
        match self {
            Error::Tool(e) if e.is_model_correctable() => Code::InvalidArgument,
            Error::Tool(T::InvalidWorkspace { .. }) => Code::InvalidArgument,
            Error::Tool(T::MissingProgram { .. }) => Code::FailedPrecondition,
            Error::Tool(_) => Code::Internal,
            Error::Correctable(_) | Error::Request(_) | Error::BadUrl { .. } => Code::InvalidArgument,
            Error::NoBaseline(_) => Code::FailedPrecondition,
            Error::Baseline { .. } | Error::Snapshot { .. } | Error::Serve { .. } => Code::Internal,
            Error::Approval(_) => Code::InvalidArgument,
            Error::Audit(_) => Code::Internal,
            Error::Checkpoint(_) => Code::FailedPrecondition,
            Error::Unreachable { .. } | Error::Queue { .. } => Code::Unavailable,
            Error::Deadline { .. } => Code::DeadlineExceeded,
            Error::Remote { code, .. } => *code,
        }
    }

    /// The error a client at `url` gets back from `rpc`'s `status`: model-correctable errors and
    /// a missing baseline (of `task_id`) come back as the same kinds [`crate::LocalToolRunner`]
    /// returns, so callers cannot tell a remote runner from a local one.
    pub(crate) fn from_status(status: tonic::Status, url: &str, rpc: &'static str, task_id: Option<TaskId>) -> Error {
        let reason = turbo_proto::error::reason_of(&status, DOMAIN);
        match (reason.as_deref(), task_id) {
            (Some(MODEL_CORRECTABLE), _) => return Error::Correctable(status.message().to_string()),
            (Some(NO_BASELINE), Some(task_id)) => return Error::NoBaseline(task_id),
            _ => {}
        }
        let url = url.to_string();
        match status.code() {
            // What tonic answers itself when it cannot connect or the connection drops (the
            // server never sends it: see `code`).
            Code::Unavailable => Error::Unreachable { url, rpc, reason: transport_reason(&status) },
            Code::Unknown if std::error::Error::source(&status).is_some() => {
                Error::Unreachable { url, rpc, reason: transport_reason(&status) }
            }
            code => Error::Remote { url, rpc, code, message: status.message().to_string() },
        }
    }
}

/// The innermost cause of a transport error (e.g. `Connection refused (os error 111)`), which
/// says more than tonic's `transport error`.
fn transport_reason(status: &tonic::Status) -> String {
    let mut reason = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    reason
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        match err {
            // Field errors travel as details, the way every turbo service sends them.
            Error::Request(e) => e.into(),
            err => {
                let reason = if err.is_model_correctable() {
                    Some(MODEL_CORRECTABLE)
                } else if matches!(err, Error::NoBaseline(_)) {
                    Some(NO_BASELINE)
                } else {
                    None
                };
                let code = err.code();
                if code == Code::Internal {
                    tracing::error!(error = %err, "tool-runner request failed");
                }
                match reason {
                    Some(reason) => turbo_proto::error::status_with_reason(code, err.to_string(), DOMAIN, reason),
                    None => tonic::Status::new(code, err.to_string()),
                }
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(err: Error, task_id: Option<TaskId>) -> Error {
        Error::from_status(tonic::Status::from(err), "http://runner:50054", "TaskDiff", task_id)
    }

    #[test]
    fn correctable_errors_stay_correctable_with_the_same_message() {
        let local = Error::Tool(turbo_tools::Error::OutsideWorkspace {
            path: "../x".into(),
            reason: "use a path relative to the workspace root".into(),
        });
        let message = local.to_string();
        let remote = round_trip(local, None);
        assert!(remote.is_model_correctable(), "{remote:?}");
        assert_eq!(remote.to_string(), message);
    }

    #[test]
    fn a_missing_baseline_comes_back_as_itself() {
        let task = TaskId::new();
        let status = tonic::Status::from(Error::NoBaseline(task));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(matches!(round_trip(Error::NoBaseline(task), Some(task)), Error::NoBaseline(t) if t == task));
    }

    #[test]
    fn other_errors_name_the_runner_and_keep_their_code() {
        let err = Error::Tool(turbo_tools::Error::InvalidWorkspace {
            path: "/nope".into(),
            reason: "it does not exist".into(),
        });
        assert_eq!(err.code(), Code::InvalidArgument);
        let remote = round_trip(err, None);
        assert!(!remote.is_model_correctable());
        assert_eq!(remote.code(), Code::InvalidArgument);
        let text = remote.to_string();
        assert!(text.contains("http://runner:50054") && text.contains("/nope"), "{text}");
    }

    #[test]
    fn a_bad_task_id_is_invalid_argument_naming_the_field() {
        let err = Error::Request(turbo_proto::Error::BadId { field: "task_id".into(), value: "x".into() });
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("task_id"), "{}", status.message());
    }
}
