use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tool_calls")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub task_id: Uuid,
    pub phase: String,
    pub step: i64,
    pub tool: String,
    /// Seq of the `ToolCall` event that opened the row.
    pub call_seq: i64,
    #[sea_orm(column_type = "JsonBinary")]
    pub arguments: Json,
    /// None while the call is open (no `ToolResult` yet).
    pub success: Option<bool>,
    pub output: Option<String>,
    pub duration_ms: Option<i64>,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

impl ActiveModelBehavior for ActiveModel {}
