#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    #[error("cannot index workspace {root}: {reason}; check the project's workspace path")]
    Workspace { root: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
