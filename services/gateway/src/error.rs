#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    /// No usable key to check tokens with, and what to set.
    #[error("{0}")]
    NoKey(String),
    #[error("'{url}' is not the orchestrator's address ({reason}): set gateway.orchestrator_url to http://HOST:PORT")]
    BadUrl { url: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
