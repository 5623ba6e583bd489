#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    #[error(
        "the gateway needs gateway.jwt_secret to check bearer tokens: set TURBO_CODER__GATEWAY__JWT_SECRET to at least 32 random bytes (e.g. `openssl rand -hex 32`)"
    )]
    NoSecret,
    #[error("'{url}' is not the orchestrator's address ({reason}): set gateway.orchestrator_url to http://HOST:PORT")]
    BadUrl { url: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;
