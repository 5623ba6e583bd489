//! Exit codes, documented in the README; scripts rely on them.

use turbo_core::protocol::FailureKind;

/// Success: the task completed (or, in a dry run, was planned).
pub const OK: u8 = 0;
/// The task ran and failed: tests still failing, changes requested, step limit, a tool failure.
pub const TASK_FAILED: u8 = 1;
/// Bad input or configuration: fix the command line, the config or the task text.
pub const USAGE: u8 = 2;
/// A model server is unreachable, rejects the key, or lacks the model.
pub const MODEL_UNAVAILABLE: u8 = 3;
/// The model answered, but never in a usable shape (e.g. no valid plan).
pub const MODEL_OUTPUT: u8 = 4;
/// Cancelled (Ctrl-C) or over its deadline.
pub const INTERRUPTED: u8 = 5;
/// The workdir or the database cannot be written.
pub const STORAGE: u8 = 6;
/// `--server`: the orchestrator cannot be reached, or answers that it cannot serve now
/// (`UNAVAILABLE`: shutting down, a standby, its database or model server down).
pub const ORCHESTRATOR_UNAVAILABLE: u8 = 7;
/// A bug: please report it with the log.
pub const INTERNAL: u8 = 70;

pub fn for_failure(kind: FailureKind) -> u8 {
    match kind {
        FailureKind::ModelUnavailable => MODEL_UNAVAILABLE,
        FailureKind::ModelOutput | FailureKind::InvalidPlan => MODEL_OUTPUT,
        FailureKind::StepLimit
        | FailureKind::Stuck
        | FailureKind::Tool
        | FailureKind::TestsFailed
        | FailureKind::ChangesRequested => TASK_FAILED,
        FailureKind::Cancelled | FailureKind::TimedOut => INTERRUPTED,
        FailureKind::Storage => STORAGE,
        FailureKind::Internal => INTERNAL,
    }
}

/// An error that ends the command with a message and a code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Maps a model-layer error to its exit code.
pub fn for_model_error(e: &turbo_llm::Error) -> u8 {
    use turbo_llm::Error as M;
    match e {
        M::InvalidOutput { .. } | M::InvalidResponse { .. } => MODEL_OUTPUT,
        M::InvalidSettings { .. } => USAGE,
        _ => MODEL_UNAVAILABLE,
    }
}

/// Maps an error of the embedded stack (models, store, actors) to its exit code.
pub fn for_orchestrator_error(e: turbo_orchestrator::Error) -> Exit {
    use turbo_orchestrator::Error as O;
    let code = match &e {
        O::Model(m) => for_model_error(m),
        O::Store(_) => STORAGE,
        // No nats-server at the configured URL: the message names it and what to check.
        O::Bus(turbo_bus::Error::Connect { .. }) => USAGE,
        _ => INTERNAL,
    };
    Exit::new(code, e.to_string())
}
