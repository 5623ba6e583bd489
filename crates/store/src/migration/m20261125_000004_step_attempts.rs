//! Steps and tool calls keyed by the attempt of their phase, so that a phase run again (a new
//! attempt after a restart or a fix round) keeps its own rows, and a redelivered run of the same
//! attempt maps onto the rows it already has instead of duplicating them.
//!
//! - `steps`: an `attempt` column (1 for the rows already stored) in the primary key, which
//!   becomes (task_id, phase, attempt, step). SQLite cannot change a primary key, so there the
//!   table is recreated and its rows copied; Postgres alters it in place.
//! - `tool_calls`: `attempt` (1 for stored rows); `call_index`, the call's ordinal among the calls
//!   of its (task, phase, attempt, step, tool) in one model turn (for stored rows, in seq order),
//!   which replaces `call_seq` in the unique key (`call_seq` stays: it is the seq of the event
//!   that opened the call, shown to users); `seen_seq`, the seq of the latest `ToolCall` event
//!   projected onto the row, which tells `append_events` which calls the current model turn has
//!   already made. The unique index puts `tool` before `step`, so that a lookup of many steps of
//!   one (task, phase, attempt, tool) is a range of it; that lookup now reads the closed calls
//!   too, which leaves `ix_tool_calls_open` without a reader, so it is dropped.

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The foreign key of `steps` (made as `table`) to `tasks(id)`, as the initial schema has it.
fn fk_steps_task(table: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name("fk_steps_task")
        .from(table, "task_id")
        .to("tasks", "id")
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

/// `steps` as `table`, with or without the attempt in its key.
fn steps_table(table: &'static str, with_attempt: bool) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(table).col(uuid("task_id")).col(text("phase"));
    let mut key = Index::create();
    key.col("task_id").col("phase");
    if with_attempt {
        t.col(big_integer("attempt").default(1));
        key.col("attempt");
    }
    key.col("step");
    t.col(big_integer("step"))
        .col(string_null("role"))
        .col(timestamp_with_time_zone("created_at"))
        .primary_key(&mut key)
        .foreign_key(&mut fk_steps_task(table));
    t.to_owned()
}

/// Replaces SQLite's `steps` with `steps` of the other shape, copying the rows over.
async fn recreate_sqlite_steps(m: &SchemaManager<'_>, with_attempt: bool) -> Result<(), DbErr> {
    m.create_table(steps_table("steps_next", with_attempt)).await?;
    let copy = if with_attempt {
        "INSERT INTO steps_next (task_id, phase, attempt, step, role, created_at) \
         SELECT task_id, phase, 1, step, role, created_at FROM steps"
    } else {
        "INSERT INTO steps_next (task_id, phase, step, role, created_at) \
         SELECT task_id, phase, step, role, created_at FROM steps"
    };
    m.get_connection().execute_unprepared(copy).await?;
    m.drop_table(Table::drop().table("steps").to_owned()).await?;
    m.rename_table(Table::rename().table("steps_next", "steps").to_owned()).await
}

fn add_column(table: &'static str, col: ColumnDef) -> TableAlterStatement {
    Table::alter().table(table).add_column(col).to_owned()
}

fn drop_column(table: &'static str, col: &'static str) -> TableAlterStatement {
    Table::alter().table(table).drop_column(col).to_owned()
}

fn drop_index(name: &'static str, table: &'static str) -> IndexDropStatement {
    Index::drop().name(name).table(table).if_exists().to_owned()
}

fn tool_calls_unique(cols: &[&'static str]) -> IndexCreateStatement {
    let mut ix = Index::create();
    ix.name("ux_tool_calls_call").table("tool_calls").unique();
    for c in cols {
        ix.col(*c);
    }
    ix.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        match m.get_database_backend() {
            DbBackend::Sqlite => recreate_sqlite_steps(m, true).await?,
            _ => {
                m.alter_table(add_column("steps", big_integer("attempt").default(1).to_owned())).await?;
                db.execute_unprepared(
                    "ALTER TABLE steps DROP CONSTRAINT steps_pkey, ADD PRIMARY KEY (task_id, phase, attempt, step)",
                )
                .await?;
            }
        }

        // One column per ALTER: SQLite takes no more.
        m.alter_table(add_column("tool_calls", big_integer("attempt").default(1).to_owned())).await?;
        m.alter_table(add_column("tool_calls", big_integer("call_index").default(0).to_owned())).await?;
        m.alter_table(add_column("tool_calls", big_integer("seen_seq").default(0).to_owned())).await?;
        // The calls stored so far are of attempt 1, each seen once; their ordinals come from the
        // old unique key, in which call_seq tells calls of one (task, phase, step, tool) apart.
        db.execute_unprepared(
            "UPDATE tool_calls SET seen_seq = call_seq, call_index = (\
               SELECT COUNT(*) FROM tool_calls AS earlier \
               WHERE earlier.task_id = tool_calls.task_id AND earlier.phase = tool_calls.phase \
               AND earlier.step = tool_calls.step AND earlier.tool = tool_calls.tool \
               AND earlier.call_seq < tool_calls.call_seq)",
        )
        .await?;
        m.drop_index(drop_index("ux_tool_calls_call", "tool_calls")).await?;
        m.create_index(tool_calls_unique(&["task_id", "phase", "attempt", "tool", "step", "call_index"])).await?;
        m.drop_index(drop_index("ix_tool_calls_open", "tool_calls")).await
    }

    /// Back to one row per (task, phase, step): of a step run in several attempts, the first
    /// attempt's row stays; tool calls keep every row, told apart by call_seq again.
    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        m.drop_index(drop_index("ux_tool_calls_call", "tool_calls")).await?;
        m.create_index(tool_calls_unique(&["task_id", "phase", "step", "tool", "call_seq"])).await?;
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
        .await?;
        for col in ["seen_seq", "call_index", "attempt"] {
            m.alter_table(drop_column("tool_calls", col)).await?;
        }

        db.execute_unprepared(
            "DELETE FROM steps WHERE attempt > (\
               SELECT MIN(first.attempt) FROM steps AS first \
               WHERE first.task_id = steps.task_id AND first.phase = steps.phase AND first.step = steps.step)",
        )
        .await?;
        match m.get_database_backend() {
            DbBackend::Sqlite => recreate_sqlite_steps(m, false).await,
            _ => {
                db.execute_unprepared(
                    "ALTER TABLE steps DROP CONSTRAINT steps_pkey, ADD PRIMARY KEY (task_id, phase, step)",
                )
                .await?;
                m.alter_table(drop_column("steps", "attempt")).await
            }
        }
    }

    /// All of it or none: a half-migrated `steps` (SQLite's copy made, the old table not yet
    /// replaced) would not be recorded, and the next start would trip over it.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

#[cfg(test)]
mod tests {
    //! A database at the previous migration, with steps and tool calls stored, brought up to
    //! date; on SQLite (a temp file) and on Postgres (a fresh database, as `tests/store.rs`
    //! makes it: TURBO_TEST_POSTGRES_URL, TURBO_TEST_SKIP_POSTGRES=1).

    use std::time::Duration;

    use chrono::{DateTime, TimeZone, Utc};
    use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryOrder};
    use sea_orm_migration::MigratorTrait;
    use sea_orm_migration::prelude::*;
    use serde_json::json;
    use uuid::Uuid;

    use turbo_core::agent::AgentRole;
    use turbo_core::event::{EventKind, TaskEvent};
    use turbo_core::ids::{PlanId, TaskId};
    use turbo_core::plan::{ExecutionPhase, ExecutionPlan, ResourceRequirements};
    use turbo_core::project::{Language, ProjectMetadata, ProjectType};
    use turbo_core::task::DevelopmentTask;

    use crate::Store;
    use crate::entity::tool_call;
    use crate::migration::Migrator;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_764_000_000 + secs, 0).single().expect("valid instant")
    }

    fn ev(task_id: TaskId, seq: u64, kind: EventKind) -> TaskEvent {
        TaskEvent { task_id, seq, at: at(seq as i64), kind }
    }

    fn tool_call(step: u32, tool: &str) -> EventKind {
        EventKind::ToolCall { phase: "code".into(), step, tool: tool.into(), arguments: json!({}) }
    }

    fn model_call() -> EventKind {
        EventKind::ModelCall {
            role: AgentRole::Coder,
            phase: Some("code".into()),
            model: "m".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            latency_ms: 1,
            ttft_ms: None,
            tokens_per_second: None,
        }
    }

    /// A step row and tool call rows as the previous schema has them.
    async fn insert_old_rows(db: &DatabaseConnection, task: Uuid) {
        for step in [1i64, 2] {
            let row = Query::insert()
                .into_table("steps")
                .columns(["task_id", "phase", "step", "role", "created_at"])
                .values_panic([task.into(), "code".into(), step.into(), "coder".into(), at(step).into()])
                .to_owned();
            db.execute(&row).await.expect("insert an old step");
        }
        // A read in step 1, two greps in step 2, the second still open.
        for (step, tool, call_seq, open) in
            [(1i64, "read_file", 3i64, false), (2, "grep", 5, false), (2, "grep", 6, true)]
        {
            let finished_at: Option<DateTime<Utc>> = (!open).then(|| at(call_seq + 1));
            let row = Query::insert()
                .into_table("tool_calls")
                .columns([
                    "task_id",
                    "phase",
                    "step",
                    "tool",
                    "call_seq",
                    "arguments",
                    "success",
                    "output",
                    "duration_ms",
                    "created_at",
                    "finished_at",
                ])
                .values_panic([
                    task.into(),
                    "code".into(),
                    step.into(),
                    tool.into(),
                    call_seq.into(),
                    json!({}).into(),
                    (!open).then_some(true).into(),
                    (!open).then(|| "done".to_string()).into(),
                    (!open).then_some(1i64).into(),
                    at(call_seq).into(),
                    finished_at.into(),
                ])
                .to_owned();
            db.execute(&row).await.expect("insert an old tool call");
        }
    }

    /// (call_seq, attempt, call_index, seen_seq, open) of each stored call, by call_seq.
    async fn calls(db: &DatabaseConnection) -> Vec<(i64, i64, i64, i64, bool)> {
        let rows =
            tool_call::Entity::find().order_by_asc(tool_call::Column::CallSeq).all(db).await.expect("read calls");
        rows.into_iter().map(|r| (r.call_seq, r.attempt, r.call_index, r.seen_seq, r.finished_at.is_none())).collect()
    }

    async fn migrates_stored_rows(url: String) {
        let db = Database::connect(url.as_str()).await.expect("connect");
        Migrator::up(&db, Some(3)).await.expect("migrate to the previous schema");
        // The tables of projects, tasks and plans are as before: the store writes them.
        let store = Store { db: db.clone() };
        let project = ProjectMetadata::new("App", "app", ProjectType::ApiService, vec![Language::Rust], "/srv/app");
        store.upsert_project(&project).await.expect("project");
        let task = DevelopmentTask::from_request(project.id, "add a /health endpoint");
        store.insert_task(&task, "/w").await.expect("task");
        let plan = ExecutionPlan {
            plan_id: PlanId::new(),
            task_id: task.id,
            version: 1,
            phases: vec![ExecutionPhase::new("code", "write it", "coder")],
            total_estimated_duration: Duration::from_secs(60),
            confidence_score: 0.9,
            resource_requirements: ResourceRequirements::default(),
            risk_factors: Vec::new(),
            mitigation_strategies: Vec::new(),
            required_knowledge: Vec::new(),
            context_sources: Vec::new(),
            generated_by: "planner".into(),
            generated_at: at(0),
            last_updated: at(0),
        };
        store.save_plan(&plan).await.expect("plan");
        insert_old_rows(&db, task.id.0).await;

        Migrator::up(&db, None).await.expect("migrate");
        assert_eq!(Migrator::get_pending_migrations(&db).await.unwrap().len(), 0);
        let steps: Vec<_> = store.steps(task.id).await.unwrap().into_iter().map(|s| (s.attempt, s.step)).collect();
        assert_eq!(steps, [(1, 1), (1, 2)], "stored steps are of attempt 1");
        assert_eq!(
            calls(&db).await,
            [(3, 1, 0, 3, false), (5, 1, 0, 5, false), (6, 1, 1, 6, true)],
            "stored calls are of attempt 1, numbered per step and tool, seen once"
        );

        // A redelivered run of step 2 finds the stored calls; attempt 2 gets rows of its own.
        let id = task.id;
        store
            .append_events(&[
                ev(id, 10, model_call()),
                ev(id, 11, tool_call(2, "grep")),
                ev(id, 12, tool_call(2, "grep")),
                ev(
                    id,
                    13,
                    EventKind::ToolResult {
                        phase: "code".into(),
                        step: 2,
                        tool: "grep".into(),
                        success: true,
                        output: "found".into(),
                        duration_ms: 1,
                    },
                ),
                ev(id, 14, EventKind::PhaseStarted { phase: "code".into(), role: AgentRole::Coder, attempt: 2 }),
                ev(id, 15, model_call()),
                ev(id, 16, tool_call(1, "read_file")),
            ])
            .await
            .unwrap();
        let steps: Vec<_> = store.steps(id).await.unwrap().into_iter().map(|s| (s.attempt, s.step)).collect();
        assert_eq!(steps, [(1, 1), (1, 2), (2, 1)]);
        assert_eq!(
            calls(&db).await,
            [(3, 1, 0, 3, false), (5, 1, 0, 11, false), (6, 1, 1, 12, false), (16, 2, 0, 16, true)]
        );

        // Down keeps the first attempt's step and every call; up again numbers them anew.
        // Down to before this migration: the ones after it first.
        let after = Migrator::migrations().len() - 4;
        Migrator::down(&db, Some(<u32 as TryFrom<usize>>::try_from(after + 1).unwrap())).await.expect("migrate down");
        Migrator::up(&db, None).await.expect("migrate up again");
        let steps: Vec<_> = store.steps(id).await.unwrap().into_iter().map(|s| (s.attempt, s.step)).collect();
        assert_eq!(steps, [(1, 1), (1, 2)]);
        assert_eq!(
            calls(&db).await,
            [(3, 1, 0, 3, false), (5, 1, 0, 5, false), (6, 1, 1, 6, false), (16, 1, 1, 16, true)]
        );
        db.close().await.expect("close");
    }

    #[tokio::test]
    async fn stored_steps_and_calls_become_attempt_1_on_sqlite() {
        let dir = tempfile::tempdir().expect("temp dir");
        migrates_stored_rows(format!("sqlite://{}?mode=rwc", dir.path().join("turbo.db").display())).await;
    }

    #[tokio::test]
    async fn stored_steps_and_calls_become_attempt_1_on_postgres() {
        if std::env::var("TURBO_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("TURBO_TEST_SKIP_POSTGRES=1: Postgres scenario skipped");
            return;
        }
        let server = std::env::var("TURBO_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let name = format!("turbo_store_{}", Uuid::new_v4().simple());
        let url = crate::create_postgres_database(&server, &name).await.unwrap_or_else(|e| {
            panic!("{e}; start Postgres, point TURBO_TEST_POSTGRES_URL at one, or set TURBO_TEST_SKIP_POSTGRES=1")
        });
        // A spawned task turns a panic into a JoinError, so the database is dropped either way.
        let outcome = tokio::spawn(migrates_stored_rows(url)).await;
        crate::drop_postgres_database(&server, &name).await.expect("drop the test database");
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}
