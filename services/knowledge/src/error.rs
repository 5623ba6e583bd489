use turbo_core::knowledge::{KnowledgeError, KnowledgeErrorKind};

use crate::embed::EmbedError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    #[error("cannot index workspace {root}: {reason}; check the project's workspace path")]
    Workspace { root: String, reason: String },
    #[error("cannot open the knowledge dataset at {uri}: {reason}; check knowledge.dataset_uri")]
    Dataset { uri: String, reason: String },
    #[error(
        "the knowledge dataset at {uri} holds vectors of {stored}, but the configured embedder is {configured}; \
         vectors of two models cannot be mixed: re-index into a new dataset (set knowledge.dataset_uri to a new \
         location, or delete {uri}), or configure the model it was built with"
    )]
    ModelChanged { uri: String, stored: String, configured: String },
    #[error("a vector of {got} values does not fit the dataset's {expected} dimensions")]
    Dimension { expected: usize, got: usize },
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("{0}")]
    Invalid(String),
    #[error("knowledge dataset: {0}")]
    Search(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for KnowledgeError {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Workspace { .. } | Error::Invalid(_) | Error::Dimension { .. } => {
                KnowledgeErrorKind::InvalidArgument
            }
            Error::ModelChanged { .. } => KnowledgeErrorKind::FailedPrecondition,
            Error::Embed(embed) if embed.is_unavailable() => KnowledgeErrorKind::Unavailable,
            Error::Dataset { .. } => KnowledgeErrorKind::Unavailable,
            Error::Serve { .. } | Error::Embed(_) | Error::Search(_) => KnowledgeErrorKind::Internal,
        };
        KnowledgeError::new(kind, e.to_string())
    }
}
