use turbo_core::agent::AgentRole;
use turbo_core::protocol::{AgentFailure, FailureKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Model(#[from] turbo_llm::Error),
    #[error(transparent)]
    Tool(#[from] turbo_tool_runner::Error),
    #[error("no valid plan after {attempts} attempts; last problems: {problems}")]
    InvalidPlan { attempts: u32, problems: String },
    #[error("the {role} used all {max_steps} steps without finishing; raise --max-steps (MAX_STEPS) or split the task")]
    StepLimit { role: &'static str, max_steps: u32 },
    #[error("the model repeated a call that already failed ({tool}: {error}); stopping this phase")]
    Stuck { tool: String, error: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Unsupported(String),
    #[error("the {role} agent is not running in this process")]
    AgentGone { role: String },
    #[error("the {role} agent failed: {reason}")]
    AgentCrashed { role: String, reason: String },
    #[error("cannot serve on {addr}: {reason}")]
    Serve { addr: String, reason: String },
    #[error(
        "the {role} worker needs NATS: set cluster.nats_url (TURBO_CODER__CLUSTER__NATS_URL=nats://HOST:4222) to the cluster's nats-server"
    )]
    NoNats { role: AgentRole },
    #[error(transparent)]
    Bus(#[from] turbo_bus::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for AgentFailure {
    fn from(e: Error) -> Self {
        use turbo_llm::Error as M;
        let kind = match &e {
            Error::Model(
                M::Unreachable { .. }
                | M::Unauthorized { .. }
                | M::ModelNotFound { .. }
                | M::Timeout { .. }
                | M::Http { .. },
            ) => FailureKind::ModelUnavailable,
            Error::Model(M::InvalidSettings { .. }) => FailureKind::ModelUnavailable,
            Error::Model(_) => FailureKind::ModelOutput,
            Error::Tool(_) => FailureKind::Tool,
            Error::InvalidPlan { .. } => FailureKind::InvalidPlan,
            Error::StepLimit { .. } => FailureKind::StepLimit,
            Error::Stuck { .. } => FailureKind::Stuck,
            Error::Cancelled => FailureKind::Cancelled,
            Error::Unsupported(_)
            | Error::AgentGone { .. }
            | Error::AgentCrashed { .. }
            | Error::Serve { .. }
            | Error::NoNats { .. }
            | Error::Bus(_) => FailureKind::Internal,
        };
        AgentFailure::new(kind, e.to_string())
    }
}
