//! Messages between the orchestrator and the agents. They are plain serde types so the same
//! values travel through a local actor mailbox or, in the cluster, over NATS.

use serde::{Deserialize, Serialize};

use crate::enums::string_enum;
use crate::ids::{PlanId, ProjectId, TaskId};
use crate::plan::{ExecutionPhase, ExecutionPlan};
use crate::task::{DevelopmentTask, TestResults};
use crate::tool::TokenUsage;

/// Ask the planner for a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub task: DevelopmentTask,
    /// Absolute path of the task's workspace on the tool-runner.
    pub workspace: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanOutcome {
    pub plan: ExecutionPlan,
    pub usage: TokenUsage,
    /// Model calls it took, including re-asks after invalid output.
    pub attempts: u32,
}

/// Ask an agent to carry out one phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseAssignment {
    pub task_id: TaskId,
    pub plan_id: PlanId,
    /// The task's project, whose knowledge the agent retrieves context from. None in messages
    /// from before it was added: such a phase runs without retrieved context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectId>,
    pub task_title: String,
    pub task_description: String,
    pub phase: ExecutionPhase,
    /// The other phases, one line each, so the agent knows what is not its job.
    pub plan_outline: Vec<String>,
    /// 1 for the first run of a phase; a redelivered or repeated phase gets the next number.
    pub attempt: u32,
    pub workspace: String,
    /// Test failures or review findings the agent must address, when re-run for a fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
    /// Upper bound on tool-loop steps.
    pub max_steps: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseOutcome {
    pub success: bool,
    pub summary: String,
    #[serde(default)]
    pub files_changed: Vec<String>,
    pub usage: TokenUsage,
    /// Tool-loop steps taken.
    pub steps: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestResults>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewReport>,
}

string_enum!(
    /// The reviewer's decision.
    ReviewVerdict: "review verdict" {
        Approve => "approve",
        ChangesRequested => "changes_requested",
    }
);

string_enum!(
    Severity: "severity" {
        Info => "info",
        Warning => "warning",
        Error => "error",
    }
);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub line: Option<u32>,
    pub message: String,
}

/// A deterministic check the project already has (a linter, a type checker) and its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub command: String,
    pub passed: bool,
    pub output_tail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReviewReport {
    pub verdict: ReviewVerdict,
    pub summary: String,
    pub findings: Vec<Finding>,
    pub checks: Vec<CheckResult>,
}

string_enum!(
    /// Why an agent could not finish; decides the task's outcome and the CLI's exit code.
    FailureKind: "failure kind" {
        /// The model server cannot be reached, rejects the key, or lacks the model.
        ModelUnavailable => "model_unavailable",
        /// The model answered, but not in a usable shape.
        ModelOutput => "model_output",
        /// The planner could not produce a valid plan within its attempts.
        InvalidPlan => "invalid_plan",
        /// The tool loop used all its steps.
        StepLimit => "step_limit",
        /// The model kept repeating a call that had already failed.
        Stuck => "stuck",
        /// A tool failed in a way the model cannot fix (missing program, i/o error).
        Tool => "tool",
        /// Tests still failed after the allowed fix rounds.
        TestsFailed => "tests_failed",
        /// The reviewer still requested changes after the allowed fix rounds.
        ChangesRequested => "changes_requested",
        /// The store could not record the task.
        Storage => "storage",
        Cancelled => "cancelled",
        TimedOut => "timed_out",
        /// A bug or a crashed actor.
        Internal => "internal",
    }
);

/// An agent's error, as it crosses a mailbox or the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct AgentFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl AgentFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn assignment() -> PhaseAssignment {
        PhaseAssignment {
            task_id: TaskId::new(),
            plan_id: PlanId::new(),
            project_id: Some(ProjectId::new()),
            task_title: "t".into(),
            task_description: "d".into(),
            phase: ExecutionPhase::new("implement", "d", "coder"),
            plan_outline: vec![],
            attempt: 1,
            workspace: "/w".into(),
            feedback: None,
            max_steps: 5,
        }
    }

    #[test]
    fn an_assignment_from_before_project_ids_still_decodes() {
        let a = assignment();
        let mut old = serde_json::to_value(&a).unwrap();
        old.as_object_mut().unwrap().remove("project_id");
        let decoded: PhaseAssignment = serde_json::from_value(old).unwrap();
        assert_eq!(decoded, PhaseAssignment { project_id: None, ..a.clone() });

        let round: PhaseAssignment = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
        assert_eq!(round, a);
        assert_eq!(serde_json::to_value(&a).unwrap()["project_id"], json!(a.project_id.unwrap().to_string()));
    }
}
