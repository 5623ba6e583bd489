use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "phases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub plan_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub task_id: Uuid,
    /// Index in the plan's execution order.
    pub position: i64,
    /// `AgentRole::as_str`; None when the phase's agent_type names no role.
    pub role: Option<String>,
    /// `PhaseStatus::as_str`.
    pub status: String,
    /// 0 until the phase first starts.
    pub attempt: i64,
    pub summary: Option<String>,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
