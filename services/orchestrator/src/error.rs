//! The orchestrator's errors, and the one mapping from each kind to its gRPC status code
//! ([`Error::code`], used by `impl From<Error> for tonic::Status`, and spelled for JSON replies
//! by [`Error::code_name`]). Every message says what was
//! wrong and what to do about it.

use tonic::Code;
use turbo_core::ValidationErrors;
use turbo_core::ids::{ProjectId, SessionId, TaskId};
use turbo_core::protocol::{AgentFailure, FailureKind};
use turbo_core::task::TaskStatus;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid task: {0}")]
    InvalidTask(#[from] ValidationErrors),
    /// A request field that is malformed or breaks a constraint, named by its path.
    #[error(transparent)]
    Request(#[from] turbo_proto::Error),
    #[error(transparent)]
    Store(#[from] turbo_store::Error),
    /// A model server that cannot be used (checked before a run starts).
    #[error(transparent)]
    Model(#[from] turbo_llm::Error),
    /// How a run ended, when the caller asked for its outcome.
    #[error("{0}")]
    Agent(AgentFailure),
    #[error("no task {0} exists: check the id (ListTasks lists them)")]
    UnknownTask(TaskId),
    #[error(
        "no project {0} exists, or it was deleted: check the id (ListProjects lists them; RestoreProject brings back a project deleted less than 30 days ago)"
    )]
    UnknownProject(ProjectId),
    #[error("no session {0} exists: start one with StartSession (POST /v1/projects/{{project_id}}/sessions)")]
    UnknownSession(SessionId),
    #[error("session {id} has ended ({reason}): start a new one")]
    SessionEnded { id: SessionId, reason: String },
    /// The caller's roles do not allow it.
    #[error("{0}")]
    Forbidden(String),
    #[error("task {task_id} is {status}: {hint}")]
    NotExecutable { task_id: TaskId, status: TaskStatus, hint: &'static str },
    #[error("task {task_id} is already {status}: only tasks that have not finished can be cancelled")]
    NotCancellable { task_id: TaskId, status: TaskStatus },
    #[error("project {0} is deleted: restore it with RestoreProject before running its tasks")]
    ProjectDeleted(ProjectId),
    #[error("project {project_id} has running tasks ({}): cancel them with CancelTask first", tasks.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    ProjectBusy { project_id: ProjectId, tasks: Vec<TaskId> },
    #[error("the workspace {path} {reason}")]
    Workspace { path: String, reason: String },
    #[error("the orchestrator is not running (it is shutting down): retry against a running one")]
    Stopped,
    #[error(
        "this orchestrator is a standby: another one holds the store's lease and runs its tasks; call the cluster's orchestrator address (it routes to the one that is serving) or retry"
    )]
    Standby,
    /// Another orchestrator took the store's lease: this one must stop at once.
    #[error("another orchestrator took over the store's lease ({0}); this one stops so that only one runs the tasks")]
    LeaseLost(String),
    #[error("cannot start the task runner: {0}")]
    Spawn(String),
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    /// The cluster's bus (NATS) cannot be used.
    #[error(transparent)]
    Bus(#[from] turbo_bus::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The gRPC status code of this error: the one place that decides it.
    pub fn code(&self) -> Code {
        use turbo_store::Error as S;
        match self {
            Error::InvalidTask(_) | Error::Request(_) => Code::InvalidArgument,
            Error::Store(e) if e.is_unavailable() => Code::Unavailable,
            Error::Store(e) => match e {
                S::NotFound { .. } => Code::NotFound,
                S::Invalid { .. } | S::Ambiguous { .. } => Code::InvalidArgument,
                S::Taken { .. } | S::Conflict { .. } => Code::AlreadyExists,
                S::WrongState { .. } => Code::FailedPrecondition,
                S::Unreachable { .. } | S::Unavailable { .. } => Code::Unavailable,
                S::Db { .. } | S::Corrupt { .. } | S::Unwritable { .. } | S::UnsupportedUrl { .. } => Code::Internal,
            },
            Error::Model(e) => {
                use turbo_llm::Error as M;
                match e {
                    // The server is down, overloaded or broken: try again later.
                    M::Unreachable { .. } | M::Timeout { .. } | M::Http { .. } | M::Server { .. } => Code::Unavailable,
                    // Retrying cannot help until the operator fixes the key, model or settings.
                    M::Unauthorized { .. } | M::ModelNotFound { .. } | M::InvalidSettings { .. } => {
                        Code::FailedPrecondition
                    }
                    M::InvalidResponse { .. } | M::InvalidOutput { .. } => Code::Internal,
                }
            }
            Error::Agent(f) => match f.kind {
                FailureKind::ModelUnavailable => Code::Unavailable,
                FailureKind::Cancelled => Code::Cancelled,
                FailureKind::TimedOut => Code::DeadlineExceeded,
                _ => Code::Internal,
            },
            Error::UnknownTask(_) | Error::UnknownProject(_) | Error::UnknownSession(_) => Code::NotFound,
            Error::NotExecutable { .. }
            | Error::SessionEnded { .. }
            | Error::NotCancellable { .. }
            | Error::ProjectDeleted(_)
            | Error::ProjectBusy { .. }
            | Error::Workspace { .. } => Code::FailedPrecondition,
            Error::Stopped | Error::Standby => Code::Unavailable,
            Error::LeaseLost(_) => Code::Aborted,
            Error::Forbidden(_) => Code::PermissionDenied,
            Error::Spawn(_) | Error::Serve { .. } => Code::Internal,
            Error::Bus(turbo_bus::Error::Connect { .. }) => Code::Unavailable,
            Error::Bus(_) => Code::Internal,
        }
    }

    /// [`Error::code`] as the snake_case name JSON replies carry (the NATS control plane's
    /// `{"error": {"code": "not_found", ...}}`): the same decision, spelled for JSON.
    pub fn code_name(&self) -> &'static str {
        code_name(self.code())
    }

    /// An INVALID_ARGUMENT error naming one request field.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Error {
        let mut errs = ValidationErrors::default();
        errs.push(field, problem);
        Error::Request(turbo_proto::Error::Invalid(errs))
    }
}

/// The snake_case name of a gRPC status code, as JSON replies spell it (`invalid_argument`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The status of [`Error::code`] with the error's message; INVALID_ARGUMENT statuses also carry
/// the broken fields as a `turbo.common.v1.ValidationErrors` detail.
impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error answering a request");
        }
        match e {
            Error::Request(e) => e.into(),
            Error::InvalidTask(errs) => turbo_proto::Error::Invalid(errs).into(),
            other => tonic::Status::new(code, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_arguments_carry_the_field() {
        let status = tonic::Status::from(Error::invalid("page_token", "is not a token this server issued"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_token"), "{}", status.message());
        let fields = turbo_proto::error::field_errors_of(&status).expect("field details");
        assert_eq!(fields.0[0].field, "page_token");
    }

    #[test]
    fn store_and_model_errors_map_by_kind() {
        let taken = Error::Store(turbo_store::Error::Taken { field: "name", value: "x".into(), holder: "p".into() });
        assert_eq!(taken.code(), Code::AlreadyExists);
        let down = Error::Model(turbo_llm::Error::Unreachable {
            provider: turbo_llm::Provider::Ollama,
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(Error::UnknownTask(TaskId::new()).code(), Code::NotFound);
        let status =
            tonic::Status::from(Error::NotCancellable { task_id: TaskId::new(), status: TaskStatus::Completed });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("only tasks that have not finished can be cancelled"));
    }

    #[test]
    fn json_code_names_follow_the_grpc_codes() {
        assert_eq!(Error::UnknownTask(TaskId::new()).code_name(), "not_found");
        assert_eq!(Error::invalid("id", "is missing").code_name(), "invalid_argument");
        assert_eq!(Error::Stopped.code_name(), "unavailable");
        let ambiguous = Error::Store(turbo_store::Error::Ambiguous { prefix: "abcd".into(), matches: vec![] });
        assert_eq!(ambiguous.code_name(), "invalid_argument");
        assert_eq!(code_name(Code::FailedPrecondition), "failed_precondition");
        assert_eq!(code_name(Code::DeadlineExceeded), "deadline_exceeded");
    }
}
