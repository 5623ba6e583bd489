//! Errors of the bus. NATS errors are carried as text: their types differ per operation and a
//! caller can only report them.

use crate::codec::DecodeError;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to nats at {url}: {reason}; is nats-server running there with jetstream (-js)?")]
    Connect { url: String, reason: String },
    #[error("cannot create or update stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("cannot create or update consumer {consumer} on stream {stream}: {reason}")]
    Consumer { stream: String, consumer: String, reason: String },
    #[error("cannot publish to {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("cannot read stream {stream}: {reason}")]
    Read { stream: String, reason: String },
    #[error("cannot encode a {kind} message: {reason}")]
    Encode { kind: &'static str, reason: String },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}
