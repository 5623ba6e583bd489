use turbo_core::ids::TaskId;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tool(#[from] turbo_tools::Error),
    #[error("no baseline for task {0}: call begin_task before asking for its diff")]
    NoBaseline(TaskId),
    #[error("cannot keep the task's starting snapshot at {path}: {reason}")]
    Baseline { path: String, reason: String },
    #[error("cannot snapshot the workspace {path}: {reason}")]
    Snapshot { path: String, reason: String },
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
}

impl Error {
    /// Whether a model caused this and can fix it by calling differently.
    pub fn is_model_correctable(&self) -> bool {
        matches!(self, Error::Tool(e) if e.is_model_correctable())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
