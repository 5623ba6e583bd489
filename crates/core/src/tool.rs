//! The vocabulary shared by the model layer and the tools: what a tool looks like to a model,
//! what a model asks a tool to do, and how risky that is.

use serde::{Deserialize, Serialize};

/// A tool as a model sees it: an OpenAI-style function with a JSON schema for its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON schema (`{"type":"object","properties":{..},"required":[..]}`).
    pub parameters: serde_json::Value,
}

/// One tool invocation requested by a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Provider-assigned id (OpenAI) or one we generate, so results can be matched to calls.
    pub id: String,
    pub name: String,
    /// Always a JSON object; providers that send a string are parsed before this point.
    pub arguments: serde_json::Value,
}

/// The spec's ToolRiskLevel: how much damage a call can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Read-only operations, no side effects.
    Safe,
    /// Minor modifications, easily reversible.
    Low,
    /// Significant changes, some risk.
    Medium,
    /// System changes, potential data loss.
    High,
    /// Dangerous operations requiring approval.
    Critical,
}

/// The spec's ToolCategory: what a tool works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolCategory {
    FileSystem,
    VersionControl,
    PackageManagement,
    BuildSystem,
    Database,
    CloudServices,
    Security,
    Monitoring,
    Communication,
}

/// Tokens spent by one model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl TokenUsage {
    pub fn total(&self) -> u32 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl std::ops::AddAssign for TokenUsage {
    fn add_assign(&mut self, other: Self) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
    }
}
