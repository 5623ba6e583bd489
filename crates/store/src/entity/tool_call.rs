use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "tool_calls")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub task_id: Uuid,
    pub phase: String,
    /// The attempt of the phase the call was made in.
    pub attempt: i64,
    pub step: i64,
    pub tool: String,
    /// The call's ordinal among the calls of its (task, phase, attempt, step, tool) in one model
    /// turn, from 0. A run of an attempt makes one turn per step, so a redelivered run's call
    /// with the same ordinal is the same call.
    pub call_index: i64,
    /// Seq of the `ToolCall` event that opened the row.
    pub call_seq: i64,
    /// Seq of the latest `ToolCall` event projected onto the row: `call_seq`, or a redelivered
    /// run's. Tells which calls the phase's current model turn has made.
    pub seen_seq: i64,
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
