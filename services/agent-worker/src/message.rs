//! The one mailbox type of every agent actor. The payloads are the transport-neutral
//! `turbo_core::protocol` types; the reply port and cancellation token are local plumbing that
//! a remote transport replaces with a reply subject and a cancel subject. (ractor carries the
//! sender's tracing span with each message, so the work runs in the caller's trace.)

use ractor::RpcReplyPort;
use tokio_util::sync::CancellationToken;
use turbo_core::protocol::{AgentFailure, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest};

pub enum AgentMsg {
    /// Only the planner answers this; other roles reply with an error.
    Plan {
        request: Box<PlanRequest>,
        cancel: CancellationToken,
        reply: RpcReplyPort<Result<PlanOutcome, AgentFailure>>,
    },
    RunPhase {
        assignment: Box<PhaseAssignment>,
        cancel: CancellationToken,
        reply: RpcReplyPort<Result<PhaseOutcome, AgentFailure>>,
    },
}
