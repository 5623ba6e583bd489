//! `SystemConfiguration`.

use turbo_core::system::SystemConfiguration;

use super::validated;
use crate::Error;
use crate::config::v1 as pb;

impl From<SystemConfiguration> for pb::SystemConfiguration {
    fn from(c: SystemConfiguration) -> Self {
        pb::SystemConfiguration {
            environment: c.environment,
            debug_mode: c.debug_mode,
            log_level: c.log_level,
            api_host: c.api_host,
            api_port: c.api_port,
            api_version: c.api_version,
            cors_origins: c.cors_origins,
            database_url: c.database_url,
            database_pool_size: c.database_pool_size,
            database_timeout: c.database_timeout,
            redis_url: c.redis_url,
            redis_timeout: c.redis_timeout,
            planner_model: c.planner_model,
            coder_model: c.coder_model,
            embeddings_model: c.embeddings_model,
            vector_db_url: c.vector_db_url,
            max_context_tokens: c.max_context_tokens,
            knowledge_refresh_interval: c.knowledge_refresh_interval,
            jwt_secret: c.jwt_secret,
            jwt_expiry_hours: c.jwt_expiry_hours,
            rate_limit_per_hour: c.rate_limit_per_hour,
            max_concurrent_tasks: c.max_concurrent_tasks,
            task_timeout_minutes: c.task_timeout_minutes,
            agent_pool_size: c.agent_pool_size,
            metrics_enabled: c.metrics_enabled,
            tracing_enabled: c.tracing_enabled,
            health_check_interval: c.health_check_interval,
        }
    }
}

impl TryFrom<pb::SystemConfiguration> for SystemConfiguration {
    type Error = Error;

    fn try_from(c: pb::SystemConfiguration) -> Result<Self, Error> {
        validated(SystemConfiguration {
            environment: c.environment,
            debug_mode: c.debug_mode,
            log_level: c.log_level,
            api_host: c.api_host,
            api_port: c.api_port,
            api_version: c.api_version,
            cors_origins: c.cors_origins,
            database_url: c.database_url,
            database_pool_size: c.database_pool_size,
            database_timeout: c.database_timeout,
            redis_url: c.redis_url,
            redis_timeout: c.redis_timeout,
            planner_model: c.planner_model,
            coder_model: c.coder_model,
            embeddings_model: c.embeddings_model,
            vector_db_url: c.vector_db_url,
            max_context_tokens: c.max_context_tokens,
            knowledge_refresh_interval: c.knowledge_refresh_interval,
            jwt_secret: c.jwt_secret,
            jwt_expiry_hours: c.jwt_expiry_hours,
            rate_limit_per_hour: c.rate_limit_per_hour,
            max_concurrent_tasks: c.max_concurrent_tasks,
            task_timeout_minutes: c.task_timeout_minutes,
            agent_pool_size: c.agent_pool_size,
            metrics_enabled: c.metrics_enabled,
            tracing_enabled: c.tracing_enabled,
            health_check_interval: c.health_check_interval,
        })
    }
}
