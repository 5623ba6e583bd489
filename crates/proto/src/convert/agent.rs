//! `AgentSpecialization` and the orchestrator <-> agent protocol: `PlanRequest`, `PlanOutcome`,
//! `PhaseAssignment`, `PhaseOutcome`, `ReviewReport`, `Finding`, `CheckResult`.

use turbo_core::agent::AgentSpecialization;
use turbo_core::plan::{ExecutionPhase, ExecutionPlan};
use turbo_core::protocol::{
    CheckResult, Finding, PhaseAssignment, PhaseOutcome, PlanOutcome, PlanRequest, ReviewReport,
};
use turbo_core::task::{DevelopmentTask, TestResults};

use super::enums::{enums_from_proto, enums_to_proto};
use super::{ProtoEnum, id_from_proto, required, validated};
use crate::Error;
use crate::agents::v1 as pb;

impl From<AgentSpecialization> for pb::AgentSpecialization {
    fn from(a: AgentSpecialization) -> Self {
        pb::AgentSpecialization {
            agent_type: a.agent_type,
            name: a.name,
            description: a.description,
            capabilities: enums_to_proto(&a.capabilities),
            supported_languages: enums_to_proto(&a.supported_languages),
            supported_frameworks: enums_to_proto(&a.supported_frameworks),
            average_response_time: a.average_response_time,
            success_rate: a.success_rate,
            quality_score: a.quality_score,
            cpu_cores: a.cpu_cores,
            memory_mb: a.memory_mb,
            max_concurrent_tasks: a.max_concurrent_tasks,
        }
    }
}

impl TryFrom<pb::AgentSpecialization> for AgentSpecialization {
    type Error = Error;

    fn try_from(a: pb::AgentSpecialization) -> Result<Self, Error> {
        validated(AgentSpecialization {
            agent_type: a.agent_type,
            name: a.name,
            description: a.description,
            capabilities: enums_from_proto("capabilities", &a.capabilities)?,
            supported_languages: enums_from_proto("supported_languages", &a.supported_languages)?,
            supported_frameworks: enums_from_proto("supported_frameworks", &a.supported_frameworks)?,
            average_response_time: a.average_response_time,
            success_rate: a.success_rate,
            quality_score: a.quality_score,
            cpu_cores: a.cpu_cores,
            memory_mb: a.memory_mb,
            max_concurrent_tasks: a.max_concurrent_tasks,
        })
    }
}

impl From<PlanRequest> for pb::PlanRequest {
    fn from(r: PlanRequest) -> Self {
        pb::PlanRequest { task: Some(r.task.into()), workspace: r.workspace }
    }
}

/// The task must be valid.
impl TryFrom<pb::PlanRequest> for PlanRequest {
    type Error = Error;

    fn try_from(r: pb::PlanRequest) -> Result<Self, Error> {
        let task = DevelopmentTask::try_from(required("task", r.task)?).map_err(|e| e.under("task"))?;
        Ok(PlanRequest { task, workspace: r.workspace })
    }
}

impl From<PlanOutcome> for pb::PlanOutcome {
    fn from(o: PlanOutcome) -> Self {
        pb::PlanOutcome { plan: Some(o.plan.into()), usage: Some(o.usage.into()), attempts: o.attempts }
    }
}

/// The plan must be valid; absent usage reads as zero.
impl TryFrom<pb::PlanOutcome> for PlanOutcome {
    type Error = Error;

    fn try_from(o: pb::PlanOutcome) -> Result<Self, Error> {
        let plan = ExecutionPlan::try_from(required("plan", o.plan)?).map_err(|e| e.under("plan"))?;
        Ok(PlanOutcome { plan, usage: o.usage.map(Into::into).unwrap_or_default(), attempts: o.attempts })
    }
}

impl From<PhaseAssignment> for pb::PhaseAssignment {
    fn from(a: PhaseAssignment) -> Self {
        pb::PhaseAssignment {
            task_id: a.task_id.to_string(),
            plan_id: a.plan_id.to_string(),
            task_title: a.task_title,
            task_description: a.task_description,
            phase: Some(a.phase.into()),
            plan_outline: a.plan_outline,
            attempt: a.attempt,
            workspace: a.workspace,
            feedback: a.feedback,
            max_steps: a.max_steps,
            project_id: a.project_id.map(|p| p.to_string()),
        }
    }
}

/// The phase must be valid.
impl TryFrom<pb::PhaseAssignment> for PhaseAssignment {
    type Error = Error;

    fn try_from(a: pb::PhaseAssignment) -> Result<Self, Error> {
        Ok(PhaseAssignment {
            task_id: id_from_proto("task_id", &a.task_id)?,
            plan_id: id_from_proto("plan_id", &a.plan_id)?,
            project_id: a.project_id.as_deref().map(|p| id_from_proto("project_id", p)).transpose()?,
            task_title: a.task_title,
            task_description: a.task_description,
            phase: ExecutionPhase::try_from(required("phase", a.phase)?).map_err(|e| e.under("phase"))?,
            plan_outline: a.plan_outline,
            attempt: a.attempt,
            workspace: a.workspace,
            feedback: a.feedback,
            max_steps: a.max_steps,
        })
    }
}

impl From<PhaseOutcome> for pb::PhaseOutcome {
    fn from(o: PhaseOutcome) -> Self {
        pb::PhaseOutcome {
            success: o.success,
            summary: o.summary,
            files_changed: o.files_changed,
            usage: Some(o.usage.into()),
            steps: o.steps,
            test: o.test.map(Into::into),
            review: o.review.map(Into::into),
        }
    }
}

/// Absent usage reads as zero.
impl TryFrom<pb::PhaseOutcome> for PhaseOutcome {
    type Error = Error;

    fn try_from(o: pb::PhaseOutcome) -> Result<Self, Error> {
        Ok(PhaseOutcome {
            success: o.success,
            summary: o.summary,
            files_changed: o.files_changed,
            usage: o.usage.map(Into::into).unwrap_or_default(),
            steps: o.steps,
            test: o.test.map(TestResults::from),
            review: o.review.map(ReviewReport::try_from).transpose().map_err(|e| e.under("review"))?,
        })
    }
}

impl From<Finding> for pb::Finding {
    fn from(f: Finding) -> Self {
        pb::Finding { severity: f.severity.to_proto(), path: f.path, line: f.line, message: f.message }
    }
}

impl TryFrom<pb::Finding> for Finding {
    type Error = Error;

    fn try_from(f: pb::Finding) -> Result<Self, Error> {
        Ok(Finding {
            severity: ProtoEnum::from_proto("severity", f.severity)?,
            path: f.path,
            line: f.line,
            message: f.message,
        })
    }
}

impl From<CheckResult> for pb::CheckResult {
    fn from(c: CheckResult) -> Self {
        pb::CheckResult { name: c.name, command: c.command, passed: c.passed, output_tail: c.output_tail }
    }
}

/// Check results have no constraints, so this never fails.
impl From<pb::CheckResult> for CheckResult {
    fn from(c: pb::CheckResult) -> Self {
        CheckResult { name: c.name, command: c.command, passed: c.passed, output_tail: c.output_tail }
    }
}

impl From<ReviewReport> for pb::ReviewReport {
    fn from(r: ReviewReport) -> Self {
        pb::ReviewReport {
            verdict: r.verdict.to_proto(),
            summary: r.summary,
            findings: r.findings.into_iter().map(Into::into).collect(),
            checks: r.checks.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::ReviewReport> for ReviewReport {
    type Error = Error;

    fn try_from(r: pb::ReviewReport) -> Result<Self, Error> {
        Ok(ReviewReport {
            verdict: ProtoEnum::from_proto("verdict", r.verdict)?,
            summary: r.summary,
            findings: r
                .findings
                .into_iter()
                .enumerate()
                .map(|(i, f)| Finding::try_from(f).map_err(|e| e.under(&format!("findings[{i}]"))))
                .collect::<Result<_, _>>()?,
            checks: r.checks.into_iter().map(Into::into).collect(),
        })
    }
}
