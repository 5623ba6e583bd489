use turbo_core::ids::TaskId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid task: {0}")]
    InvalidTask(#[from] turbo_core::ValidationErrors),
    #[error(transparent)]
    Store(#[from] turbo_store::Error),
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    #[error("task {task_id} is {status}: {hint}")]
    NotExecutable { task_id: TaskId, status: turbo_core::task::TaskStatus, hint: &'static str },
    #[error("the orchestrator is not running")]
    Stopped,
    #[error("cannot start the task runner: {0}")]
    Spawn(String),
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
