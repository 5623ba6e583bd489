//! The initial schema: projects, tasks, plans and the event log with its projections
//! (phases, steps, tool_calls, token_usage).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// A foreign key to `tasks(id)`; rows of a deleted task go with it.
fn fk_task(table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{table}_task"))
        .from(table, "task_id")
        .to("tasks", "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(name: &'static str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut ix = Index::create();
    ix.name(name).table(table).if_not_exists();
    for c in cols {
        ix.col(*c);
    }
    ix.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("projects")
                .col(pk_uuid("id"))
                .col(text("name"))
                .col(string_uniq("slug"))
                .col(text("root_path"))
                .col(json_binary("body"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .col(timestamp_with_time_zone_null("deleted_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("ix_projects_root_path", "projects", &["root_path"])).await?;

        m.create_table(
            Table::create()
                .table("tasks")
                .col(pk_uuid("id"))
                .col(uuid("project_id"))
                .col(text("title"))
                .col(text("description"))
                .col(string("status"))
                .col(double("progress"))
                .col(text_null("current_phase"))
                .col(text("workspace"))
                .col(json_binary("body"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .col(timestamp_with_time_zone_null("started_at"))
                .col(timestamp_with_time_zone_null("completed_at"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_tasks_project")
                        .from("tasks", "project_id")
                        .to("projects", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(index("ix_tasks_status", "tasks", &["status"])).await?;
        m.create_index(index("ix_tasks_created_at", "tasks", &["created_at"])).await?;
        m.create_index(index("ix_tasks_project", "tasks", &["project_id"])).await?;

        m.create_table(
            Table::create()
                .table("plans")
                .col(pk_uuid("id"))
                .col(uuid("task_id"))
                .col(big_integer("version"))
                .col(json_binary("body"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk_task("plans"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("ux_plans_task_version", "plans", &["task_id", "version"]).unique().to_owned()).await?;

        m.create_table(
            Table::create()
                .table("phases")
                .col(uuid("plan_id"))
                .col(text("name"))
                .col(uuid("task_id"))
                .col(big_integer("position"))
                .col(string_null("role"))
                .col(string("status"))
                .col(big_integer("attempt"))
                .col(text_null("summary"))
                .col(timestamp_with_time_zone_null("started_at"))
                .col(timestamp_with_time_zone_null("finished_at"))
                .primary_key(Index::create().col("plan_id").col("name"))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_phases_plan")
                        .from("phases", "plan_id")
                        .to("plans", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(&mut fk_task("phases"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("ix_phases_task", "phases", &["task_id"])).await?;

        m.create_table(
            Table::create()
                .table("steps")
                .col(uuid("task_id"))
                .col(text("phase"))
                .col(big_integer("step"))
                .col(string_null("role"))
                .col(timestamp_with_time_zone("created_at"))
                .primary_key(Index::create().col("task_id").col("phase").col("step"))
                .foreign_key(&mut fk_task("steps"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("tool_calls")
                .col(big_pk_auto("id"))
                .col(uuid("task_id"))
                .col(text("phase"))
                .col(big_integer("step"))
                .col(text("tool"))
                .col(big_integer("call_seq"))
                .col(json_binary("arguments"))
                .col(boolean_null("success"))
                .col(text_null("output"))
                .col(big_integer_null("duration_ms"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("finished_at"))
                .foreign_key(&mut fk_task("tool_calls"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            index("ux_tool_calls_call", "tool_calls", &["task_id", "phase", "step", "tool", "call_seq"])
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("token_usage")
                .col(big_pk_auto("id"))
                .col(uuid("task_id"))
                .col(string("role"))
                .col(text_null("phase"))
                .col(text("model"))
                .col(big_integer("prompt_tokens"))
                .col(big_integer("completion_tokens"))
                .col(big_integer("latency_ms"))
                .col(big_integer_null("ttft_ms"))
                .col(big_integer("event_seq"))
                .col(timestamp_with_time_zone("created_at"))
                .foreign_key(&mut fk_task("token_usage"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("ux_token_usage_event", "token_usage", &["task_id", "event_seq"]).unique().to_owned())
            .await?;

        m.create_table(
            Table::create()
                .table("events")
                .col(uuid("task_id"))
                .col(big_integer("seq"))
                .col(timestamp_with_time_zone("at"))
                .col(string("kind"))
                .col(json_binary("body"))
                .primary_key(Index::create().col("task_id").col("seq"))
                .foreign_key(&mut fk_task("events"))
                .to_owned(),
        )
        .await?;
        // The primary key already orders by (task_id, seq) on both backends; the named index is
        // kept so the schema states the resume query's access path explicitly.
        m.create_index(index("ix_events_task_seq", "events", &["task_id", "seq"])).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Children first, so foreign keys never point at a dropped table.
        for table in ["events", "token_usage", "tool_calls", "steps", "phases", "plans", "tasks", "projects"] {
            m.drop_table(Table::drop().table(table).if_exists().to_owned()).await?;
        }
        Ok(())
    }

    /// SQLite runs DDL transactionally too; without this a crash mid-way would leave half a
    /// schema that the migration table does not record, and the next start would fail on it.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
