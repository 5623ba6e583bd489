//! `DevelopmentTask`, `TestResults`, `ExecutionPlan`, `ExecutionPhase`, `ResourceRequirements`.

use turbo_core::ValidationErrors;
use turbo_core::plan::{ExecutionPhase, ExecutionPlan, ResourceRequirements};
use turbo_core::task::{DevelopmentTask, TestResults};

use super::{
    ProtoEnum, duration_from_proto, duration_to_proto, id_from_proto, json_map_from_proto, json_map_to_proto,
    opt_timestamp, req_duration, req_timestamp, required, timestamp_to_proto, validated,
};
use crate::Error;
use crate::tasks::v1 as pb;

impl From<DevelopmentTask> for pb::DevelopmentTask {
    fn from(t: DevelopmentTask) -> Self {
        pb::DevelopmentTask {
            id: t.id.to_string(),
            project_id: t.project_id.to_string(),
            title: t.title,
            description: t.description,
            task_type: t.task_type,
            priority: t.priority.to_proto(),
            complexity: t.complexity.to_proto(),
            requirements: t.requirements,
            constraints_json: json_map_to_proto(&t.constraints),
            acceptance_criteria: t.acceptance_criteria,
            related_files: t.related_files,
            dependencies: t.dependencies,
            tags: t.tags,
            execution_plan: t.execution_plan.map(Into::into),
            estimated_duration: t.estimated_duration.map(duration_to_proto),
            assigned_agents: t.assigned_agents,
            status: t.status.to_proto(),
            progress_percentage: t.progress_percentage,
            current_phase: t.current_phase,
            generated_files: t.generated_files,
            test_results: t.test_results.map(Into::into),
            quality_metrics_json: json_map_to_proto(&t.quality_metrics),
            reviewer: t.reviewer,
            review_status: t.review_status,
            feedback: t.feedback,
            created_at: Some(timestamp_to_proto(t.created_at)),
            started_at: t.started_at.map(timestamp_to_proto),
            completed_at: t.completed_at.map(timestamp_to_proto),
            deadline: t.deadline.map(timestamp_to_proto),
        }
    }
}

/// The task's structure; `validate` (which also checks the nested plan) is left to the caller.
pub(super) fn task_from_proto(t: pb::DevelopmentTask) -> Result<DevelopmentTask, Error> {
    Ok(DevelopmentTask {
        id: id_from_proto("id", &t.id)?,
        project_id: id_from_proto("project_id", &t.project_id)?,
        title: t.title,
        description: t.description,
        task_type: t.task_type,
        priority: ProtoEnum::from_proto("priority", t.priority)?,
        complexity: ProtoEnum::from_proto("complexity", t.complexity)?,
        requirements: t.requirements,
        constraints: json_map_from_proto("constraints_json", &t.constraints_json)?,
        acceptance_criteria: t.acceptance_criteria,
        related_files: t.related_files,
        dependencies: t.dependencies,
        tags: t.tags,
        execution_plan: t.execution_plan.map(plan_from_proto).transpose().map_err(|e| e.under("execution_plan"))?,
        estimated_duration: t.estimated_duration.map(|d| duration_from_proto("estimated_duration", d)).transpose()?,
        assigned_agents: t.assigned_agents,
        status: ProtoEnum::from_proto("status", t.status)?,
        progress_percentage: t.progress_percentage,
        current_phase: t.current_phase,
        generated_files: t.generated_files,
        test_results: t.test_results.map(TestResults::from),
        quality_metrics: json_map_from_proto("quality_metrics_json", &t.quality_metrics_json)?,
        reviewer: t.reviewer,
        review_status: t.review_status,
        feedback: t.feedback,
        created_at: req_timestamp("created_at", t.created_at)?,
        started_at: opt_timestamp("started_at", t.started_at)?,
        completed_at: opt_timestamp("completed_at", t.completed_at)?,
        deadline: opt_timestamp("deadline", t.deadline)?,
    })
}

/// Includes the nested execution plan, which must be valid and belong to the task.
impl TryFrom<pb::DevelopmentTask> for DevelopmentTask {
    type Error = Error;

    fn try_from(t: pb::DevelopmentTask) -> Result<Self, Error> {
        validated(task_from_proto(t)?)
    }
}

/// A new task (fresh id, status CREATED, created now) from a request. Titles default to the
/// description's first line, `task_type` to "feature", priority and complexity to MEDIUM when
/// UNSPECIFIED. The result satisfies `DevelopmentTask::validate`; a broken constraint is
/// [`Error::Invalid`] naming the request's field.
impl TryFrom<pb::CreateTaskRequest> for DevelopmentTask {
    type Error = Error;

    fn try_from(r: pb::CreateTaskRequest) -> Result<Self, Error> {
        let project_id = id_from_proto("project_id", &r.project_id)?;
        let mut t = DevelopmentTask::from_request(project_id, &r.description);
        if let Some(title) = r.title {
            t.title = title;
        }
        if let Some(task_type) = r.task_type {
            t.task_type = task_type;
        }
        if r.priority != 0 {
            t.priority = ProtoEnum::from_proto("priority", r.priority)?;
        }
        if r.complexity != 0 {
            t.complexity = ProtoEnum::from_proto("complexity", r.complexity)?;
        }
        t.requirements = r.requirements;
        t.constraints = json_map_from_proto("constraints_json", &r.constraints_json)?;
        t.acceptance_criteria = r.acceptance_criteria;
        t.related_files = r.related_files;
        t.dependencies = r.dependencies;
        t.tags = r.tags;
        t.deadline = opt_timestamp("deadline", r.deadline)?;
        validated(t)
    }
}

impl From<TestResults> for pb::TestResults {
    fn from(r: TestResults) -> Self {
        pb::TestResults {
            command: r.command,
            success: r.success,
            exit_code: r.exit_code,
            rounds: r.rounds,
            output_tail: r.output_tail,
        }
    }
}

/// Test results have no constraints, so this never fails.
impl From<pb::TestResults> for TestResults {
    fn from(r: pb::TestResults) -> Self {
        TestResults {
            command: r.command,
            success: r.success,
            exit_code: r.exit_code,
            rounds: r.rounds,
            output_tail: r.output_tail,
        }
    }
}

impl From<ResourceRequirements> for pb::ResourceRequirements {
    fn from(r: ResourceRequirements) -> Self {
        pb::ResourceRequirements {
            cpu_cores: r.cpu_cores,
            memory_gb: r.memory_gb,
            storage_gb: r.storage_gb,
            network_bandwidth: r.network_bandwidth,
        }
    }
}

fn resources_from_proto(r: pb::ResourceRequirements) -> ResourceRequirements {
    ResourceRequirements {
        cpu_cores: r.cpu_cores,
        memory_gb: r.memory_gb,
        storage_gb: r.storage_gb,
        network_bandwidth: r.network_bandwidth,
    }
}

/// Checks what `ExecutionPlan::validate` checks of its resources: `cpu_cores >= 1`, sizes `>= 0`.
impl TryFrom<pb::ResourceRequirements> for ResourceRequirements {
    type Error = Error;

    fn try_from(r: pb::ResourceRequirements) -> Result<Self, Error> {
        let r = resources_from_proto(r);
        let mut errs = ValidationErrors::default();
        if r.cpu_cores < 1 {
            errs.push("cpu_cores", format!("must be at least 1, got {}", r.cpu_cores));
        }
        for (field, value) in [("memory_gb", r.memory_gb), ("storage_gb", r.storage_gb)] {
            // Written so that NaN fails too.
            if value.is_nan() || value < 0.0 {
                errs.push(field, format!("must be zero or more, got {value}"));
            }
        }
        errs.into_result()?;
        Ok(r)
    }
}

impl From<ExecutionPhase> for pb::ExecutionPhase {
    fn from(p: ExecutionPhase) -> Self {
        pb::ExecutionPhase {
            name: p.name,
            description: p.description,
            agent_type: p.agent_type,
            estimated_duration: Some(duration_to_proto(p.estimated_duration)),
            depends_on: p.depends_on,
            blocking_for: p.blocking_for,
            deliverables: p.deliverables,
            success_criteria: p.success_criteria,
            commands: p.commands,
            files_to_create: p.files_to_create,
            files_to_modify: p.files_to_modify,
        }
    }
}

fn phase_from_proto(p: pb::ExecutionPhase) -> Result<ExecutionPhase, Error> {
    Ok(ExecutionPhase {
        name: p.name,
        description: p.description,
        agent_type: p.agent_type,
        estimated_duration: req_duration("estimated_duration", p.estimated_duration)?,
        depends_on: p.depends_on,
        blocking_for: p.blocking_for,
        deliverables: p.deliverables,
        success_criteria: p.success_criteria,
        commands: p.commands,
        files_to_create: p.files_to_create,
        files_to_modify: p.files_to_modify,
    })
}

impl TryFrom<pb::ExecutionPhase> for ExecutionPhase {
    type Error = Error;

    fn try_from(p: pb::ExecutionPhase) -> Result<Self, Error> {
        validated(phase_from_proto(p)?)
    }
}

impl From<ExecutionPlan> for pb::ExecutionPlan {
    fn from(p: ExecutionPlan) -> Self {
        pb::ExecutionPlan {
            plan_id: p.plan_id.to_string(),
            task_id: p.task_id.to_string(),
            version: p.version,
            phases: p.phases.into_iter().map(Into::into).collect(),
            total_estimated_duration: Some(duration_to_proto(p.total_estimated_duration)),
            confidence_score: p.confidence_score,
            resource_requirements: Some(p.resource_requirements.into()),
            risk_factors: p.risk_factors,
            mitigation_strategies: p.mitigation_strategies,
            required_knowledge: p.required_knowledge,
            context_sources: p.context_sources,
            generated_by: p.generated_by,
            generated_at: Some(timestamp_to_proto(p.generated_at)),
            last_updated: Some(timestamp_to_proto(p.last_updated)),
        }
    }
}

/// The plan's structure; `validate` is left to the caller.
pub(super) fn plan_from_proto(p: pb::ExecutionPlan) -> Result<ExecutionPlan, Error> {
    let phases = p
        .phases
        .into_iter()
        .enumerate()
        .map(|(i, phase)| phase_from_proto(phase).map_err(|e| e.under(&format!("phases[{i}]"))))
        .collect::<Result<_, _>>()?;
    Ok(ExecutionPlan {
        plan_id: id_from_proto("plan_id", &p.plan_id)?,
        task_id: id_from_proto("task_id", &p.task_id)?,
        version: p.version,
        phases,
        total_estimated_duration: req_duration("total_estimated_duration", p.total_estimated_duration)?,
        confidence_score: p.confidence_score,
        resource_requirements: resources_from_proto(required("resource_requirements", p.resource_requirements)?),
        risk_factors: p.risk_factors,
        mitigation_strategies: p.mitigation_strategies,
        required_knowledge: p.required_knowledge,
        context_sources: p.context_sources,
        generated_by: p.generated_by,
        generated_at: req_timestamp("generated_at", p.generated_at)?,
        last_updated: req_timestamp("last_updated", p.last_updated)?,
    })
}

/// Checks phases, dependencies (known, acyclic), confidence, version and resources.
impl TryFrom<pb::ExecutionPlan> for ExecutionPlan {
    type Error = Error;

    fn try_from(p: pb::ExecutionPlan) -> Result<Self, Error> {
        validated(plan_from_proto(p)?)
    }
}

#[cfg(test)]
mod tests {
    use turbo_core::task::{Complexity, TaskPriority, TaskStatus};

    use super::*;
    use crate::common::v1 as common;

    fn request() -> pb::CreateTaskRequest {
        pb::CreateTaskRequest {
            project_id: "67e55044-10b1-426f-9247-bb680e5fe0c8".into(),
            description: "Add user authentication with JWT tokens\nand bcrypt hashing".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_requests_fill_in_the_defaults() {
        let t = DevelopmentTask::try_from(request()).unwrap();
        assert_eq!(t.project_id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(t.title, "Add user authentication with JWT tokens");
        assert_eq!(
            (t.task_type.as_str(), t.priority, t.complexity),
            ("feature", TaskPriority::Medium, Complexity::Medium)
        );
        assert_eq!(t.status, TaskStatus::Created);

        let mut r = request();
        r.title = Some("JWT auth".into());
        r.priority = common::TaskPriority::High as i32;
        r.constraints_json = r#"{"testing_required": true}"#.into();
        r.requirements = vec!["login endpoint".into()];
        let t = DevelopmentTask::try_from(r).unwrap();
        assert_eq!((t.title.as_str(), t.priority), ("JWT auth", TaskPriority::High));
        assert_eq!(t.constraints["testing_required"], serde_json::json!(true));
        assert_eq!(t.requirements, ["login endpoint"]);
    }

    #[test]
    fn bad_create_requests_name_the_field() {
        let cases: Vec<(pb::CreateTaskRequest, &str)> = vec![
            (pb::CreateTaskRequest { project_id: String::new(), ..request() }, "project_id"),
            (pb::CreateTaskRequest { project_id: "p-1".into(), ..request() }, "project_id"),
            (pb::CreateTaskRequest { description: "fix it".into(), ..request() }, "description"),
            (pb::CreateTaskRequest { title: Some(String::new()), ..request() }, "title"),
            (pb::CreateTaskRequest { priority: 99, ..request() }, "priority"),
            (pb::CreateTaskRequest { constraints_json: "[1]".into(), ..request() }, "constraints_json"),
        ];
        for (r, field) in cases {
            let e = DevelopmentTask::try_from(r).unwrap_err();
            assert_eq!(e.field_errors().0[0].field, field, "{e}");
        }
    }
}
