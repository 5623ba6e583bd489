//! Execution plans: the spec's ExecutionPlan and ExecutionPhase, with dependency checks and ordering.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::agent::AgentRole;
use crate::error::ValidationErrors;
use crate::ids::{PlanId, TaskId};
use crate::validate::{Validate, at_least, in_range, non_negative, not_blank};

/// Resources a plan expects to need.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequirements {
    /// >= 1.
    pub cpu_cores: u32,
    /// >= 0.
    pub memory_gb: f64,
    /// >= 0.
    pub storage_gb: f64,
    /// Free text such as "10 Mbps"; empty when no network is needed.
    #[serde(default)]
    pub network_bandwidth: String,
}

impl Default for ResourceRequirements {
    fn default() -> Self {
        Self { cpu_cores: 1, memory_gb: 1.0, storage_gb: 1.0, network_bandwidth: String::new() }
    }
}

/// One phase of a plan, carried out by one agent role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPhase {
    /// Unique within the plan; dependencies refer to it.
    pub name: String,
    pub description: String,
    /// The agent that runs it: `coder`, `tester`, `reviewer`, `planner` (aliases such as `CoderAgent` accepted).
    pub agent_type: String,
    #[serde(with = "crate::serde_duration")]
    pub estimated_duration: Duration,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub blocking_for: Vec<String>,
    #[serde(default)]
    pub deliverables: Vec<String>,
    #[serde(default)]
    pub success_criteria: Vec<String>,
    #[serde(default)]
    pub commands: Vec<String>,
    #[serde(default)]
    pub files_to_create: Vec<String>,
    #[serde(default)]
    pub files_to_modify: Vec<String>,
}

impl ExecutionPhase {
    /// A phase with its required fields, ten minutes estimated, and no dependencies,
    /// deliverables, commands or files yet.
    pub fn new(name: impl Into<String>, description: impl Into<String>, agent_type: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            agent_type: agent_type.into(),
            estimated_duration: Duration::from_secs(600),
            depends_on: Vec::new(),
            blocking_for: Vec::new(),
            deliverables: Vec::new(),
            success_criteria: Vec::new(),
            commands: Vec::new(),
            files_to_create: Vec::new(),
            files_to_modify: Vec::new(),
        }
    }

    /// The role that runs this phase, if its agent_type names one.
    pub fn role(&self) -> Option<AgentRole> {
        AgentRole::from_agent_type(&self.agent_type)
    }
}

/// An agent-generated plan for a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    pub plan_id: PlanId,
    pub task_id: TaskId,
    /// >= 1; a re-plan increments it.
    pub version: u32,
    /// At least one.
    pub phases: Vec<ExecutionPhase>,
    #[serde(with = "crate::serde_duration")]
    pub total_estimated_duration: Duration,
    /// 0..=1.
    pub confidence_score: f64,
    pub resource_requirements: ResourceRequirements,
    #[serde(default)]
    pub risk_factors: Vec<String>,
    #[serde(default)]
    pub mitigation_strategies: Vec<String>,
    #[serde(default)]
    pub required_knowledge: Vec<String>,
    #[serde(default)]
    pub context_sources: Vec<String>,
    pub generated_by: String,
    pub generated_at: DateTime<Utc>,
    pub last_updated: DateTime<Utc>,
}

impl ExecutionPlan {
    /// Phases in an order that respects `depends_on` (and `blocking_for`), ties kept in plan order.
    /// Returns None when the dependencies are broken; `validate` says how.
    pub fn execution_order(&self) -> Option<Vec<&ExecutionPhase>> {
        let index: BTreeMap<&str, usize> = self.phases.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
        let edges = self.edges(&index)?;
        let mut indegree = vec![0usize; self.phases.len()];
        for (_, to) in &edges {
            indegree[*to] += 1;
        }
        let mut done = vec![false; self.phases.len()];
        let mut order = Vec::with_capacity(self.phases.len());
        while order.len() < self.phases.len() {
            let next = (0..self.phases.len()).find(|&i| !done[i] && indegree[i] == 0)?;
            done[next] = true;
            order.push(&self.phases[next]);
            for (from, to) in &edges {
                if *from == next {
                    indegree[*to] -= 1;
                }
            }
        }
        Some(order)
    }

    /// Edges `before -> after` from both `depends_on` and `blocking_for`; None on an unknown name.
    fn edges(&self, index: &BTreeMap<&str, usize>) -> Option<BTreeSet<(usize, usize)>> {
        let mut edges = BTreeSet::new();
        for (i, p) in self.phases.iter().enumerate() {
            for dep in &p.depends_on {
                edges.insert((*index.get(dep.as_str())?, i));
            }
            for blocked in &p.blocking_for {
                edges.insert((i, *index.get(blocked.as_str())?));
            }
        }
        Some(edges)
    }
}

impl Validate for ExecutionPhase {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        not_blank(&mut errs, "name", &self.name);
        not_blank(&mut errs, "description", &self.description);
        if self.role().is_none() {
            errs.push(
                "agent_type",
                format!("'{}' is not an agent: use one of planner, coder, tester, reviewer", self.agent_type),
            );
        }
        errs.into_result()
    }
}

impl Validate for ExecutionPlan {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        at_least(&mut errs, "version", self.version, 1);
        if self.phases.is_empty() {
            errs.push("phases", "must have at least one phase");
        }
        in_range(&mut errs, "confidence_score", self.confidence_score, 0.0, 1.0);
        not_blank(&mut errs, "generated_by", &self.generated_by);
        at_least(&mut errs, "resource_requirements.cpu_cores", self.resource_requirements.cpu_cores, 1);
        non_negative(&mut errs, "resource_requirements.memory_gb", self.resource_requirements.memory_gb);
        non_negative(&mut errs, "resource_requirements.storage_gb", self.resource_requirements.storage_gb);
        let mut names = BTreeSet::new();
        for (i, phase) in self.phases.iter().enumerate() {
            if let Err(e) = phase.validate() {
                errs.nest(&format!("phases[{i}]"), e);
            }
            if !names.insert(phase.name.as_str()) {
                errs.push(format!("phases[{i}].name"), format!("'{}' is used by more than one phase", phase.name));
            }
        }
        for (i, phase) in self.phases.iter().enumerate() {
            for (field, refs) in [("depends_on", &phase.depends_on), ("blocking_for", &phase.blocking_for)] {
                for r in refs {
                    if !names.contains(r.as_str()) {
                        errs.push(format!("phases[{i}].{field}"), format!("'{r}' is not a phase of this plan"));
                    } else if r == &phase.name {
                        errs.push(format!("phases[{i}].{field}"), "a phase cannot depend on itself");
                    }
                }
            }
        }
        if errs.is_empty() && self.execution_order().is_none() {
            errs.push(
                "phases",
                "dependencies form a cycle: every phase must be reachable from one without dependencies",
            );
        }
        errs.into_result()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn phase(name: &str, agent: &str, deps: &[&str]) -> ExecutionPhase {
        ExecutionPhase {
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            ..ExecutionPhase::new(name, format!("do {name}"), agent)
        }
    }

    pub(crate) fn plan(phases: Vec<ExecutionPhase>) -> ExecutionPlan {
        ExecutionPlan {
            plan_id: PlanId::new(),
            task_id: TaskId::new(),
            version: 1,
            phases,
            total_estimated_duration: Duration::from_secs(1800),
            confidence_score: 0.8,
            resource_requirements: ResourceRequirements::default(),
            risk_factors: Vec::new(),
            mitigation_strategies: Vec::new(),
            required_knowledge: Vec::new(),
            context_sources: Vec::new(),
            generated_by: "planner".into(),
            generated_at: Utc::now(),
            last_updated: Utc::now(),
        }
    }

    #[test]
    fn orders_phases_by_dependencies() {
        let p = plan(vec![
            phase("review", "reviewer", &["test"]),
            phase("code", "coder", &[]),
            phase("test", "TestAgent", &["code"]),
        ]);
        assert_eq!(p.validate(), Ok(()));
        let order: Vec<_> = p.execution_order().unwrap().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, ["code", "test", "review"]);
    }

    #[test]
    fn blocking_for_orders_like_depends_on() {
        let mut code = phase("code", "coder", &[]);
        let test = phase("test", "tester", &[]);
        code.blocking_for = vec!["test".into()];
        let p = plan(vec![test, code]);
        let order: Vec<_> = p.execution_order().unwrap().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, ["code", "test"]);
    }

    #[test]
    fn rejects_cycles_unknown_dependencies_and_duplicates() {
        let cyclic = plan(vec![phase("a", "coder", &["b"]), phase("b", "coder", &["a"])]);
        assert!(cyclic.validate().unwrap_err().to_string().contains("cycle"));

        let unknown = plan(vec![phase("a", "coder", &["nope"])]);
        assert!(unknown.validate().unwrap_err().to_string().contains("'nope' is not a phase"));

        let dup = plan(vec![phase("a", "coder", &[]), phase("a", "tester", &[])]);
        assert!(dup.validate().unwrap_err().to_string().contains("more than one phase"));

        let empty = plan(vec![]);
        assert!(empty.validate().unwrap_err().to_string().contains("at least one phase"));

        let bad_agent = plan(vec![phase("a", "wizard", &[])]);
        assert!(bad_agent.validate().unwrap_err().to_string().contains("'wizard' is not an agent"));
    }
}
