use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid setting {key}: {problem}")]
    Invalid { key: String, problem: String },
}

pub type Result<T> = std::result::Result<T, Error>;
