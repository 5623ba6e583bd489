//! Agents: roles, the spec's AgentSpecialization and AgentCapability.

use serde::{Deserialize, Serialize};

use crate::enums::string_enum;
use crate::error::ValidationErrors;
use crate::project::{Framework, Language};
use crate::validate::{Validate, at_least, not_blank, opt_in_range, opt_non_negative};

string_enum!(
    /// The four agents; each is an actor, hosted in-process or by an agent-worker service.
    AgentRole: "agent role" {
        Planner => "planner",
        Coder => "coder",
        Tester => "tester",
        Reviewer => "reviewer",
    }
);

impl AgentRole {
    /// The agent's name in the spec's plans: `ArchitectAgent`, `CoderAgent`, `TestAgent`,
    /// `ReviewAgent`.
    pub fn spec_name(self) -> &'static str {
        match self {
            AgentRole::Planner => "ArchitectAgent",
            AgentRole::Coder => "CoderAgent",
            AgentRole::Tester => "TestAgent",
            AgentRole::Reviewer => "ReviewAgent",
        }
    }

    /// Maps a plan's free-form agent_type ("CoderAgent", "TestAgent", "review") to a role.
    pub fn from_agent_type(agent_type: &str) -> Option<AgentRole> {
        let t = agent_type.trim().to_ascii_lowercase();
        let t = t.strip_suffix("agent").unwrap_or(&t).trim_end_matches(['_', '-', ' ']);
        match t {
            "planner" | "plan" | "planning" | "architect" => Some(AgentRole::Planner),
            "coder" | "code" | "coding" | "developer" | "implementation" => Some(AgentRole::Coder),
            "tester" | "test" | "testing" | "qa" => Some(AgentRole::Tester),
            "reviewer" | "review" | "code_review" => Some(AgentRole::Reviewer),
            _ => None,
        }
    }
}

string_enum!(
    /// Available agent capabilities.
    AgentCapability: "agent capability" {
        CodeGeneration => "code_generation",
        CodeReview => "code_review",
        TestGeneration => "test_generation",
        ArchitectureDesign => "architecture_design",
        DatabaseDesign => "database_design",
        DevopsAutomation => "devops_automation",
        SecurityAnalysis => "security_analysis",
        PerformanceOptimization => "performance_optimization",
        DocumentationGeneration => "documentation_generation",
        ProjectPlanning => "project_planning",
    }
);

/// What an agent type can do and what it needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSpecialization {
    pub agent_type: String,
    pub name: String,
    pub description: String,
    pub capabilities: Vec<AgentCapability>,
    pub supported_languages: Vec<Language>,
    #[serde(default)]
    pub supported_frameworks: Vec<Framework>,
    /// Seconds, >= 0.
    pub average_response_time: Option<f64>,
    /// 0..=1.
    pub success_rate: Option<f64>,
    /// 0..=1.
    pub quality_score: Option<f64>,
    /// >= 1.
    pub cpu_cores: u32,
    /// >= 128.
    pub memory_mb: u32,
    /// >= 1.
    pub max_concurrent_tasks: u32,
}

impl Validate for AgentSpecialization {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        not_blank(&mut errs, "agent_type", &self.agent_type);
        not_blank(&mut errs, "name", &self.name);
        opt_non_negative(&mut errs, "average_response_time", self.average_response_time);
        opt_in_range(&mut errs, "success_rate", self.success_rate, 0.0, 1.0);
        opt_in_range(&mut errs, "quality_score", self.quality_score, 0.0, 1.0);
        at_least(&mut errs, "cpu_cores", self.cpu_cores, 1);
        at_least(&mut errs, "memory_mb", self.memory_mb, 128);
        at_least(&mut errs, "max_concurrent_tasks", self.max_concurrent_tasks, 1);
        errs.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_agent_type_aliases_to_roles() {
        assert_eq!(AgentRole::from_agent_type("CoderAgent"), Some(AgentRole::Coder));
        for role in [AgentRole::Planner, AgentRole::Coder, AgentRole::Tester, AgentRole::Reviewer] {
            assert_eq!(AgentRole::from_agent_type(role.spec_name()), Some(role), "the spec's names read back");
        }
        assert_eq!(AgentRole::from_agent_type("TestAgent"), Some(AgentRole::Tester));
        assert_eq!(AgentRole::from_agent_type("ReviewAgent"), Some(AgentRole::Reviewer));
        assert_eq!(AgentRole::from_agent_type("ArchitectAgent"), Some(AgentRole::Planner));
        assert_eq!(AgentRole::from_agent_type("reviewer"), Some(AgentRole::Reviewer));
        assert_eq!(AgentRole::from_agent_type("poet"), None);
    }
}
