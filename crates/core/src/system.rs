//! The spec's SystemConfiguration: deployment-wide settings with their ranges.

use serde::{Deserialize, Serialize};

use crate::error::ValidationErrors;
use crate::validate::{Validate, at_least, not_blank};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SystemConfiguration {
    pub environment: String,
    pub debug_mode: bool,
    pub log_level: String,
    pub api_host: String,
    /// 1..=65535.
    pub api_port: u32,
    pub api_version: String,
    #[serde(default)]
    pub cors_origins: Vec<String>,
    pub database_url: String,
    pub database_pool_size: u32,
    pub database_timeout: u32,
    pub redis_url: String,
    pub redis_timeout: u32,
    pub planner_model: String,
    pub coder_model: String,
    pub embeddings_model: String,
    pub vector_db_url: String,
    /// >= 100.
    pub max_context_tokens: u32,
    /// Seconds, >= 60.
    pub knowledge_refresh_interval: u32,
    /// Secret: never logged; `Debug` output of the containing config must not be printed as-is.
    pub jwt_secret: String,
    pub jwt_expiry_hours: u32,
    pub rate_limit_per_hour: u32,
    pub max_concurrent_tasks: u32,
    pub task_timeout_minutes: u32,
    pub agent_pool_size: u32,
    pub metrics_enabled: bool,
    pub tracing_enabled: bool,
    /// Seconds, >= 5.
    pub health_check_interval: u32,
}

impl Validate for SystemConfiguration {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = ValidationErrors::default();
        if !(1..=65535).contains(&self.api_port) {
            errs.push("api_port", format!("must be between 1 and 65535, got {}", self.api_port));
        }
        for (field, value) in [
            ("database_url", &self.database_url),
            ("redis_url", &self.redis_url),
            ("planner_model", &self.planner_model),
            ("coder_model", &self.coder_model),
            ("embeddings_model", &self.embeddings_model),
            ("vector_db_url", &self.vector_db_url),
            ("jwt_secret", &self.jwt_secret),
        ] {
            not_blank(&mut errs, field, value);
        }
        at_least(&mut errs, "database_pool_size", self.database_pool_size, 1);
        at_least(&mut errs, "database_timeout", self.database_timeout, 1);
        at_least(&mut errs, "redis_timeout", self.redis_timeout, 1);
        at_least(&mut errs, "max_context_tokens", self.max_context_tokens, 100);
        at_least(&mut errs, "knowledge_refresh_interval", self.knowledge_refresh_interval, 60);
        at_least(&mut errs, "jwt_expiry_hours", self.jwt_expiry_hours, 1);
        at_least(&mut errs, "rate_limit_per_hour", self.rate_limit_per_hour, 1);
        at_least(&mut errs, "max_concurrent_tasks", self.max_concurrent_tasks, 1);
        at_least(&mut errs, "task_timeout_minutes", self.task_timeout_minutes, 1);
        at_least(&mut errs, "agent_pool_size", self.agent_pool_size, 1);
        at_least(&mut errs, "health_check_interval", self.health_check_interval, 5);
        errs.into_result()
    }
}
