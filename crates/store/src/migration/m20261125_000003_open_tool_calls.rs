//! An index of the tool calls still open, for `append_events`: a `ToolResult` completes the
//! latest open call of its (task, phase, step, tool), and a batch looks those up together.
//! The unique index of `tool_calls` cannot serve a lookup of many steps at once well (the step
//! sits between the columns looked up by equality, so planners leave it to a filter and read
//! every call of the task); this one holds only open calls, which are few.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_tool_calls_open")
                .table("tool_calls")
                .if_not_exists()
                .col("task_id")
                .col("phase")
                .col("tool")
                .col("step")
                .and_where(Expr::col("finished_at").is_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_tool_calls_open").table("tool_calls").if_exists().to_owned()).await
    }
}
