//! Development tasks: the spec's DevelopmentTask, its lifecycle and results.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::enums::string_enum;
use crate::error::{Error, ValidationErrors};
use crate::ids::{ProjectId, TaskId};
use crate::plan::ExecutionPlan;
use crate::validate::{Validate, in_range, len_between, not_blank};

string_enum!(
    /// Task execution lifecycle states.
    TaskStatus: "task status" {
        Created => "created",
        Planned => "planned",
        InProgress => "in_progress",
        Blocked => "blocked",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }

    /// The lifecycle: created -> planned -> in_progress (<-> blocked) -> completed | failed | cancelled.
    /// Any live state may fail or be cancelled; terminal states never change.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            (Created, Planned) => true,
            (Planned, InProgress) => true,
            (InProgress, Blocked) | (Blocked, InProgress) => true,
            (InProgress, Completed) => true,
            (from, Failed | Cancelled) => !from.is_terminal(),
            _ => false,
        }
    }

    pub fn transition(self, next: TaskStatus) -> Result<TaskStatus, Error> {
        if self.can_become(next) { Ok(next) } else { Err(Error::InvalidTransition { from: self, to: next }) }
    }
}

string_enum!(
    /// Task priority levels.
    TaskPriority: "task priority" {
        Low => "low",
        Medium => "medium",
        High => "high",
        Urgent => "urgent",
    }
);

string_enum!(
    /// Estimated complexity of a task.
    Complexity: "complexity" {
        Low => "low",
        Medium => "medium",
        High => "high",
    }
);

/// Outcome of the project's own test command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResults {
    /// The command that ran, e.g. `pytest -q`.
    pub command: String,
    pub success: bool,
    pub exit_code: Option<i32>,
    /// Test-fix rounds it took (1 when the first run passed).
    pub rounds: u32,
    /// The last lines of output, enough to see what failed.
    pub output_tail: String,
}

/// One unit of development work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DevelopmentTask {
    pub id: TaskId,
    pub project_id: ProjectId,
    /// 1..=200 characters.
    pub title: String,
    /// At least 10 characters.
    pub description: String,
    pub task_type: String,
    pub priority: TaskPriority,
    pub complexity: Complexity,
    #[serde(default)]
    pub requirements: Vec<String>,
    #[serde(default)]
    pub constraints: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub acceptance_criteria: Vec<String>,
    #[serde(default)]
    pub related_files: Vec<String>,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub execution_plan: Option<ExecutionPlan>,
    #[serde(default, with = "crate::serde_duration::option")]
    pub estimated_duration: Option<Duration>,
    #[serde(default)]
    pub assigned_agents: Vec<String>,
    pub status: TaskStatus,
    /// 0..=100.
    pub progress_percentage: f64,
    pub current_phase: Option<String>,
    #[serde(default)]
    pub generated_files: Vec<String>,
    pub test_results: Option<TestResults>,
    #[serde(default)]
    pub quality_metrics: serde_json::Map<String, serde_json::Value>,
    pub reviewer: Option<String>,
    pub review_status: Option<String>,
    #[serde(default)]
    pub feedback: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
}

impl DevelopmentTask {
    /// A new task from a free-form request; the title is the request's first line, shortened.
    pub fn from_request(project_id: ProjectId, request: &str) -> Self {
        let request = request.trim();
        let first_line = request.lines().next().unwrap_or_default();
        let title: String = if first_line.chars().count() > 200 {
            first_line.chars().take(197).chain("...".chars()).collect()
        } else {
            first_line.to_string()
        };
        Self {
            id: TaskId::new(),
            project_id,
            title,
            description: request.to_string(),
            task_type: "feature".to_string(),
            priority: TaskPriority::Medium,
            complexity: Complexity::Medium,
            requirements: Vec::new(),
            constraints: serde_json::Map::new(),
            acceptance_criteria: Vec::new(),
            related_files: Vec::new(),
            dependencies: Vec::new(),
            tags: Vec::new(),
            execution_plan: None,
            estimated_duration: None,
            assigned_agents: Vec::new(),
            status: TaskStatus::Created,
            progress_percentage: 0.0,
            current_phase: None,
            generated_files: Vec::new(),
            test_results: None,
            quality_metrics: serde_json::Map::new(),
            reviewer: None,
            review_status: None,
            feedback: Vec::new(),
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            deadline: None,
        }
    }
}

impl Validate for DevelopmentTask {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        len_between(&mut errs, "title", &self.title, 1, 200);
        let n = self.description.trim().chars().count();
        if n < 10 {
            errs.push(
                "description",
                format!("must be at least 10 characters, got {n}: describe what to build, e.g. \"add a /health endpoint that returns 200\""),
            );
        }
        not_blank(&mut errs, "task_type", &self.task_type);
        in_range(&mut errs, "progress_percentage", self.progress_percentage, 0.0, 100.0);
        if let Some(plan) = &self.execution_plan {
            if let Err(e) = plan.validate() {
                errs.nest("execution_plan", e);
            }
            if plan.task_id != self.id {
                errs.push("execution_plan.task_id", "must be the id of the task it plans");
            }
        }
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn lifecycle_allows_only_forward_moves() {
        assert!(Created.can_become(Planned));
        assert!(Planned.can_become(InProgress));
        assert!(InProgress.can_become(Blocked));
        assert!(Blocked.can_become(InProgress));
        assert!(InProgress.can_become(Completed));
        assert!(Planned.can_become(Cancelled));
        assert!(!Created.can_become(Completed));
        assert!(!Planned.can_become(Completed));
        for terminal in [Completed, Failed, Cancelled] {
            for next in TaskStatus::ALL {
                assert!(!terminal.can_become(*next), "{terminal} -> {next}");
            }
        }
        assert!(matches!(Completed.transition(InProgress), Err(Error::InvalidTransition { .. })));
    }

    #[test]
    fn short_descriptions_are_rejected_with_a_hint() {
        let task = DevelopmentTask::from_request(ProjectId::new(), "fix it");
        let err = task.validate().unwrap_err();
        assert_eq!(err.0[0].field, "description");
        assert!(err.0[0].problem.contains("at least 10 characters"));
    }

    #[test]
    fn long_first_lines_become_a_200_char_title() {
        let task = DevelopmentTask::from_request(ProjectId::new(), &"x".repeat(500));
        assert_eq!(task.title.chars().count(), 200);
        assert_eq!(task.validate(), Ok(()));
    }
}
