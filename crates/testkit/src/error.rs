//! Errors of the test kit: only loading a scenario can fail in ways a caller must handle.

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid scenario: {reason}; see Script::from_json for the format")]
    Scenario { reason: String },

    #[error("cannot read scenario {path}: {source}; check the --scenario path")]
    ReadScenario {
        path: String,
        #[source]
        source: std::io::Error,
    },
}
